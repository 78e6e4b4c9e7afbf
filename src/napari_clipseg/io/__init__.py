"""Files: the provenance record, label and mask writers, one input's output folder, COCO, and dataset inputs."""

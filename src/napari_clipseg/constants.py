"""Numbers that define CLIPSeg's input frame and our defaults (data only)."""

#: Side of the square model input in pixels (CLIPSeg was trained at 352x352).
INPUT_SIZE = 352

#: CLIPSeg normalises with ImageNet statistics, not CLIP's (reference §1.6, timojl/clipseg#18).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: 0-based indices of the vision blocks whose outputs feed the decoder (HF hidden_states[i + 1]).
EXTRACT_LAYERS = (3, 6, 9)

#: Weights used when no source is given.
DEFAULT_HUB_ID = "CIDAS/clipseg-rd64-refined"
HUB_IDS = ("CIDAS/clipseg-rd64-refined", "CIDAS/clipseg-rd64", "CIDAS/clipseg-rd16")

#: The open_clip ViT-B/16 'openai' backbone needed by the original decoder-only checkpoints.
OPENAI_BACKBONE_HUB_ID = "timm/vit_base_patch16_clip_224.openai"
OPENAI_BACKBONE_FILE = "open_clip_model.safetensors"

#: Probability above which a pixel belongs to a prompt. The paper reports its best PhraseCut
#: mIoU at 0.3; 0.4 trades a little recall for cleaner masks on out-of-domain images, which is
#: what annotators correct more easily (and matches the DESIGN.md example).
DEFAULT_THRESHOLD = 0.4

#: Percentiles used to stretch non-uint8 intensities to [0, 1] (microscopy convention).
DEFAULT_PERCENTILES = (1.0, 99.8)

#: Length of the CLIP text context.
CONTEXT_LENGTH = 77

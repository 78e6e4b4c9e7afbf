"""A run: options, the predictor, prompts, transforms, tiling, post-processing, the pipeline, and the
model spec (which model, how it runs) that every entry point loads from."""

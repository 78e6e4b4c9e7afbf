"""Numbers that define CLIPSeg's input frame, and the policy defaults of this package (data only).

Every default that a user sees (help texts, tooltips, docs) is read from here, so there is one
definition of each.
"""

# --- what CLIPSeg is ------------------------------------------------------------------------------

#: Side of the square model input in pixels (CLIPSeg was trained at 352x352).
INPUT_SIZE = 352

#: CLIPSeg normalises with ImageNet statistics, not CLIP's (reference §1.6, timojl/clipseg#18).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: 0-based indices of the vision blocks whose outputs feed the decoder (HF hidden_states[i + 1]).
EXTRACT_LAYERS = (3, 6, 9)

#: Length of the CLIP text context.
CONTEXT_LENGTH = 77

#: Weights used when no source is given.
DEFAULT_HUB_ID = "CIDAS/clipseg-rd64-refined"

#: The open_clip ViT-B/16 'openai' backbone needed by the original decoder-only checkpoints.
OPENAI_BACKBONE_HUB_ID = "timm/vit_base_patch16_clip_224.openai"
OPENAI_BACKBONE_FILE = "open_clip_model.safetensors"

# --- policy defaults ------------------------------------------------------------------------------

#: Probability above which a pixel belongs to a prompt. The paper reports its best PhraseCut
#: mIoU at 0.3; 0.4 trades a little recall for cleaner masks on out-of-domain images, which is
#: what annotators correct more easily (and matches the DESIGN.md example).
DEFAULT_THRESHOLD = 0.4

#: Percentiles used to stretch non-uint8 intensities to [0, 1] (microscopy convention).
DEFAULT_PERCENTILES = (1.0, 99.8)

#: How a plane is read: resized whole, native-resolution tiles, the average of both, or by size.
MODES = ("auto", "whole", "tiled", "both")

#: ``"auto"`` reads a plane whole up to this many pixels on its longer side, and "both" above.
AUTO_WHOLE_MAX_SIDE = 2 * INPUT_SIZE

#: Default overlap between neighbouring tiles: 1/8 of the tile (44 px at 352).
DEFAULT_OVERLAP = INPUT_SIZE // 8

#: Planes or tiles sent through the image tower together.
DEFAULT_BATCH_SIZE = 4

#: Prompts decoded together; bounds memory for long prompt lists.
DECODE_BATCH = 16

#: Memory for cached image features (planes, tiles) per predictor.
FEATURE_CACHE_BYTES = 1 << 30

#: Text embeddings cached per predictor (one vector per prompt string).
TEXT_CACHE_SIZE = 4096

#: Precision names (and aliases) -> canonical name; "float32" is the exact path.
PRECISIONS = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "int8": "int8",
}

#: The files of a fine-tuned decoder folder (its weights, and what it was made for).
DECODER_WEIGHTS_NAME, DECODER_META_NAME = "decoder.safetensors", "decoder.json"

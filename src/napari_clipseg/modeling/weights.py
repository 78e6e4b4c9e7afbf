"""Finding, reading and checking weights, and building a loaded :class:`ClipSeg`.

Sources (:func:`load_exact`):

1. a Hugging Face hub id (``CIDAS/clipseg-rd64-refined``, ``-rd64``, ``-rd16``), fetched once
   through huggingface_hub's cache (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` works
   from that cache alone);
2. a directory written by transformers' ``save_pretrained`` (``config.json`` plus
   ``model.safetensors``, ``pytorch_model.bin`` or a sharded index), or by :func:`save_pretrained`;
3. an original decoder checkpoint (``rd64-uni-refined.pth``, ``rd64-uni.pth``, ``rd16-uni.pth``)
   plus the CLIP ViT-B/16 backbone: open_clip's 'openai' weights from the hub, or a local
   open_clip / OpenAI state-dict file passed as ``backbone``.

Nothing pickled is executed: safetensors, or ``torch.load(weights_only=True)``. Keys and shapes
are checked against the architecture exactly, and every failure says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..atomic import atomic_write
from ..constants import DEFAULT_HUB_ID, OPENAI_BACKBONE_FILE, OPENAI_BACKBONE_HUB_ID
from ..errors import (
    ArchitectureMismatchError,
    CorruptWeightsError,
    UnsafeWeightsError,
    WeightsError,
    WeightsUnavailableError,
    check_stop,
)
from ..paths import is_local_path, missing_path_message
from . import keymap
from .clipseg import ClipSeg
from .config import ClipSegConfig, from_hf_config, get_config, infer_original_config, to_hf_config
from .hub import HF_WEIGHT_FILES, fetch_file, fetch_hub_model
from .info import ModelInfo, WeightsInfo
from .runtime import resolve_device
from .tensor_files import check_finite, read_state_dict

logger = logging.getLogger(__name__)
__all__ = [
    "ArchitectureMismatchError",
    "CorruptWeightsError",
    "UnsafeWeightsError",
    "WeightsError",
    "WeightsInfo",
    "WeightsUnavailableError",
    "build_model",
    "load_exact",
    "read_state_dict",
    "save_pretrained",
]

_HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _shard_files(directory: Path, index: Path) -> list[str]:
    """The shard files named by a sharded checkpoint's index, confined to ``directory``."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CorruptWeightsError(
            f"{index} is not a valid shard index ({type(e).__name__}: {e}); it needs a 'weight_map' "
            "of parameter names to shard files: write the checkpoint again with save_pretrained"
        ) from None
    root = directory.resolve()
    files = []
    for name in names:
        shard = (directory / str(name)).resolve()
        if not isinstance(name, str) or shard.parent != root:
            raise UnsafeWeightsError(
                f"{index} names the shard {name!r} outside its folder {directory}; refusing to read it "
                "(shards must be files in the checkpoint's own folder)"
            )
        files.append(str(shard))
    return files


def _hf_directory_files(directory: Path) -> list[str]:
    for index in _HF_INDEX_FILES:
        if (directory / index).is_file():
            return _shard_files(directory, directory / index)
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return [str(directory / name)]
    raise WeightsUnavailableError(
        f"{directory} has no weights: expected one of {', '.join(HF_WEIGHT_FILES + _HF_INDEX_FILES)}"
    )


def _read_hf_config(path: Path) -> ClipSegConfig:
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} not found: a transformers checkpoint needs its config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptWeightsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CorruptWeightsError(f"{path} must hold a JSON object (a CLIPSeg config); it holds a {type(raw).__name__}")
    if raw.get("model_type", "clipseg") != "clipseg":
        raise ArchitectureMismatchError(f"{path} describes a '{raw['model_type']}' model, not CLIPSeg")
    try:
        return from_hf_config(raw)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
        raise ArchitectureMismatchError(f"{path} is not a usable CLIPSeg config: {e}") from None


def _read_hf_weights(
    files: list[str], config: ClipSegConfig, stop: threading.Event | None = None
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(read_state_dict(f, stop))
    return _hf_state_to_ours(state, config)


def _hf_state_to_ours(state: dict[str, torch.Tensor], config: ClipSegConfig) -> dict[str, torch.Tensor]:
    try:
        return keymap.hf_to_ours(state, config)
    except keymap.KeyMismatchError as e:
        raise ArchitectureMismatchError(f"the checkpoint does not match its config.json: {e}") from None


def _read_original(
    raw: dict[str, torch.Tensor], path: Path, backbone: str | os.PathLike | None, revision: str | None, tqdm_class: Any
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict from an original checkpoint ``raw`` (read from ``path``), plus its backbone."""
    try:
        state = keymap.original_decoder_to_ours(raw)
    except keymap.KeyMismatchError as e:
        raise ArchitectureMismatchError(
            f"{path} is not a CLIPSeg checkpoint: it has neither a CLIPSeg decoder (keys {', '.join(e.missing)}) nor "
            f"transformers' CLIPSeg keys; it holds {', '.join(e.unexpected) or 'no tensors'}"
        ) from None
    files = [str(path)]
    if not any(k.startswith("clip.") for k in state):
        if backbone is None:
            backbone = fetch_file(OPENAI_BACKBONE_HUB_ID, OPENAI_BACKBONE_FILE, revision, tqdm_class)
        state.update(keymap.open_clip_to_ours(read_state_dict(backbone)))
        files.append(str(backbone))
    return state, files


def _is_hf_state(state_keys: Any) -> bool:
    return any(k.startswith(("clip.vision_model.", "decoder.layers.")) for k in state_keys)


def _assemble(
    config: ClipSegConfig, state: dict[str, torch.Tensor], info: ModelInfo, stop: threading.Event | None = None
) -> ClipSeg:
    with torch.device("meta"):
        model = ClipSeg(config, info)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or mismatched:
        error = keymap.KeyMismatchError(missing, unexpected, mismatched)
        raise ArchitectureMismatchError(
            f"{info.weights.source} does not match the CLIPSeg architecture ({error}). Check that the "
            "checkpoint and the config (or backbone) belong together."
        )
    check_finite(state, info.weights.source, stop)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.clip.requires_grad_(False)
    return model.eval()


def _read_source(
    source: str | os.PathLike,
    cfg: ClipSegConfig | None,
    backbone: str | os.PathLike | None,
    revision: str | None,
    tqdm_class: Any,
    stop: threading.Event | None = None,
) -> tuple[ClipSegConfig, dict[str, torch.Tensor], WeightsInfo]:
    """Config, state dict (our keys) and provenance of a weights source (see :func:`load_model`)."""
    path = Path(source).expanduser()
    if path.is_dir():
        model_config = cfg or _read_hf_config(path / "config.json")
        files = _hf_directory_files(path)
        state = _read_hf_weights(files, model_config, stop)
        return model_config, state, WeightsInfo(str(path), "hf-directory", tuple(files))
    if path.is_file():
        raw = read_state_dict(path, stop)
        if _is_hf_state(raw):
            model_config = cfg or _read_hf_config(path.parent / "config.json")
            return model_config, _hf_state_to_ours(raw, model_config), WeightsInfo(str(path), "hf-file", (str(path),))
        state, files = _read_original(raw, path, backbone, revision, tqdm_class)
        return cfg or infer_original_config(state), state, WeightsInfo(str(path), "original", tuple(files))
    if not is_local_path(source):
        config_path, files = fetch_hub_model(str(source), revision, tqdm_class)
        model_config = cfg or _read_hf_config(config_path)
        state = _read_hf_weights(files, model_config, stop)
        return model_config, state, WeightsInfo(str(source), "hub", tuple(files))
    raise WeightsUnavailableError(missing_path_message(path, "the model") or f"cannot read the model {path}")


def load_exact(
    source: str | os.PathLike = DEFAULT_HUB_ID,
    *,
    device: str | torch.device = "cpu",
    backbone: str | os.PathLike | None = None,
    config: str | ClipSegConfig | None = None,
    revision: str | None = None,
    tqdm_class: Any = None,
    stop: threading.Event | None = None,
    decoder: str | os.PathLike | None = None,
) -> ClipSeg:
    """Load CLIPSeg weights from a hub id, a transformers directory, or an original checkpoint,
    as the exact float32 model. Loading never runs the model: choosing a faster precision is its
    own step (:func:`napari_clipseg.load_model` and ``ModelSpec.load`` do both).

    Args:
        source: Hub id (default ``CIDAS/clipseg-rd64-refined``), a directory written by
            ``save_pretrained``, an original ``rd*-uni*.pth`` decoder checkpoint, or a single
            transformers weights file with its ``config.json`` beside it.
        device: ``"cpu"`` (default), ``"cuda"``, ``"mps"`` or ``"auto"`` (best available).
        backbone: For original decoder checkpoints: a local open_clip/OpenAI ViT-B/16 state dict
            (``.safetensors``, ``.bin``, ``.pt``). ``None`` fetches open_clip's 'openai' weights.
        config: For original checkpoints whose sizes cannot be read from shapes: a config name
            (see ``napari_clipseg.modeling.config.CONFIGS``) or a :class:`ClipSegConfig`.
        revision: Hub revision (branch, tag or commit) for hub sources.
        tqdm_class: Progress-bar class for downloads (huggingface_hub's default when None).
        stop: Set it from another thread to end the load early (RunCancelled), e.g. from a GUI's
            Cancel button.
        decoder: A fine-tuned decoder folder (``napari-clipseg finetune``) to apply; it must have
            been made for these weights.

    Returns:
        The model in eval mode on ``device`` at precision float32, with ``info`` describing the weights.

    Raises:
        WeightsUnavailableError, CorruptWeightsError, UnsafeWeightsError, ArchitectureMismatchError,
        DecoderMismatchError (a decoder for other weights).
    """
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"the model source must be a hub id, a folder or a file path (e.g. {DEFAULT_HUB_ID!r}); "
            f"got {type(source).__name__}"
        )
    torch_device = resolve_device(device)
    cfg = get_config(config) if isinstance(config, str) else config
    model_config, state, info = _read_source(source, cfg, backbone, revision, tqdm_class, stop)
    check_stop(stop)
    model = _assemble(model_config, state, ModelInfo(info), stop).to(torch_device)
    check_stop(stop)
    if decoder is not None:
        from .decoder_files import apply_decoder

        apply_decoder(model, decoder)
    logger.info("loaded CLIPSeg weights from %s (%s) on %s", info.source, info.kind, torch_device)
    return model


def build_model(
    config: str | ClipSegConfig = "rd64-refined",
    *,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> ClipSeg:
    """A randomly initialised model (tests, benchmarks, training from scratch); eval mode."""
    cfg = get_config(config) if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    name = config if isinstance(config, str) else "custom"
    info = ModelInfo(WeightsInfo(f"random:{name}", "random", seed=seed))
    return ClipSeg(cfg, info).eval().to(resolve_device(device))


def save_pretrained(model: ClipSeg, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` in transformers' format (``config.json`` + ``model.safetensors``).

    The result loads with :func:`load_model` and with
    ``transformers.CLIPSegForImageSegmentation.from_pretrained``. Files are written to a temporary
    name and renamed, so an interrupted save never leaves a half-written checkpoint.

    Raises:
        FileExistsError: the directory already holds a checkpoint and ``overwrite`` is False.
    """
    directory = Path(directory)
    targets = [directory / "config.json", directory / "model.safetensors"]
    if not overwrite and any(t.exists() for t in targets):
        raise FileExistsError(f"{directory} already contains a checkpoint; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in keymap.ours_to_hf(model.state_dict(), model.config).items()}
    hf_config = {**to_hf_config(model.config), "architectures": ["CLIPSegForImageSegmentation"]}
    atomic_write(targets[1], lambda p: safetensors.torch.save_file(state, p, metadata={"format": "pt"}), overwrite)
    atomic_write(targets[0], lambda p: Path(p).write_text(json.dumps(hf_config, indent=2)), overwrite)
    return directory

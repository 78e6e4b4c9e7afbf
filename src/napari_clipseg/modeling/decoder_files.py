"""Fine-tuned decoders as small artefacts: save, read, apply to the base weights they were made for.

A decoder folder holds ``decoder.safetensors`` (the decoder's weights, ~4.5 MB for rd64) and
``decoder.json``: the base model it belongs to (source, kind, weights SHA-256 or seed), the
classes, the training settings and the held-out metrics. Applying it to other base weights is
refused: its FiLM and blocks learned on that backbone's features.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import json_writer, write_together
from ..constants import DECODER_META_NAME, DECODER_WEIGHTS_NAME
from ..errors import CorruptWeightsError, DecoderMismatchError

SCHEMA = "napari-clipseg.decoder"
WEIGHTS_NAME, META_NAME = DECODER_WEIGHTS_NAME, DECODER_META_NAME


#: What to do with a damaged decoder file: decoders are made by fine-tuning, never downloaded.
DAMAGED_DECODER = (
    "a decoder is made by fine-tuning, not downloaded: fine-tune it again from the corrected masks, or use "
    "another decoder folder (a project: 'napari-clipseg project decoder FOLDER' lists its decoders)"
)


def decoder_threshold(model: Any) -> float | None:
    """The threshold the model's fine-tuned decoder chose on its held-out images (None: no decoder,
    or one saved before decoders chose their threshold)."""
    threshold = (model.info.decoder or {}).get("threshold")
    return float(threshold) if threshold is not None else None


def base_identity(model: Any) -> dict[str, Any]:
    """What identifies a model's base weights: source, kind, SHA-256 (random weights: seed) and config."""
    weights = model.info.weights
    return {
        "source": weights.source,
        "kind": weights.kind,
        "sha256": weights.sha256,
        "seed": weights.seed,
        "config": {"reduce_dim": model.config.reduce_dim, "extract_layers": list(model.config.extract_layers)},
    }


def _same_base(made_for: dict[str, Any], model: Any) -> bool:
    here = base_identity(model)
    if made_for.get("config") != here["config"]:
        return False
    if made_for.get("sha256") or here["sha256"]:
        return made_for.get("sha256") == here["sha256"]
    return (made_for.get("source"), made_for.get("seed")) == (here["source"], here["seed"])


def save_decoder(result: Any, folder: str | os.PathLike, *, overwrite: bool = False, durable: bool = False) -> Path:
    """Write a :class:`~napari_clipseg.learning.train.FineTuneResult` as a decoder folder (both
    files or neither; ``durable``: flushed to the disk, as a project's decoders are).

    Raises:
        ValueError: the result was refused (not better on its held-out images): it is never saved.
    """
    import safetensors.torch

    if not getattr(result, "accepted", True):
        raise ValueError(f"this decoder was refused ({result.message}) and is not saved; train with force=True")
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in result.state.items()}
    meta = {"schema": SCHEMA, "schema_version": 1, **result.metadata()}
    files = [
        (folder / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_file(state, tmp, metadata={"format": "pt"})),
        (folder / META_NAME, json_writer(meta)),
    ]
    write_together(files, overwrite=overwrite, durable=durable)
    return folder


def read_decoder(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and the description of a decoder folder.

    Both files are checked as the base weights are: the weights through ``read_state_dict`` (a
    damaged, truncated or pickled file is refused, naming it) and for NaN or infinity.

    Raises:
        FileNotFoundError: not a decoder folder.
        DecoderMismatchError: the description is not a napari-clipseg decoder's.
        CorruptWeightsError, UnsafeWeightsError: the weights file is damaged, holds NaN, or is a pickle.
    """
    from .tensor_files import check_finite, read_state_dict

    folder = Path(folder)
    if not (folder / META_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder} is not a fine-tuned decoder (it needs {WEIGHTS_NAME} and {META_NAME})")
    try:
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptWeightsError(
            f"{folder / META_NAME} is not valid JSON ({e}): the decoder folder is damaged"
        ) from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise DecoderMismatchError(f"{folder / META_NAME} is not a napari-clipseg decoder description")
    state = read_state_dict(folder / WEIGHTS_NAME, remedy=DAMAGED_DECODER)
    check_finite(state, str(folder / WEIGHTS_NAME))
    return state, meta


def apply_decoder(model: Any, folder: str | os.PathLike) -> Any:
    """Load the decoder in ``folder`` into ``model`` (in place) and record it in ``model.info``.

    Raises:
        DecoderMismatchError: the decoder was made for other base weights or another architecture.
    """
    from .info import file_sha256

    state, meta = read_decoder(folder)
    made_for = meta.get("base") if isinstance(meta.get("base"), dict) else {}
    if not _same_base(made_for, model):
        raise DecoderMismatchError(
            f"the decoder in {folder} was made for other base weights ({made_for.get('source')}, "
            f"sha256 {str(made_for.get('sha256'))[:12]}…); load that model, or fine-tune one for "
            f"{model.info.weights.source}"
        )
    name = Path(folder).resolve().name
    decoder = {"name": name, "path": str(Path(folder)), "sha256": file_sha256(str(Path(folder) / WEIGHTS_NAME))}
    return _install(model, state, {**decoder, "classes": meta.get("classes", []), "threshold": meta.get("threshold")})


def use_result(model: Any, result: Any, name: str = "fine-tuned") -> Any:
    """Apply a training result to ``model`` without saving it first (notebooks, benchmarks)."""
    described = {"name": name, "path": None, "classes": result.classes, "threshold": result.threshold}
    return _install(model, result.state, described)


def _install(model: Any, state: dict[str, torch.Tensor], decoder: dict[str, Any]) -> Any:
    """Load decoder weights into ``model`` (in place) and name the decoder in ``model.info``."""
    import dataclasses

    expected = model.decoder.state_dict()
    wrong = sorted(set(expected) ^ set(state)) or [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        where = decoder.get("path") or decoder.get("name")
        raise DecoderMismatchError(
            f"the decoder {where} does not fit this model's decoder ({', '.join(wrong[:3])}): it was made for "
            "another architecture"
        )
    model.decoder.load_state_dict({k: v.to(model.device) for k, v in state.items()})
    model.info = dataclasses.replace(model.info, decoder=decoder)
    return model

"""Reading tensor files safely: safetensors tensor by tensor, torch files without running
pickled code, every failure named by file, and NaN or infinity refused by tensor name. Base
weights and fine-tuned decoders are read through here alike."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import safetensors
import torch

from ..errors import CorruptWeightsError, RunCancelled, UnsafeWeightsError, WeightsUnavailableError, check_stop

#: What to do with a damaged file of downloaded weights.
DOWNLOADED = "delete it and download it again (for hub models, delete the model's folder in the Hugging Face cache)"


def read_state_dict(
    path: str | os.PathLike, stop: threading.Event | None = None, *, remedy: str = DOWNLOADED
) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, without running pickled code.

    ``stop``, when set (from another thread), ends the read between two tensors (RunCancelled).
    ``remedy``: what a damaged file's message tells the user to do (weights are downloaded again;
    a fine-tuned decoder is made again).

    Raises:
        WeightsUnavailableError: the file does not exist.
        CorruptWeightsError: unreadable, truncated, or not a dict of tensors.
        UnsafeWeightsError: a pickle that needs code to load (never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path}")
    if not os.access(path, os.R_OK):
        raise WeightsUnavailableError(f"no permission to read the weights file {path}: check its owner and mode")
    try:
        if path.suffix == ".safetensors":
            # Tensor by tensor, not load_file: that holds the GIL for the whole file (~200 ms for
            # ViT-B/16), freezing napari's event loop while a worker thread loads weights.
            with safetensors.safe_open(str(path), framework="pt") as f:
                state = {}
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    check_stop(stop)
                    state[key] = f.get_tensor(key)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise UnsafeWeightsError(
                f"{path} contains pickled Python objects that would run code when loaded; refusing. "
                "Use a safetensors file or a plain state dict saved with torch.save(model.state_dict())."
            ) from None
        raise CorruptWeightsError(_corrupt_message(path, e, remedy)) from None
    except PermissionError:
        raise WeightsUnavailableError(f"no permission to read the weights file {path}") from None
    except RunCancelled:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors/torch raise many types for damaged files
        raise CorruptWeightsError(_corrupt_message(path, e, remedy)) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptWeightsError(f"{path} does not contain a state dict of tensors")
    return state


def _corrupt_message(path: Path, error: Exception, remedy: str) -> str:
    return (
        f"cannot read weights file {path} ({type(error).__name__}: {str(error)[:200]}). It is probably "
        f"truncated or damaged: {remedy}."
    )


def check_finite(state: dict[str, torch.Tensor], source: str, stop: threading.Event | None = None) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor (they would give NaN masks)."""
    for key, tensor in state.items():
        check_stop(stop)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CorruptWeightsError(
                f"{source}: tensor {key} holds {bad} NaN or infinite value(s); these weights are damaged "
                "(a diverged training run or a broken conversion): use another copy"
            )

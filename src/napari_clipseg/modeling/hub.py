"""Fetching files from the Hugging Face hub through huggingface_hub's cache, with clear errors.

``HF_HOME`` / ``HF_HUB_CACHE`` choose the cache; with ``HF_HUB_OFFLINE=1`` only the cache is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..constants import DEFAULT_HUB_ID
from ..errors import WeightsUnavailableError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _download(repo_id: str, filename: str, revision: str | None, tqdm_class: Any) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, revision=revision, tqdm_class=tqdm_class)


def hub_error(repo_id: str, error: Exception) -> WeightsUnavailableError:
    """Translate a huggingface_hub failure into a message that says what to do."""
    from huggingface_hub import constants, errors

    if isinstance(error, errors.LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        return WeightsUnavailableError(
            f"'{repo_id}' is no local file or folder, and as a hub id its weights are not in the local "
            f"cache ({constants.HF_HUB_CACHE}) and {why}. Connect to the internet once (or allow "
            "huggingface.co through the firewall) to download them, or use a local directory or file "
            "as the model source."
        )
    if isinstance(error, errors.RepositoryNotFoundError | errors.HFValidationError):
        return WeightsUnavailableError(
            f"'{repo_id}' is neither an existing local path nor a model on the Hugging Face hub "
            f"(e.g. {DEFAULT_HUB_ID})."
        )
    return WeightsUnavailableError(f"could not fetch '{repo_id}' from the hub: {error}")


def fetch_hub_model(repo_id: str, revision: str | None, tqdm_class: Any) -> tuple[Path, list[str]]:
    """``config.json`` and the weights file (safetensors preferred, else pytorch_model.bin) of a model."""
    from huggingface_hub import errors

    try:
        config_path = _download(repo_id, "config.json", revision, tqdm_class)
    except Exception as e:  # noqa: BLE001 - translated into an actionable message
        raise hub_error(repo_id, e) from None
    first_error: Exception | None = None
    for name in HF_WEIGHT_FILES:
        try:
            return Path(config_path), [_download(repo_id, name, revision, tqdm_class)]
        except errors.EntryNotFoundError as e:
            first_error = first_error or e
        except Exception as e:  # noqa: BLE001
            raise hub_error(repo_id, e) from None
    raise hub_error(repo_id, first_error)


def fetch_file(repo_id: str, filename: str, revision: str | None, tqdm_class: Any) -> str:
    """Local path of one file of a hub repository (downloaded once, then from the cache)."""
    try:
        return _download(repo_id, filename, revision, tqdm_class)
    except Exception as e:  # noqa: BLE001 - translated into an actionable message
        raise hub_error(repo_id, e) from None

"""Persistent user settings (model source, device, thresholds, ...) as a small JSON file.

Stored in the user's config folder (``platformdirs``), or in ``$NAPARI_CLIPSEG_CONFIG_DIR``.
Unknown or damaged files fall back to defaults instead of failing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .constants import DEFAULT_HUB_ID, DEFAULT_THRESHOLD

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    model_source: str = DEFAULT_HUB_ID
    device: str = "auto"
    precision: str = "float32"
    threshold: float = DEFAULT_THRESHOLD
    min_size: int = 0
    show_probabilities: bool = False
    prompts: str = ""
    export_folder: str = ""
    region: str = "current plane"
    tiling: str = "auto"
    overlap: int = 44


def settings_path() -> Path:
    folder = os.environ.get("NAPARI_CLIPSEG_CONFIG_DIR")
    if not folder:
        from platformdirs import user_config_dir

        folder = user_config_dir("napari-clipseg", appauthor=False)
    return Path(folder) / "settings.json"


def load_settings() -> Settings:
    """Saved settings, or defaults (for missing, unreadable or partly unknown files)."""
    path = settings_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as e:
        logger.warning("ignoring unreadable settings file %s: %s", path, e)
        return Settings()
    defaults = Settings()
    known = {f.name: f.type for f in dataclasses.fields(Settings)}
    values = {}
    for key, value in raw.items():
        default = getattr(defaults, key, None)
        if key not in known or isinstance(value, bool) != isinstance(default, bool):
            continue
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if isinstance(value, type(default)):
            values[key] = value
    return dataclasses.replace(defaults, **values)


def save_settings(settings: Settings) -> None:
    """Write settings atomically; failures are logged, never raised (settings are a convenience)."""
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(settings), indent=2))
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("could not save settings to %s: %s", path, e)

"""The widget's persistent settings (model source, device, prompts, run options) as a small JSON file.

Stored in the user's config folder (``platformdirs``), or in ``$NAPARI_CLIPSEG_CONFIG_DIR``. Run
options are a :class:`~napari_clipseg.segmentation.options.SegmentOptions`, validated like every other use of
it; unknown, damaged or outdated values fall back to their defaults instead of failing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import DEFAULT_HUB_ID
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions

logger = logging.getLogger(__name__)

#: Run options remembered between sessions (the others belong to one image: planes, channels, ...).
PERSISTED_OPTIONS = ("mode", "overlap", "scale", "threshold", "min_size", "batch_size")
REGIONS = ("current plane", "whole stack", "inside boxes")


@dataclass
class Settings:
    model: ModelSpec = field(default_factory=lambda: ModelSpec(DEFAULT_HUB_ID, device="auto"))
    show_probabilities: bool = False
    prompts: str = ""
    export_folder: str = ""
    region: str = REGIONS[0]
    output: str = "classes"
    split_distance: int = 5
    open_sections: list = field(default_factory=list)
    mode: str = "Segment"
    options: SegmentOptions = field(default_factory=SegmentOptions)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("options", "model")}
        options = self.options.to_dict()
        return {**values, "model": self.model.to_dict(), "options": {k: options[k] for k in PERSISTED_OPTIONS}}


def settings_path() -> Path:
    folder = os.environ.get("NAPARI_CLIPSEG_CONFIG_DIR")
    if not folder:
        from platformdirs import user_config_dir

        folder = user_config_dir("napari-clipseg", appauthor=False)
    return Path(folder) / "settings.json"


def _options_from(raw: dict[str, Any]) -> SegmentOptions:
    """Saved options, each kept only if valid (older files kept them at the top level)."""
    saved = raw.get("options") if isinstance(raw.get("options"), dict) else {}
    legacy = {"mode": raw.get("tiling"), **{k: raw.get(k) for k in ("threshold", "min_size", "overlap")}}
    options = SegmentOptions()
    for key in PERSISTED_OPTIONS:
        value = saved.get(key, legacy.get(key))
        if value is None or (key == "threshold" and isinstance(value, list)):  # the slider holds one value
            continue
        try:
            options = options.replace(**{key: value})
        except (TypeError, ValueError) as e:
            logger.warning("ignoring saved option %s=%r: %s", key, value, e)
    return options


def _model_from(raw: dict[str, Any], default: ModelSpec) -> ModelSpec:
    """The saved model spec (older files kept its fields at the top level), or ``default``."""
    saved = raw.get("model")
    if not isinstance(saved, dict):
        legacy = {"source": "model_source", "decoder": "decoder", "device": "device", "precision": "precision"}
        saved = {field: raw[key] for field, key in legacy.items() if isinstance(raw.get(key), str)}
        saved["decoder"] = saved.get("decoder") or None
    try:
        return ModelSpec.from_dict({**default.to_dict(), **saved})
    except (TypeError, ValueError) as e:
        logger.warning("ignoring the saved model %r: %s", saved, e)
        return default


def load_settings() -> Settings:
    """Saved settings, or defaults (for missing, unreadable or partly invalid files)."""
    path = settings_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as e:
        logger.warning("ignoring unreadable settings file %s: %s", path, e)
        return Settings()
    if not isinstance(raw, dict):
        return Settings()
    defaults = Settings()
    values: dict[str, Any] = {"options": _options_from(raw), "model": _model_from(raw, defaults.model)}
    for f in dataclasses.fields(Settings):
        value, default = raw.get(f.name), getattr(defaults, f.name)
        if f.name not in ("options", "model") and type(value) is type(default):
            values[f.name] = value
    if values.get("region") not in REGIONS:
        values.pop("region", None)
    return dataclasses.replace(defaults, **values)


def save_settings(settings: Settings) -> None:
    """Write settings atomically; failures are logged, never raised (settings are a convenience)."""
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(settings.to_dict(), indent=2), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("could not save settings to %s: %s", path, e)

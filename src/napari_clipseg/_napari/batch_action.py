"""Pre-label a folder from the dock: the dock's prompts and settings, through ``segment_dataset``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..segmentation.options import SegmentOptions, check_distinct, split_prompts
from ..segmentation.postprocess import InstanceSettings


@dataclass(frozen=True)
class FolderRun:
    """What to pre-label (``inputs``), where to (``out_dir``), and ``segment_dataset``'s keywords."""

    inputs: list[str]
    out_dir: str
    settings: dict[str, Any]


def default_output(folder: str) -> str:
    """``<folder>-clipseg`` beside the image folder (never inside it, never the folder itself)."""
    path = Path(folder)
    return str(path.parent / f"{path.name}-clipseg")


def ask_folder_run(
    widget: Any, prompts_text: str, options: SegmentOptions, instances: InstanceSettings | None, suffix: str
) -> FolderRun | str | None:
    """Ask for the image folder and the output folder; a message when the run cannot start, None when cancelled."""
    prompts = split_prompts(prompts_text)
    if not prompts:
        return "Type the prompts first: a folder is pre-labelled with the dock's prompts and settings."
    try:
        check_distinct(prompts)
    except ValueError as e:
        return str(e)
    source = widget.dialogs.choose_folder(widget.native, "Folder of images to pre-label", "")
    if not source:
        return None
    out_dir = widget.dialogs.choose_folder(widget.native, "Folder for the pre-labels", default_output(source))
    if not out_dir:
        return None
    if Path(out_dir).resolve() == Path(source).resolve():
        return "Choose an output folder other than the image folder."
    settings = {"prompts": prompts, "options": options, "instances": instances, "file_format": suffix.lstrip(".")}
    return FolderRun([source], out_dir, settings)


def report_message(report: Any) -> tuple[str, str]:
    """The message and its level after a folder run."""
    text = f"Pre-labelled {report.summary()}. Drag an output subfolder onto napari to correct it."
    if report.failed:
        first, more = report.failed[0], " and more (see report.csv)" if len(report.failed) > 1 else ""
        return f"{text} Failed: {first.name} ({first.error}){more}.", "warning"
    return text, "info"

"""The modal questions the widget asks (folder to export to, "overwrite?"), injectable for tests and scripts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def ask_folder(parent: Any, start: str) -> str:
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getExistingDirectory(parent, "Export masks to folder", start)


def choose_folder(parent: Any, title: str, start: str) -> str:
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getExistingDirectory(parent, title, start)


def confirm(parent: Any, question: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    return QMessageBox.question(parent, "napari-clipseg", question) == QMessageBox.StandardButton.Yes


def choose_model(parent: Any, folder: bool) -> str:
    from qtpy.QtWidgets import QFileDialog

    if folder:
        return QFileDialog.getExistingDirectory(parent, "Model folder (save_pretrained)")
    path, _ = QFileDialog.getOpenFileName(
        parent, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.bin *.safetensors)"
    )
    return path


@dataclass
class Dialogs:
    """The modal questions the widget asks; tests and scripts pass their own answers.

    Attributes:
        ask_folder: ``(parent, start folder) -> chosen folder`` ("" when cancelled).
        confirm: ``(parent, question) -> yes?``.
        choose_model: ``(parent, folder?) -> a model folder or checkpoint file`` ("" when cancelled).
        choose_folder: ``(parent, title, start) -> a folder`` ("" when cancelled).
    """

    ask_folder: Callable[[Any, str], str] = ask_folder
    confirm: Callable[[Any, str], bool] = confirm
    choose_model: Callable[[Any, bool], str] = choose_model
    choose_folder: Callable[[Any, str, str], str] = choose_folder

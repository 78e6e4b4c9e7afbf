"""What makes the narrow dock fit: a short title bar, and form labels as wide as they are drawn."""

from __future__ import annotations

import contextlib
from typing import Any

from qtpy.QtCore import QTimer

from .dock_text import DOCK_WIDTH


def once_docked(fn: Any) -> None:
    """Call ``fn`` once napari has docked the widget and styled it (the next turn of the event
    loop); nothing if the widget was closed meanwhile (its Qt objects are gone)."""

    def call() -> None:
        with contextlib.suppress(RuntimeError):
            fn()

    QTimer.singleShot(0, call)


def short_dock_title(widget: Any, text: str) -> None:
    """:func:`shorten_dock_title` once napari has docked ``widget``."""
    once_docked(lambda: shorten_dock_title(widget, text))


def shorten_dock_title(widget: Any, text: str) -> None:
    """Show ``text`` in the title bar of the dock holding ``widget``: napari titles a plugin's dock
    "CLIPSeg (napari-clipseg)", which the narrow dock cuts to "CLIPSeg (napari-c". The dock's name
    (napari's key for it, its menu entry and remembered place) stays; the full name is the tooltip.
    The title bar is made anew when the dock floats or docks again, so it is set again then."""
    from qtpy.QtWidgets import QDockWidget, QLabel

    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    if dock is None or getattr(dock, "_clipseg_short_title", False):
        return

    def apply() -> None:
        label = getattr(getattr(dock, "title", None), "title", None)
        if isinstance(label, QLabel) and label.text() != text:
            label.setToolTip(label.text())
            label.setText(text)

    apply()
    dock.topLevelChanged.connect(lambda *_: once_docked(apply))  # after napari made the new title bar
    dock._clipseg_short_title = True


def fit_labels(*widgets: Any) -> None:
    """Give the labels of ``widgets`` (rows of one magicgui form) the width Qt draws them at:
    magicgui measures label text with the application's default font, a few pixels narrower than
    napari's style draws it, which cut "Threshold 0.47" to "Threshold 0.4'"."""
    labels = [ref()._label_widget for w in widgets if (ref := getattr(w, "_labeled_widget_ref", None)) and ref()]
    width = max((label.native.sizeHint().width() for label in labels), default=0)
    for label in labels:
        label.native.setMinimumWidth(width)


def show_text(label: Any, text: str) -> None:
    """Set a wrapped magicgui ``label`` (and its tooltip) with all the lines it needs: a scrolling
    dock does not stretch a wrapped label by itself."""
    label.value, label.tooltip = text, text
    native = label.native
    native.setMinimumHeight(native.heightForWidth(max(native.width(), DOCK_WIDTH - 20)))


def fixed_text_box(box: Any, lines: int) -> None:
    """Make a magicgui ``TextEdit`` a read-only status box ``lines`` lines high: a message is
    shown whole (wrapped, scrolling past its height) and the rows below it never move."""
    native = box.native
    native.setReadOnly(True)
    native.setFrameShape(native.Shape.NoFrame)
    native.viewport().setAutoFillBackground(False)
    margins = native.contentsMargins()
    height = native.fontMetrics().lineSpacing() * lines + 2 * native.document().documentMargin()
    native.setFixedHeight(int(height) + margins.top() + margins.bottom())

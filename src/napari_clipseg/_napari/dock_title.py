"""The dock's title bar: short enough for the narrow dock."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer


def short_dock_title(widget: Any, text: str) -> None:
    """:func:`shorten_dock_title` once napari has docked ``widget`` (the next turn of the event loop)."""
    QTimer.singleShot(0, lambda: shorten_dock_title(widget, text))


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

    def apply(*_: Any) -> None:
        try:
            label = getattr(getattr(dock, "title", None), "title", None)
            if isinstance(label, QLabel) and label.text() != text:
                label.setToolTip(label.text())
                label.setText(text)
        except RuntimeError:  # the dock was closed meanwhile (its Qt objects are gone)
            pass

    apply()
    dock.topLevelChanged.connect(lambda *_: QTimer.singleShot(0, apply))
    dock._clipseg_short_title = True

"""What makes the narrow dock fit: it scrolls inside itself, a short title bar, form labels as wide
as they are drawn, combo boxes that do not ask for their longest item, paths with their whole text
as a tooltip."""

from __future__ import annotations

import contextlib
from typing import Any

from magicgui.widgets import Container
from qtpy.QtCore import QTimer

from .dock_text import DOCK_WIDTH

#: The narrowest a field gets in the dock (its label never gives way).
FIELD_WIDTH = 60


class ScrollingDock(Container):
    """A scrollable magicgui container whose ``native`` is its scroll area. napari docks a magicgui
    widget's ``native``, which for a scrollable container is the widget inside the scroll area: the
    dock then grows with its contents, and opening a section grew napari's window past the screen's
    bottom (napari remembers that size). Docking the scroll area keeps the window's size."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)

    @property
    def native(self) -> Any:
        return self.root_native_widget


def fit_dock(dock: ScrollingDock, panels: tuple[Container, ...] = (), paths: tuple[Any, ...] = ()) -> None:
    """At most :data:`DOCK_WIDTH` wide, scrolling up and down only, with every label whole: the
    fields give way instead (a combo box, spin box or text field asks for its longest value's
    width, which pushed the rows past the dock and cut the labels), and the forms ``panels`` have no
    margins of their own. The path fields ``paths`` get their whole path as tooltip (:func:`path_tooltips`)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QSizePolicy, QSlider

    dock.margins = (2, 2, 4, 2)
    for panel in panels:
        panel.margins = (0, 0, 0, 0)
    area = dock.native
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(0)  # magicgui sets the widest row's width when a row is added
    area.setMaximumWidth(DOCK_WIDTH)
    inner = area.widget()  # as wide as the dock shows, whatever a wrapped status line asks for
    inner.setSizePolicy(QSizePolicy.Policy.Ignored, inner.sizePolicy().verticalPolicy())
    for combo in area.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(4)
    area.setStyleSheet(f"QAbstractSpinBox {{ min-width: {FIELD_WIDTH - 24}px; }}")  # napari's theme asks 70 px
    for kind in (QAbstractSpinBox, QComboBox, QLineEdit, QSlider):
        for field in area.findChildren(kind):
            field.setMinimumWidth(FIELD_WIDTH)
    path_tooltips(*paths)
    once_docked(lambda: fit_forms(dock))


def fit_forms(container: Container) -> None:
    """:func:`fit_labels` for every form (labelled container) inside ``container``."""
    for part in container:
        if isinstance(part, Container):
            if part.labels:
                fit_labels(*part)
            fit_forms(part)


def path_tooltips(*fields: Any) -> None:
    """A path field's tooltip starts with its whole path (the field shows part of a long one), then its help."""
    for field in fields:
        help_text = field.tooltip or ""

        def show(value: str, field: Any = field, help_text: str = help_text) -> None:
            field.tooltip = f"{value}\n\n{help_text}".strip() if value else help_text

        show(field.value)
        field.changed.connect(show)


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
    width = max((max(label.native.sizeHint().width(), label.native.minimumWidth()) for label in labels), default=0)
    for label in labels:  # never narrower than before: forms fitted together (one column) stay together
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
    native.setStyleSheet("QTextEdit { background: transparent; }")  # a message, not a field to type in
    margins = native.contentsMargins()
    height = native.fontMetrics().lineSpacing() * lines + 2 * native.document().documentMargin()
    native.setFixedHeight(int(height) + margins.top() + margins.bottom())

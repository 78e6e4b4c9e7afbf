"""A collapsible section of the dock: a header button that shows or hides a group of controls."""

from __future__ import annotations

from collections.abc import Sequence

from magicgui.widgets import Container, PushButton, Widget
from psygnal import Signal


class Section(Container):
    """``▸ Title`` / ``▾ Title`` header over a body of controls; :attr:`toggled` says when it opens or closes."""

    toggled = Signal(bool)

    def __init__(self, title: str, widgets: Sequence[Widget], *, expanded: bool = False) -> None:
        super().__init__(labels=False)
        self.title = title
        self.header = PushButton(text=title)
        self.header.native.setFlat(True)
        self.header.native.setStyleSheet("text-align: left; font-weight: bold;")
        self.body = Container(widgets=list(widgets), labels=False)  # labelled controls come in their own forms
        self.body.margins = (4, 0, 0, 0)  # a hint of indent: the narrow dock needs the width
        self.margins = (0, 0, 0, 0)
        self.extend([self.header, self.body])
        self.header.changed.connect(lambda *_: self.set_expanded(not self.expanded))
        self._expanded = not expanded
        self.set_expanded(expanded)

    @property
    def expanded(self) -> bool:
        return self._expanded

    def set_expanded(self, expanded: bool) -> None:
        if expanded == self._expanded:
            return
        self._expanded = expanded
        self.body.visible = expanded
        self.header.text = f"{'▾' if expanded else '▸'} {self.title}"
        self.toggled.emit(expanded)

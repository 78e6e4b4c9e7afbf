"""Keyboard behaviour of the prompt box: Enter runs, Shift+Enter adds a line, and restored prompts
are selected when the box first gets focus, so typing replaces them instead of merging with them
("rocket" + typing "person" must not give "rocketperson")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer


class PromptKeys(QObject):
    """Event filter for a QTextEdit and its viewport (install with :meth:`install`)."""

    def __init__(self, run: Callable[[], None]) -> None:
        super().__init__()
        self._run = run
        self._edit: Any = None
        self.select_on_focus = False  # set while the box holds prompts restored from the last session
        self._swallow_click = False

    def install(self, edit: Any) -> None:
        self._edit = edit
        edit.installEventFilter(self)
        edit.viewport().installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.FocusIn and self.select_on_focus:
            self.select_on_focus = False
            self._swallow_click = True  # the click that gave the focus must not undo the selection
            QTimer.singleShot(0, self._edit.selectAll)  # after Qt has placed the cursor for the focus
            return False
        if kind == QEvent.Type.MouseButtonPress and self._swallow_click:
            self._swallow_click = False
            return True
        if kind != QEvent.Type.KeyPress:
            return False
        self._swallow_click = False
        is_enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if self.select_on_focus and event.text() and not is_enter:  # typed before any focus event
            self.select_on_focus = False
            self._edit.selectAll()  # the key goes on to replace the selection
        if is_enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self._run()
            return True
        return False

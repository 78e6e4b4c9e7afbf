"""The core imports without napari, Qt or magicgui, and exposes the documented API."""

from __future__ import annotations

import subprocess
import sys

import napari_clipseg as ncs

PUBLIC = ["load_model", "ClipSegPredictor", "segment", "ClipSeg", "ClipSegConfig", "iter_segment", "run"]


def test_core_import_pulls_in_no_gui_modules():
    code = (
        "import sys, napari_clipseg as n; n.ClipSegPredictor; n.load_model; n.segment; "
        "import napari_clipseg.cli, napari_clipseg.pipeline; "
        "bad = [m for m in ('napari', 'qtpy', 'magicgui', 'PyQt6', 'PyQt5', 'PySide6') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_public_api_names():
    for name in PUBLIC:
        assert getattr(ncs, name) is not None
    assert set(PUBLIC) <= set(dir(ncs))

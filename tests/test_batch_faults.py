"""Batch faults (issue 27, class 9): a resume whose only unfinished inputs are unreadable never
loads the model, a symbolic link loop among the inputs is a failed row (never a traceback), and a
text file named ``.png`` on a LocalCluster is a failed row with one line."""

from __future__ import annotations

import os

import numpy as np

import napari_clipseg as ncs
from napari_clipseg.cli import main


def _folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "good.npy", np.random.default_rng(0).random((48, 48)).astype(np.float32))
    (folder / "bad.png").write_text("not a png")
    return folder


def test_a_resume_whose_only_unfinished_input_is_unreadable_never_loads_the_model(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    folder = _folder(tmp_path)
    argv = ["batch", str(folder), "-p", "thing", "-m", str(tiny_model_dir), "--out", str(tmp_path / "out")]
    assert main([*argv, "--precision", "float32"]) == 1  # bad.png failed, good done
    capsys.readouterr()

    def never(*_args, **_kwargs):
        raise AssertionError("the model was loaded to find that an input cannot be read")

    monkeypatch.setattr(ncs.ModelSpec, "load", never)
    assert main([*argv, "--precision", "float32"]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "bad.png" in err and "1 skipped, 1 failed" in err


def test_a_symbolic_link_loop_among_the_inputs_is_a_failed_row(tmp_path, tiny_model_dir, capsys):
    folder = _folder(tmp_path)
    (folder / "bad.png").unlink()
    os.symlink("self.tif", folder / "self.tif")  # self.tif -> self.tif
    out = tmp_path / "out"
    code = main(["batch", str(folder), "-p", "thing", "-m", str(tiny_model_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "self.tif" in err
    assert (out / "report.json").is_file() and (out / "good" / "clipseg.json").is_file()


def test_a_text_file_named_png_on_a_local_cluster_is_one_failed_line(tmp_path, tiny_model_dir, capfd):
    folder = _folder(tmp_path)
    argv = ["batch", str(folder), "-p", "thing", "-m", str(tiny_model_dir), "--out", str(tmp_path / "out")]
    assert main([*argv, "--workers", "2", "--precision", "float32"]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "bad.png" in err and "1 done, 0 skipped, 1 failed" in err

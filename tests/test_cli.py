"""The console script, run in-process through main()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_clipseg.cli import main
from napari_clipseg.export import read_array, write_array


def test_segment_sample_writes_labels_sidecar_and_probabilities(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    code = main(
        [
            "segment",
            "--sample",
            "coffee",
            "-p",
            "cup, saucer",
            "-p",
            "spoon",
            "-m",
            str(tiny_model_dir),
            "-o",
            str(out),
            "--threshold",
            "0.3",
            "--probabilities",
            str(tmp_path / "p.npy"),
        ]
    )
    assert code == 0
    labels, probs = read_array(out), np.load(tmp_path / "p.npy")
    assert labels.shape == (400, 600) and labels.dtype == np.uint8 and probs.shape == (3, 400, 600)
    np.testing.assert_array_equal(labels == 0, (probs < 0.3).all(axis=0))
    record = json.loads((tmp_path / "labels.tif.json").read_text())
    assert [c["name"] for c in record["classes"]] == ["cup", "saucer", "spoon"]
    assert record["model"]["kind"] == "hf-directory" and len(record["model"]["sha256"]) == 64
    assert record["threshold"] == 0.3 and record["image_shape"] == [400, 600, 3]
    assert "wrote" in capsys.readouterr().out


def test_segment_image_file_to_png(tiny_model_dir, tmp_path, rng):
    image = tmp_path / "img.tif"
    write_array(image, rng.integers(0, 4000, (50, 60), dtype=np.uint16))
    assert main(["segment", str(image), "-p", "cell", "-m", str(tiny_model_dir), "-o", str(tmp_path / "l.png")]) == 0
    assert read_array(tmp_path / "l.png").shape == (50, 60)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


def test_existing_output_is_never_overwritten(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    out.write_bytes(b"precious")
    code = main(["segment", "--sample", "cell", "-p", "cell", "-m", str(tiny_model_dir), "-o", str(out)])
    assert code == 1 and out.read_bytes() == b"precious"
    assert "already exists" in _error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["segment", "missing.tif", "-p", "x", "-o", "o.tif"], "not found|No such file"),
        (["segment", "--sample", "cell", "-p", " , ", "-o", "o.tif"], "non-empty prompt"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif"], "HF_HUB_OFFLINE=1"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.bmp", "-m", "TINY"], "unsupported file type"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(argv, message, tmp_path, tiny_model_dir, capsys, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    argv = [str(tiny_model_dir) if a == "TINY" else a for a in argv]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert line.startswith("napari-clipseg: error:") and re.search(message, line)
    assert not any(tmp_path.glob("o.*"))


def test_random_weights_and_samples(tmp_path, capsys):
    assert main(["random-weights", str(tmp_path / "w"), "--config", "tiny"]) == 0
    assert "RANDOM" in capsys.readouterr().err
    assert (tmp_path / "w" / "model.safetensors").is_file()
    assert main(["samples"]) == 0
    assert "astronaut" in capsys.readouterr().out


def test_stack_and_tiling_from_the_command_line(tiny_model_dir, tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (3, 40, 500), dtype=np.uint16)
    write_array(tmp_path / "stack.tif", stack)
    out = tmp_path / "labels.tif"
    argv = [
        "segment",
        str(tmp_path / "stack.tif"),
        "-p",
        "cell",
        "-m",
        str(tiny_model_dir),
        "-o",
        str(out),
        "--mode",
        "tiled",
        "--overlap",
        "30",
        "--threshold",
        "0",
    ]
    assert main(argv) == 0
    labels = read_array(out)
    assert labels.shape == (3, 40, 500) and np.all(labels == 1)
    assert json.loads((tmp_path / "labels.tif.json").read_text())["mode"] == "tiled"


def test_bad_channels_text(tiny_model_dir, tmp_path, capsys):
    argv = [
        "segment",
        "--sample",
        "coffee",
        "-p",
        "cup",
        "-m",
        str(tiny_model_dir),
        "-o",
        str(tmp_path / "o.tif"),
        "--channels",
        "0,1",
    ]
    assert main(argv) == 1 and "three indices" in capsys.readouterr().err


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_array(tmp_path / "labels.tif", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

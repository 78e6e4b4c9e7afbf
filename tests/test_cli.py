"""The console script, run in-process through main()."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_clipseg.cli import main
from napari_clipseg.io.export import read_array, write_array
from napari_clipseg.io.records import read_record


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
    record = read_record(tmp_path / "labels.tif.json")
    assert [c["name"] for c in record["classes"]] == ["cup", "saucer", "spoon"]
    assert record["model"]["kind"] == "hf-directory" and len(record["model"]["sha256"]) == 64
    assert record["options"]["threshold"] == 0.3 and record["image"]["shape"] == [400, 600, 3]
    assert record["files"] == {"labels": "labels.tif", "probabilities": "p.npy"}
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
    assert code == 2 and out.read_bytes() == b"precious"
    assert "already exists" in _error_line(capsys) and not (tmp_path / "labels.tif.json").exists()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["segment", "missing.tif", "-p", "x", "-o", "o.tif"], 2, "the image missing.tif does not exist"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "-m", "./nowhere/model"], 2, "does not exist"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "-m", "afile/modle"], 2, "afile/modle does not"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--decoder", "gone"], 2, "the decoder gone"),
        (["segment", "--sample", "cell", "-p", " , ", "-o", "o.tif"], 2, "non-empty prompt"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif"], 2, "HF_HUB_OFFLINE=1"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.bmp", "-m", "TINY"], 2, "unsupported file type"),
        (["segment", "--sample", "cell", "-p", "x, x", "-o", "o.tif"], 2, "given twice"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--threshold", "nan"], 2, r"\[0, 1\]; got nan"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--threshold", "1.5"], 2, r"\[0, 1\]"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--overlap", "400"], 2, r"overlap must be in"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--min-size", "-3"], 2, "min_size"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--probabilities", "p.jpg"], 2, "p.jpg"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--probabilities", "o.tif"], 2, "must differ"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "afile/o.tif"], 2, "is a file, not a folder"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "adir"], 2, "unsupported file type"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(argv, code, message, tmp_path, tiny_model_dir, capsys, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    argv = [str(tiny_model_dir) if a == "TINY" else a for a in argv]
    assert main(argv) == code
    line = _error_line(capsys)
    assert line.startswith("napari-clipseg: error:") and re.search(message, line)
    assert not any(tmp_path.glob("o.*"))


def test_random_weights_and_samples(tmp_path, capsys):
    assert main(["random-weights", str(tmp_path / "w"), "--config", "tiny"]) == 0
    assert "RANDOM" in capsys.readouterr().err
    assert (tmp_path / "w" / "model.safetensors").is_file()
    assert main(["random-weights", str(tmp_path / "w"), "--config", "tiny"]) == 2
    assert "--overwrite" in _error_line(capsys)
    assert main(["random-weights", str(tmp_path / "w"), "--config", "tiny", "--seed", "1", "--overwrite"]) == 0
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
    assert main(argv) == 2 and "three indices" in capsys.readouterr().err


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_array(tmp_path / "labels.tif", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--threshold", "1.5"], "threshold must lie in"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "-m", "demo/modle"], "the model demo/modle does"),
        (["segment", "missing.png", "-p", "x", "-o", "o.tif"], "the image missing.png does not exist"),
        (["batch", "missing/", "-p", "x", "--out", "out", "-m", "demo"], "missing"),
        (["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "-m", "someone/uncached"], "HF_HUB_OFFLINE=1"),
        (["finetune", "--images", "i", "--masks", "m", "--out", "d", "-m", "./demo/modle"], "does not exist"),
        (
            ["finetune", "--images", "i", "--masks", "m", "--out", "d", "-m", "demo", "--max-steps", "0"],
            "max_steps must",
        ),
    ],
    ids=[
        "threshold",
        "model-typo",
        "missing-image",
        "missing-input",
        "hub-offline",
        "finetune-model-typo",
        "finetune-steps",
    ],
)
def test_argument_and_path_errors_come_before_torch_is_imported(tmp_path, argv, message):
    """A typo costs a second: every argument and named path is checked before torch (and the
    model) load; a source below an existing folder is a local path, never tried on the hub."""
    import subprocess
    import sys

    (tmp_path / "demo").mkdir()
    code = f"import sys; from napari_clipseg.cli import main; rc = main({argv!r}); print(rc, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("napari-clipseg: error: ") and message in line, line


def _segment_argv(model_dir, out, *extra):
    return ["segment", "--sample", "cell", "-p", "cell", "-m", str(model_dir), "-o", str(out), *extra]


@pytest.mark.parametrize("failing", ["labels", "probabilities", "record"])
@pytest.mark.parametrize("fault", ["disk full", "ctrl-c"])
def test_a_run_writes_all_of_its_files_or_none(failing, fault, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import errno

    from napari_clipseg import atomic
    from napari_clipseg.io import export

    def broken(tmp: str) -> None:
        if fault == "ctrl-c":
            raise KeyboardInterrupt
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    suffix = {"labels": ".tif", "probabilities": ".npy", "record": ".json"}[failing]
    for module, name in ((export, "array_writer"), (atomic, "json_writer")):
        original = getattr(module, name)

        def patched(*args, _original=original, **kwargs):
            path = args[0] if args and isinstance(args[0], str | os.PathLike) else None
            real = _original(*args, **kwargs)
            target = str(path) if path is not None else ".json"
            return broken if target.endswith(suffix) else real

        monkeypatch.setattr(module, name, patched)
    argv = _segment_argv(tiny_model_dir, tmp_path / "out" / "l.tif", "--probabilities", str(tmp_path / "out" / "p.npy"))
    code = main(argv)
    assert code == (130 if fault == "ctrl-c" else 1)
    line = _error_line(capsys)
    assert ("interrupted" if fault == "ctrl-c" else "no space left on the device") in line
    assert not (tmp_path / "out").exists()  # nothing new, no temporary file, not even the folder made for them


def test_existing_files_are_kept_when_a_run_fails_late(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from napari_clipseg import atomic

    out = tmp_path / "l.tif"
    assert main(_segment_argv(tiny_model_dir, out)) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(tmp: str) -> None:
        raise OSError("boom")

    monkeypatch.setattr(atomic, "json_writer", lambda record: fail)  # the last file of the group fails
    assert main(_segment_argv(tiny_model_dir, out, "--overwrite", "--threshold", "0.9")) == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _files(tmp_path):
    (tmp_path / "text.png").write_text("this is not an image")
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00garbage" * 3)
    write_array(tmp_path / "tiny.tif", np.zeros((8, 8), np.uint16))
    write_array(tmp_path / "rgb.tif", np.zeros((32, 32, 3), np.uint8))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["text.png"], 1, r"cannot read text.png as an image"),
        (["garbage.tif"], 1, r"cannot read garbage.tif as an image"),
        (["objects.npy"], 1, r"cannot read objects.npy as an image"),
        (["tiny.tif"], 1, r"8x8 pixels; CLIPSeg needs at least 16x16"),
        (["rgb.tif", "--channels", "0,1,9"], 1, r"ask for channel 9, but the image has 3"),
        (["rgb.tif", "-o", "/proc/labels.tif"], 2, r"/proc does not accept new files"),
        (["rgb.tif", "-o", "rgb.tif"], 2, r"rgb.tif already exists \(use --overwrite"),
    ],
    ids=["text-as-png", "garbage-tif", "pickled-npy", "eight-pixels", "channel-9", "proc-output", "input-as-output"],
)
def test_bad_files_fail_before_the_model_loads(argv, code, message, tmp_path, capsys, monkeypatch):
    """The model folder 'nowhere' is empty (loading it would fail, naming it): each error must come
    before the model loads."""
    import re

    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    (tmp_path / "nowhere").mkdir()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    output = [] if "-o" in argv else ["-o", "out.tif"]
    assert main(["segment", *argv, "-p", "cell", "-m", "nowhere", *output]) == code
    line = _error_line(capsys)
    assert re.search(message, line) and "nowhere" not in line, line
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_usage_errors_of_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--sample", "moon", "-p", "x", "-o", "o.tif"])
    assert exit_info.value.code == 2 and "invalid choice: 'moon'" in capsys.readouterr().err


def test_library_warnings_are_printed_once():
    """huggingface_hub has its own handler: the CLI must not print its retry warnings a second time."""
    import subprocess
    import sys

    code = (
        "from napari_clipseg.cli import main; main(['samples']); "
        "from huggingface_hub.utils import logging; "
        "logging.get_logger('huggingface_hub.utils._http').warning('retrying in 1s [Retry 1/5]')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stderr.count("retrying in 1s") == 1, done.stderr

"""``napari-clipseg batch`` and ``evaluate`` as users run them: in-process, as a subprocess, killed
mid-run and resumed, and on a dask LocalCluster of two worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import DATASET_PROMPTS as PROMPTS
from conftest import output_files as _files
from napari_clipseg.cli import main
from napari_clipseg.io.records import read_record


def test_batch_in_process_reports_and_exit_codes(dataset, tiny_model_dir, tmp_path, capsys):
    folder = dataset["photo"].parent
    argv = ["batch", str(folder), "-p", ", ".join(PROMPTS), "--out", str(tmp_path / "out"), "-m", str(tiny_model_dir)]
    assert main([*argv, "--instances", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "3 input(s): 3 done, 0 skipped, 0 failed" in err
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    assert main([*argv, "--instances", "--quiet"]) == 1  # one failed input: exit 1, listed on stderr
    err = capsys.readouterr().err
    assert "failed: " in err and "broken.tif" in err and "4 input(s): 0 done, 3 skipped, 1 failed" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "png", "--probabilities"], "PNG cannot hold probabilities"),
        (["--threshold", "2"], "threshold must lie in [0, 1]"),
        (["--example", "nope.png:nope-mask.png"], "IMAGE:MASK"),
        (["--workers", "-1"], "--workers must be at least 0"),
    ],
)
def test_batch_usage_errors_exit_2_before_the_model_loads(extra, message, dataset, tmp_path, capsys):
    argv = ["batch", str(dataset["photo"]), "-p", "cell", "--out", str(tmp_path / "out"), "-m", "no/such-model"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert main(["batch", str(tmp_path / "missing-*.tif"), "-p", "cell", "--out", str(tmp_path / "o")]) == 2
    assert "no file matches" in capsys.readouterr().err


def _batch_command(folder, out, model, *extra):
    return [sys.executable, "-m", "napari_clipseg.cli", "batch", str(folder), "-p", "cell", "--out", str(out),
            "-m", str(model), "--quiet", *extra]  # fmt: skip


#: A batch run that, when it writes the record of its fourth input (its labels already staged),
#: says so on stdout and waits on stdin: the test kills it right there, without a clock.
_HELD_BATCH = """
import sys
from napari_clipseg.cli import main
from napari_clipseg.io import outputs
written = []
real = outputs.json_writer
def held(record):
    written.append(1)
    if len(written) == 4:
        print("writing the fourth", flush=True)
        sys.stdin.readline()
    return real(record)
outputs.json_writer = held
sys.exit(main(sys.argv[1:]))
"""


def test_killed_run_leaves_no_partial_output_and_the_next_run_completes(tmp_path, rng, tiny_model_dir):
    """SIGKILL a subprocess while it writes an output (no clean-up can run), then run again."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        iio.imwrite(folder / f"img{i:02d}.png", rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = _batch_command(folder, out, tiny_model_dir, "--probabilities")[3:]  # after "-m napari_clipseg.cli"
    process = subprocess.Popen(
        [sys.executable, "-c", _HELD_BATCH, *argv], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "writing the fourth"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.parent.name for p in out.glob("*/clipseg.json"))
    assert len(finished) == 3, "the kill landed while the fourth input was written"
    for name in [p.name for p in out.iterdir() if p.is_dir() and p.name != ".staging"]:
        assert sorted(f.name for f in (out / name).iterdir()) == ["clipseg.json", "labels.tif", "probabilities.tif"]
    result = subprocess.run(
        _batch_command(folder, out, tiny_model_dir, "--probabilities"), env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} skipped" in result.stderr and f"{12 - len(finished)} done" in result.stderr
    assert sorted(p.parent.name for p in out.glob("*/clipseg.json")) == [f"img{i:02d}" for i in range(12)]
    assert not (out / ".staging").exists()


def test_local_cluster_gives_byte_identical_outputs(dataset, tiny_model_dir, tmp_path):
    """Two worker processes (one torch thread each) against a sequential run with one thread; the stack
    is split into parts that run on different workers."""
    common = ["-p", ", ".join(PROMPTS), "-m", str(tiny_model_dir), "--instances", "--probabilities", "--coco"]
    common += ["--planes-per-task", "4", "--quiet", "--precision", "float32"]  # the workers' own timing would decide
    folder = str(dataset["photo"].parent)
    assert main(["batch", folder, "--out", str(tmp_path / "seq"), "--threads", "1", *common]) == 0
    assert main(["batch", folder, "--out", str(tmp_path / "dask"), "--workers", "2", *common]) == 0
    sequential, cluster = _files(tmp_path / "seq"), _files(tmp_path / "dask")
    assert (
        sorted(sequential) == sorted(cluster) and len(sequential) == 3 * 4 + 1
    )  # labels, instances, probabilities, objects; coco
    assert all(sequential[name] == cluster[name] for name in sequential)
    a, b = (read_record(tmp_path / run / "sub/stack" / "clipseg.json") for run in ("seq", "dask"))
    assert a["batch"]["key"] == b["batch"]["key"] and a["counts"] == b["counts"]


def test_evaluate_command_writes_metrics(dataset, tiny_model_dir, tmp_path, capsys):
    import tifffile

    from napari_clipseg.io.outputs import read_output

    out = tmp_path / "out"
    assert (
        main(["batch", str(dataset["plain"]), "-p", "cell", "--out", str(out), "-m", str(tiny_model_dir), "--quiet"])
        == 0
    )
    truth = tmp_path / "truth"
    truth.mkdir()
    labels = np.asarray(read_output(out / "plain"))
    corrected = labels.copy()
    corrected[:11] = 0
    tifffile.imwrite(truth / "plain.tif", corrected)
    assert main(["evaluate", str(out), str(truth), "--out", str(tmp_path / "metrics")]) == 0
    printed = capsys.readouterr().out
    changed = np.count_nonzero(labels != corrected) / labels.size
    assert f"changed_fraction   {changed:.4f}" in printed and "iou" in printed
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["metrics.csv", "metrics.json", "metrics.png"]


def test_a_running_scheduler_is_used_by_address(dataset, tiny_model_dir, tmp_path, capsys):
    """``--scheduler ADDRESS``: the run goes to a cluster someone else started (here a LocalCluster)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        argv = ["batch", str(dataset["photo"]), "-p", "cell", "--out", str(tmp_path / "out"), "-m", str(tiny_model_dir)]
        assert main([*argv, "--scheduler", cluster.scheduler_address, "--quiet"]) == 0
        with Client(cluster) as client:
            loaded = client.run(lambda dask_worker: dask_worker.plugins["napari-clipseg-model"].load_seconds)
    assert "1 input(s): 1 done" in capsys.readouterr().err
    assert read_record(tmp_path / "out" / "photo" / "clipseg.json")["classes"] == [{"value": 1, "name": "cell"}]
    assert [seconds > 0 for seconds in loaded.values()] == [True]  # the one worker loaded the model itself

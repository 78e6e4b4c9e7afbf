"""The waits of a newcomer's first minute, each as a new user meets it on the command line.

Side by side in one run, each a fresh ``napari-clipseg`` process (imports included), with a
full-size random model in a local folder (``demo/``) and four 256-px inputs:

- ``batch`` over the inputs (loads the model) and the same ``batch`` again, all done (resume);
- ``segment -m demo/modle`` (a typo below an existing folder) and ``-m ./demo/modle``;
- ``segment -m someone/missing`` with ``HF_HUB_OFFLINE=1`` (a hub id that is not cached).

Prints and writes ``benchmarks/results/first_minute.json``: seconds and exit code of each, and
whether torch was imported before the error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import napari_clipseg as ncs
from _common import write_results
from napari_clipseg.samples import striped_discs

CLI = [sys.executable, "-m", "napari_clipseg.cli"]


def timed(argv: list[str], cwd: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return {"seconds": round(seconds, 2), "exit": done.returncode, "last_line": last[:200]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), root / "demo")
        (root / "in").mkdir()
        for k in range(4):
            np.save(root / "in" / f"im{k}.npy", striped_discs(k, 256)[0])
        batch = ["batch", "in", "-p", "disc", "--out", "out", "-m", "demo", "--quiet"]
        segment = ["segment", "--sample", "astronaut", "-p", "person", "-o", "a.tif"]
        cases = {
            "batch, first run (loads the model)": batch,
            "batch again, every input done": batch,
            "segment -m demo/modle (typo)": [*segment, "-m", "demo/modle"],
            "segment -m ./demo/modle (typo)": [*segment, "-m", "./demo/modle"],
            "segment -m someone/missing (hub id, offline)": [*segment, "-m", "someone/missing"],
        }
        results = {}
        for name, argv in cases.items():
            results[name] = timed(argv, root)
            print(f"{name:46s} {results[name]}", flush=True)
    first, again = (results[k]["seconds"] for k in list(cases)[:2])
    write_results("first_minute", {"cases": results, "resume_vs_first_run": round(again / first, 3)})


if __name__ == "__main__":
    main()

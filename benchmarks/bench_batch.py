"""Dataset runs (issue #12): 64 RGB images of 512x512, full-size rd64-refined random weights, CPU.

Three ways to run the same ``segment_dataset`` call, each in a fresh subprocess (so peak memory is
its own), side by side in one run of this script:

* ``sequential``: in one process, torch's default threads (all cores);
* ``cluster 2x1``: a dask LocalCluster of 2 worker processes with 1 thread each;
* ``cluster 1x2``: a LocalCluster of 1 worker process with 2 threads.

For each: images per second (model load included, and without it), peak RSS per process (the
client and each worker), and the model-load seconds per worker. The ratios to the sequential run
are what to compare across machines.

Run: ``python benchmarks/bench_batch.py [--images 64]``; writes benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results

CASES = {"sequential": (0, 0), "cluster 2x1": (2, 1), "cluster 1x2": (1, 2)}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_facts() -> dict:
    from napari_clipseg.datasets.steps import LOAD_SECONDS

    return {"peak_rss_mib": _peak_rss_mib(), "model_load_s": sum(LOAD_SECONDS.values())}


def run_case(case: str, images: str, model: str, out: str) -> dict:
    """Inside the subprocess: one dataset run the way ``case`` says."""
    import napari_clipseg as ncs
    from napari_clipseg.datasets.steps import LOAD_SECONDS

    workers, threads = CASES[case]
    started = time.perf_counter()
    if not workers:
        report = ncs.segment_dataset(images, ["cell", "nucleus"], out, model=model)
        workers_facts = [{"peak_rss_mib": _peak_rss_mib(), "model_load_s": sum(LOAD_SECONDS.values())}]
    else:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            report = ncs.segment_dataset(images, ["cell", "nucleus"], out, model=model, client=client)
            workers_facts = list(client.run(_worker_facts).values())
    seconds = time.perf_counter() - started
    assert report.ok and len(report.rows) > 0
    return {
        "images": len(report.rows),
        "seconds": seconds,
        "client_peak_rss_mib": _peak_rss_mib(),
        "workers": workers_facts,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--case", choices=list(CASES))
    parser.add_argument("--paths", nargs=3)
    args = parser.parse_args()
    if args.case:  # the subprocess
        print(json.dumps(run_case(args.case, *args.paths)))
        return
    import napari_clipseg as ncs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), root / "model")
        rng = np.random.default_rng(0)
        (root / "images").mkdir()
        for i in range(args.images):
            np.save(root / "images" / f"img{i:03d}.npy", rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
        results = {}
        for case in CASES:
            command = [sys.executable, __file__, "--case", case, "--paths", str(root / "images"), str(model)]
            command.append(str(root / f"out-{case.replace(' ', '-')}"))
            line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            facts = json.loads(line)
            load = max(w["model_load_s"] for w in facts["workers"])
            facts["images_per_s"] = facts["images"] / facts["seconds"]
            facts["images_per_s_without_load"] = facts["images"] / (facts["seconds"] - load)
            results[case] = facts
            print(case, json.dumps(facts), flush=True)
    base = results["sequential"]["images_per_s"]
    ratios = {case: round(r["images_per_s"] / base, 2) for case, r in results.items()}
    write_results(
        "batch", {"images": args.images, "size": [512, 512, 3], "cases": results, "speed_vs_sequential": ratios}
    )


if __name__ == "__main__":
    main()

"""The loop as a heartbeat: one store of taps, Learns warm-started and checked against the current
decoder, auto-learn, and a state that answers clicks from memory."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import napari_clipseg as ncs
from conftest import PROJECT_IMAGES, TINY_LEARNING_RATE
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.learning.feature_store import FeatureStore
from napari_clipseg.segmentation.postprocess import labels_from_probabilities

N_IMAGES = PROJECT_IMAGES


def _tower_calls(project):
    """A list that grows by one per image-tower pass of the project's model."""
    calls = []
    project.model.base().clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _verify(project, truth, names):
    for name in names:
        project.verify(name, truth[name])


def test_prelabelling_keeps_the_taps_and_repredicting_runs_no_tower(project, images):
    _, truth = images
    project.prelabel()
    stats = project.store_stats()
    assert stats.entries == N_IMAGES and stats.bytes > 0 and stats.budget > stats.bytes
    calls = _tower_calls(project)
    _verify(project, truth, [f"disc{i}" for i in range(4)])
    outcome = ncs.run(project.iter_learn(steps=60, force=True, learning_rate=TINY_LEARNING_RATE))
    assert outcome.accepted and project.decoder is not None
    assert calls == []  # the verified images' taps came from the store
    project.prelabel()  # every waiting image is stale: made again, by the decoder alone
    assert calls == []
    assert {project.entry(f"disc{i}").decoder for i in range(4, N_IMAGES)} == {project.decoder.name}
    assert all(project.entry(f"disc{i}").generation == 2 for i in range(4, N_IMAGES))


def test_a_damaged_store_entry_is_encoded_again(project, images):
    project.prelabel()
    victim = sorted(project.folder.features.glob("*.safetensors"))[0]
    victim.write_bytes(b"not safetensors")
    shutil.rmtree(project.folder.prelabels)  # the pre-labels lost: all made again
    project.close()
    with ncs.open_project(None, project.folder.root) as reopened:
        calls = _tower_calls(reopened)
        reopened.prelabel()
        assert len(calls) == 1  # only the damaged entry ran the tower
        assert victim.is_file() and victim.read_bytes()[:8] != b"not safe"


def test_the_store_keeps_to_its_budget_least_recently_used_first(tmp_path, tiny_model):
    predictor = ncs.ClipSegPredictor(tiny_model, cache_bytes=0)
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(6)]
    one = FeatureStore(tmp_path / "probe", tiny_model)
    one.encode(predictor, images[0])
    size = one.stats().bytes
    store = FeatureStore(tmp_path / "s", tiny_model, budget=int(3.5 * size))
    predictor.store = store
    for image in images[:3]:
        predictor.encode([image])
    predictor.encode([images[0]])  # used again: the newest now
    predictor.encode([images[3]])  # past the budget: the least recently used (images[1]) goes
    assert store.stats().entries <= 3 and store.stats().bytes <= store.budget
    hits = store.hits
    predictor.encode([images[0]])
    assert store.hits == hits + 1
    with pytest.raises(ValueError, match="budget"):
        FeatureStore(tmp_path / "x", tiny_model, budget=-1)


def test_verify_diffs_against_the_prelabel_that_was_shown(project, images):
    _, truth = images
    project.prelabel()
    shown = project.prelabels("disc5")
    made_by = project.entry("disc5").decoder
    _verify(project, truth, [f"disc{i}" for i in range(4)])
    ncs.run(project.iter_learn(steps=60, force=True, learning_rate=TINY_LEARNING_RATE))
    project.prelabel()  # a re-prediction finishes after the annotator was given disc5
    assert project.entry("disc5").generation == 2
    now = labels_from_probabilities(project.probabilities("disc5"), project.threshold)
    assert not np.array_equal(now, shown)  # what is on disk now is not what the annotator saw
    changed = project.verify("disc5", truth["disc5"])
    assert changed == int(np.count_nonzero(shown != truth["disc5"]))
    record = ncs.read_record(project.folder.verified / "disc5" / "clipseg.json")
    assert record["project"]["generation"] == 1 and record["project"]["decoder"] == made_by


def test_per_class_thresholds_work_in_the_queue_and_next(images, tmp_path, spec):
    folder, _ = images
    options = ncs.SegmentOptions(threshold=(0.3, 0.6))
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc", "ring"], model=spec, options=options) as project:
        name = project.next()
        assert project.threshold == (0.3, 0.6)
        assert project.queue()[0][0] == name
        assert project.prelabels(name).max() <= 2


def test_a_refused_learn_keeps_the_decoder_and_raises_nothing(project, images):
    _, truth = images
    _verify(project, truth, ["disc0", "disc1", "disc2"])
    iou = project.learn(steps=1, learning_rate=1e-12, refiner=False)  # the decoder alone: it cannot improve
    outcome = project.last_learn
    assert not outcome.accepted and project.decoder is None and project.decoders == []
    assert iou == pytest.approx(outcome.current_iou) and "stays as it was" in outcome.message
    assert not outcome.repeated
    project.learn(steps=1, learning_rate=1e-12, refiner=False)
    assert project.last_learn.repeated  # said once: a GUI need not say it again


def test_a_learn_replaces_the_decoder_only_when_better_than_the_current_one(project, images):
    _, truth = images
    _verify(project, truth, [f"disc{i}" for i in range(5)])
    first = project.learn(steps=100, learning_rate=TINY_LEARNING_RATE)
    assert project.last_learn.accepted and first > 0.6
    decoder = project.decoder
    project.verify("disc5", truth["disc5"])
    project.learn(steps=1, learning_rate=1e-12, seed=3, refiner=False)  # cannot be better: it does not change
    assert project.decoder == decoder and len(project.decoders) == 1
    assert project.last_learn.current_iou == pytest.approx(project.last_learn.iou, abs=1e-6)


def test_auto_learn_in_next_never_touches_the_image_on_screen_or_a_verified_one(images, tmp_path, spec):
    folder, truth = images
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=spec, auto_learn=2) as project:
        project.prelabel()
        project.on_screen = "disc7"
        on_screen = (project.folder.prelabels / "disc7" / "clipseg.json").read_bytes()
        first = project.next()
        project.verify(first, truth[first])
        second = project.next(after=first)
        project.verify(second, truth[second])
        assert project.learn_due
        kept = {n: project.verified_labels(n) for n in (first, second)}
        project.next()  # the due Learn, then the waiting images re-predicted
        assert project.last_learn is not None and not project.learn_due
        assert (project.folder.prelabels / "disc7" / "clipseg.json").read_bytes() == on_screen
        for name, labels in kept.items():
            np.testing.assert_array_equal(project.verified_labels(name), labels)
    with pytest.raises(ValueError, match="auto_learn"):
        ncs.open_project(None, tmp_path / "p", auto_learn=-1)


def test_reopening_keeps_the_state_and_the_store(project, images, tmp_path):
    _, truth = images
    project.prelabel()
    _verify(project, truth, ["disc0", "disc1", "disc2"])
    project.skip("disc3")
    ncs.run(project.iter_learn(steps=30, force=True))
    scores = dict(project.queue())
    project.close()
    with ncs.open_project(None, tmp_path / "project") as again:
        assert again.status() == {"new": 0, "pre-labelled": 4, "verified": 3, "skipped": 1}
        assert dict(again.queue()) == pytest.approx(scores)
        assert again.decoder == project.decoder
        calls = _tower_calls(again)
        again.prelabel()  # the stale pre-labels: from the store kept on disk
        assert calls == [] and again.store_stats().entries == N_IMAGES


def test_learning_improves_the_waiting_images_step_by_step(images, tmp_path, spec):
    """Heartbeat: a Learn after every verified image, warm-started, each bounded in steps."""
    folder, truth = images
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=spec, auto_learn=1) as project:
        before = {n: class_scores(project.prelabels(n), truth[n], 1)["iou"] for n in ("disc6", "disc7")}
        for name in [f"disc{i}" for i in range(6)]:
            project.verify(name, truth[name])
            if project.learn_due:
                project.learn(steps=40, learning_rate=TINY_LEARNING_RATE)
        after = {n: class_scores(project.prelabels(n), truth[n], 1)["iou"] for n in ("disc6", "disc7")}
        assert len(project.decoders) >= 2  # several Learns were kept, each from the one before
        assert np.mean(list(after.values())) > np.mean(list(before.values())) + 0.3


def test_cli_verify_takes_corrected_labels_in_and_learns_as_they_come(images, tmp_path, tiny_model_dir, capsys):
    import tifffile

    from napari_clipseg.cli import main

    folder, truth = images
    project_dir = tmp_path / "cli"
    argv = ["project", "prelabel", str(project_dir), "--images", str(folder), "-p", "disc"]
    assert main([*argv, "-m", str(tiny_model_dir), "--precision", "float32"]) == 0
    corrected = tmp_path / "corrected"
    corrected.mkdir()
    for name in ("disc0", "disc1", "disc2"):
        tifffile.imwrite(corrected / f"{name}.tif", truth[name])
    capsys.readouterr()
    assert main(["project", "verify", str(project_dir), "--labels", str(corrected), "--auto-learn", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("verified disc") == 3 and ("Learnt from 2" in err or "stays as it was" in err)
    assert main(["project", "status", str(project_dir)]) == 0
    assert "3 verified" in capsys.readouterr().out
    assert main(["project", "learn", str(project_dir), "--steps", "0"]) == 2
    assert main(["project", "verify", str(project_dir), "--labels", str(tmp_path / "images" / "nothing")]) != 0


def test_the_cli_lists_the_decoders_and_goes_back_to_one(images, tmp_path, tiny_model_dir, capsys):
    from napari_clipseg.cli import main

    folder, truth = images
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=ncs.ModelSpec(str(tiny_model_dir))) as p:
        _verify(p, truth, ["disc0", "disc1", "disc2"])
        for seed in (0, 1):
            ncs.run(p.iter_learn(steps=5, force=True, seed=seed, refiner=False))
        assert p.decoder.name == "002"
    capsys.readouterr()
    assert main(["project", "decoder", str(tmp_path / "p")]) == 0
    listed = capsys.readouterr().out
    assert "* 002" in listed and "  001" in listed and "  base" in listed
    assert main(["project", "decoder", str(tmp_path / "p"), "001"]) == 0
    with ncs.open_project(None, tmp_path / "p") as p:
        assert p.decoder.name == "001" and p.threshold == p.decoders[0]["threshold"]
        assert all(p.entry(n).decoder == "001" for n in p.names if p.state(n) == "pre-labelled")
    assert main(["project", "decoder", str(tmp_path / "p"), "base", "--no-repredict"]) == 0
    assert main(["project", "decoder", str(tmp_path / "p"), "007"]) == 2
    assert "no decoder '007'" in capsys.readouterr().err

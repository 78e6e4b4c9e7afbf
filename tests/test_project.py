"""The annotation loop through the public API: create, review, verify, learn, reopen, export; the
folder survives kills and second openers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

import napari_clipseg as ncs
from conftest import PROJECT_IMAGES, TINY_LEARNING_RATE
from napari_clipseg.errors import ProjectError, ProjectLockedError, ProjectMismatchError
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.project.queue import TIE
from napari_clipseg.project.score import review_score

N_IMAGES = PROJECT_IMAGES


def test_next_prelabels_and_verify_counts_the_changes(project, images):
    _, truth = images
    assert project.status() == {"new": N_IMAGES, "pre-labelled": 0, "verified": 0, "skipped": 0}
    name = project.next()
    assert project.status()["pre-labelled"] == N_IMAGES and name == project.queue()[0][0]
    prelabels = project.prelabels(name)
    assert prelabels.shape == truth[name].shape and prelabels.dtype == np.uint8
    changed = project.verify(name, truth[name])
    assert changed == int(np.count_nonzero(prelabels != truth[name])) > 0
    assert project.state(name) == "verified" and project.next() != name
    np.testing.assert_array_equal(project.verified_labels(name), truth[name])
    assert project.verify(name, truth[name]) == changed  # verifying again compares with the pre-labels
    project.skip(project.next())
    assert project.status() == {"new": 0, "pre-labelled": N_IMAGES - 2, "verified": 1, "skipped": 1}


def test_the_queue_is_ordered_by_the_review_score(project):
    project.prelabel()
    queue = project.queue()
    scores = [score for _, score in queue]
    ranks = [round(score / TIE) for score in scores]  # scores closer than TIE tie
    assert len(queue) == N_IMAGES and ranks == sorted(ranks, reverse=True)
    for rank in set(ranks):  # ties in file order, not in the order of rounding noise
        tied = [name for name, score in queue if round(score / TIE) == rank]
        assert tied == [name for name in project.names if name in tied]
    assert scores[0] == pytest.approx(review_score(project.probabilities(queue[0][0]), project.threshold))


def test_review_score_is_the_expected_share_of_changed_pixels():
    sure = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    unsure = np.array([[[0.35, 0.45], [0.45, 0.35]]], np.float32)
    assert review_score(sure, 0.4) == 0.0
    assert review_score(unsure, 0.4) > 0.4  # near the threshold: a coin flip per pixel
    half = np.full((1, 2, 2), 0.2, np.float32)  # half way to the threshold: a quarter changes
    assert review_score(half, 0.4) == pytest.approx(0.25)


def test_bad_labels_are_refused_with_what_fits(project, images):
    name = project.next()
    shape = images[1][name].shape
    with pytest.raises(ProjectError, match="do not fit the image"):
        project.verify(name, np.zeros((3, 3), np.uint8))
    with pytest.raises(ProjectError, match=r"must lie in 0\.\.1"):
        project.verify(name, np.full(shape, 2, np.uint8))
    with pytest.raises(ProjectError, match="must be integers"):
        project.verify(name, np.zeros(shape, np.float32))
    with pytest.raises(KeyError, match="no image named"):
        project.verify("nope", np.zeros(shape, np.uint8))
    assert project.status()["verified"] == 0


def test_reopening_continues_and_refuses_what_differs(images, tmp_path, spec):
    folder, truth = images
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=spec) as project:
        name = project.next()
        project.verify(name, truth[name])
        with pytest.raises(ProjectLockedError, match="open in another"):
            ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=spec)
        viewer = ncs.open_project(None, tmp_path / "p", read_only=True)  # a second window may look
        assert viewer.status()["verified"] == 1
        with pytest.raises(ProjectError, match="read-only"):
            viewer.verify(name, truth[name])
    with pytest.raises(ProjectMismatchError, match=r"prompts \['disc'\]; got \['cell'\]"):
        ncs.open_project(folder, tmp_path / "p", prompts=["cell"], model=spec)
    other = spec.replace(source=str(tmp_path / "other-model"))
    with pytest.raises(ProjectMismatchError, match="another model \\(source: "):
        ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=other)
    with ncs.open_project(folder, tmp_path / "p", model=spec.replace(device="auto")) as moved:  # another machine
        assert moved.spec.device == "auto" and moved.status()["verified"] == 1
    with ncs.open_project(None, tmp_path / "p") as again:  # the project's own images, prompts and model
        assert again.status()["verified"] == 1 and again.spec == spec
        np.testing.assert_array_equal(again.verified_labels(name), truth[name])
    with pytest.raises(ProjectError, match="not a napari-clipseg project"):
        ncs.open_project(None, tmp_path / "elsewhere")


def test_a_lost_manifest_is_rebuilt_from_the_folder(project, images, tmp_path, spec):
    folder, truth = images
    for name in ("disc0", "disc1"):
        project.verify(name, truth[name])
    project.close()
    (tmp_path / "project" / "project.json").write_text("{ not json")
    with ncs.open_project(folder, tmp_path / "project", prompts=["disc"], model=spec) as rebuilt:
        assert rebuilt.status()["verified"] == 2 and rebuilt.status()["new"] == N_IMAGES - 2


def test_learn_improves_the_prelabels_of_the_others_and_never_touches_verified(project, images):
    _, truth = images
    verified = [f"disc{seed}" for seed in range(6)]
    for name in verified:
        project.verify(name, truth[name])
    before = {name: project.prelabels(name) for name in ("disc6", "disc7")}
    iou = project.learn(steps=100, learning_rate=TINY_LEARNING_RATE)
    assert iou > 0.6 and project.decoder is not None and project.decoder.is_dir()
    assert project.threshold in [round(0.1 + 0.05 * i, 2) for i in range(17)]
    entry = project.decoders[-1]
    assert sorted(entry["images"]) == sorted(verified) and entry["iou"] == pytest.approx(iou)
    for name, old in before.items():
        record = json.loads((project.folder.prelabels / name / "clipseg.json").read_text())
        assert record["model"]["decoder"]["name"] == project.decoder.name  # re-predicted with the new decoder
        new_iou = class_scores(project.prelabels(name), truth[name], 1)["iou"]
        old_iou = class_scores(old, truth[name], 1)["iou"]
        assert new_iou > old_iou + 0.2
    for name in verified:
        np.testing.assert_array_equal(project.verified_labels(name), truth[name])


def test_learning_needs_a_verified_image_and_a_decoder_two(project, images):
    _, truth = images
    with pytest.raises(ProjectError, match="verify at least 1 image before learning"):
        project.learn()
    project.prelabel()
    project.verify("disc0", truth["disc0"])
    with pytest.raises(ProjectError, match="verify at least 2 images before learning"):
        project.learn(refiner=False)  # a decoder needs an image held out


def test_export_writes_the_verified_set_all_or_none(project, images, tmp_path, tiny_model_dir):
    _, truth = images
    with pytest.raises(ValueError, match="no image of the project is verified"):
        project.export(tmp_path / "set")
    for name in ("disc0", "disc3"):
        project.verify(name, truth[name])
    out = project.export(tmp_path / "set", coco=True, instances=True)
    assert sorted(p.name for p in out.iterdir()) == [".napari-clipseg-export.json", "coco.json", "disc0", "disc3"]
    assert sorted(p.name for p in (out / "disc0").iterdir()) == [
        "01_disc.tif",
        "clipseg.json",
        "image.npy",
        "instances.tif",
        "labels.tif",
    ]
    record = ncs.read_record(out / "disc0" / "clipseg.json")
    assert record["project"]["status"] == "verified" and record["classes"] == [{"value": 1, "name": "disc"}]
    assert record["model"]["source"] == str(tiny_model_dir) and record["model"]["sha256"]  # what made the pre-label
    coco = json.loads((out / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["disc"] and coco["annotations"]
    with pytest.raises(FileExistsError):
        project.export(tmp_path / "set")
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_cli_project_status_learn_export(images, tmp_path, tiny_model_dir, capsys):
    from napari_clipseg.cli import main

    folder, truth = images
    project_dir = tmp_path / "cli-project"
    assert main(["project", "status", str(project_dir)]) == 2
    assert "not a napari-clipseg project" in capsys.readouterr().err
    argv = ["project", "prelabel", str(project_dir), "--images", str(folder), "-p", "disc"]
    assert main([*argv, "-m", str(tiny_model_dir), "--precision", "float32"]) == 0
    with ncs.open_project(None, project_dir) as project:
        for name in ("disc0", "disc1", "disc2"):
            project.verify(name, truth[name])
    assert main(["project", "learn", str(project_dir), "--epochs", "2", "--force"]) == 0
    assert main(["project", "status", str(project_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 verified" in out and "decoder: 001" in out
    assert main(["project", "export", str(project_dir), "--out", str(tmp_path / "set")]) == 0
    assert (tmp_path / "set" / "disc0" / "labels.tif").is_file()


#: Opens the project, verifies one image, then verifies or learns a second time and, inside that
#: write, says so on stdout and waits on stdin: the test kills it there (SIGKILL, no clean-up).
_HELD = """
import sys
import numpy as np
import napari_clipseg as ncs
from napari_clipseg.io import outputs
from napari_clipseg.modeling import decoder_files

images, folder, model, what, truths = sys.argv[1:6]
project = ncs.open_project(images, folder, prompts=["disc"], model=ncs.ModelSpec(model, precision="float32"))
truth = {n: np.load(f"{truths}/{n}.npy") for n in ("disc0", "disc1", "disc2")}
project.verify("disc0", truth["disc0"])
project.verify("disc1", truth["disc1"])

def hold(real):
    def held(*args, **kwargs):
        print("inside", flush=True)
        sys.stdin.readline()
        return real(*args, **kwargs)
    return held

if what == "verify":
    outputs.json_writer = hold(outputs.json_writer)  # the labels are staged, the record not yet
    project.verify("disc2", truth["disc2"])
else:
    decoder_files.write_together = hold(decoder_files.write_together)  # trained, about to save
    project.learn(epochs=2, force=True)
"""


@pytest.mark.parametrize("what", ["verify", "learn"])
def test_a_kill_during_verify_or_learn_loses_nothing_verified(images, tmp_path, tiny_model_dir, what):
    folder, truth = images
    (tmp_path / "truth").mkdir()
    for name, labels in truth.items():
        np.save(tmp_path / "truth" / f"{name}.npy", labels)
    project_dir = tmp_path / "killed"
    argv = [
        sys.executable,
        "-c",
        _HELD,
        str(folder),
        str(project_dir),
        str(tiny_model_dir),
        what,
        str(tmp_path / "truth"),
    ]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "inside"
    process.send_signal(signal.SIGKILL)
    process.wait()
    with ncs.open_project(None, project_dir) as reopened:  # the lock died with the process
        assert {n for n in reopened.names if reopened.state(n) == "verified"} == {"disc0", "disc1"}
        np.testing.assert_array_equal(reopened.verified_labels("disc1"), truth["disc1"])
        assert reopened.decoder is None and reopened.decoders == []
        assert reopened.verify("disc2", truth["disc2"]) >= 0  # and the loop goes on

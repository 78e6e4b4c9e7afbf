"""One writer for a project (issue 32): the state's transactions, one pre-label snapshot, and the
folder's last ways to mislead, each as a user or a crash would meet it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_clipseg as ncs
from conftest import TINY_LEARNING_RATE, tree_snapshot
from napari_clipseg.errors import ProjectError, ProjectMismatchError
from napari_clipseg.io.outputs import read_output
from napari_clipseg.segmentation.postprocess import labels_from_probabilities


def test_a_read_only_opening_changes_nothing_and_says_what_it_would_repair(project, images, capsys):
    from napari_clipseg.cli import main

    _, truth = images
    project.prelabel()
    project.verify("disc0", truth["disc0"])
    project.close()
    (project.folder.prelabels / "disc3" / "clipseg.json").write_text("{ damaged")
    (project.folder.verified / "disc0" / "labels.tif").unlink()
    before = tree_snapshot(project.folder.root)
    viewer = ncs.open_project(None, project.folder.root, read_only=True)
    assert tree_snapshot(project.folder.root) == before  # nothing deleted, moved or rewritten
    assert any("disc3" in r for r in viewer.repairs) and any("disc0" in r for r in viewer.repairs)
    assert viewer.state("disc0") != "verified"  # its labels are gone: it does not count
    assert main(["project", "status", str(project.folder.root)]) == 0
    assert "to repair:" in capsys.readouterr().out
    assert tree_snapshot(project.folder.root) == before
    with ncs.open_project(None, project.folder.root) as writable:  # repaired now: labelled again, record kept
        assert writable.state("disc0") == "pre-labelled" and writable.state("disc3") == "new"
        assert list((project.folder.root / "outdated").glob("disc0.*/clipseg.json"))
        assert "disc0" in dict(writable.queue()) or writable.next() is not None


def test_the_newest_verified_are_held_out_after_a_reopen(project, images):
    _, truth = images
    project.prelabel()  # pre-labelled in file order: disc0 first
    for name in ["disc3", "disc2", "disc1", "disc0"]:  # verified in the other order
        project.verify(name, truth[name])
    project.close()
    with ncs.open_project(None, project.folder.root) as reopened:
        assert reopened.entry("disc0").verified_at > reopened.entry("disc3").verified_at
        reopened.learn(repredict=False, steps=2)
        assert reopened.last_learn.held_out == ("disc0",)  # the newest verified, not the newest pre-labelled


def test_a_prelabel_is_shown_written_and_recorded_at_its_decoders_threshold(project, images, monkeypatch):
    from napari_clipseg.learning import train

    _, truth = images
    monkeypatch.setattr(train, "best_threshold", lambda *args: (0.9, 1.0))  # a decoder that keeps 0.9
    project.prelabel()
    for name in ("disc0", "disc1"):
        project.verify(name, truth[name])
    project.learn(repredict=False, force=True, learning_rate=TINY_LEARNING_RATE, refiner=False)
    assert project.threshold == 0.9 and project.entry("disc2").decoder is None  # stale: the base made it
    probabilities = project.probabilities("disc2")
    np.testing.assert_array_equal(project.prelabels("disc2"), labels_from_probabilities(probabilities, 0.4))
    project.verify("disc2", truth["disc2"])
    record = json.loads((project.folder.verified / "disc2" / "clipseg.json").read_text())
    assert record["project"]["threshold"] == 0.4 and record["project"]["decoder"] is None
    project.prelabel(["disc3"])  # re-predicted by decoder 001: written, shown and scored at 0.9
    assert project.entry("disc3").decoder == "001"
    written = np.asarray(read_output(project.folder.prelabels / "disc3"))
    shown = project.prelabels("disc3")
    np.testing.assert_array_equal(shown, written)
    np.testing.assert_array_equal(shown, labels_from_probabilities(project.probabilities("disc3"), 0.9))


def test_a_damaged_manifest_is_said_and_rebuilt_only_with_what_it_was_made_with(project, images, spec, caplog):
    from napari_clipseg.cli import main

    folder, truth = images
    project.prelabel()
    project.verify("disc0", truth["disc0"])
    project.close()
    root = project.folder.root
    for damage in ("{ trunc", "[1, 2]", json.dumps({"schema": "another.tool"})):
        (root / "project.json").write_text(damage)
        with pytest.raises(ProjectError, match=r"project.json is damaged: .*rebuild it .*images, prompts and model"):
            ncs.open_project(None, root)
        assert main(["project", "status", str(root)]) != 0
    with pytest.raises(ProjectMismatchError, match="verified labels of disc0 are of disc, not cell"):
        ncs.open_project(folder, root, prompts=["cell"], model=spec)
    with pytest.raises(ProjectMismatchError, match=r"pre-label of .* was made by"):
        ncs.open_project(folder, root, prompts=["disc"], model=ncs.ModelSpec(str(root.parent / "other-model")))
    assert (root / "verified" / "disc0" / "labels.tif").is_file()  # refused: nothing touched
    with ncs.open_project(folder, root, prompts=["disc"], model=spec) as rebuilt:
        assert rebuilt.state("disc0") == "verified" and rebuilt.status()["pre-labelled"] == len(truth) - 1


def test_a_damaged_prelabel_array_is_made_again_where_it_is_asked_for(project, images):
    _, truth = images
    project.prelabel()
    top = project.top()
    np.save(project.folder.prelabels / top / "probabilities.npy", np.zeros(3, dtype=object), allow_pickle=True)
    labels = project.prelabels(top)  # made again, never 'allow_pickle'
    assert labels.shape == truth[top].shape and project.entry(top).generation == 2
    assert project.verify(top, truth[top]) >= 0 and project.state(top) == "verified"


def test_learning_from_images_that_label_nothing_is_refused_before_training(project, images):
    _, truth = images
    project.prelabel()
    for name in ("disc0", "disc1", "disc2"):
        project.verify(name, np.zeros_like(truth[name]))
    for force in (False, True):
        with pytest.raises(ProjectError, match="label nothing"):
            project.learn(force=force)
    assert project.decoders == [] and not list(project.folder.decoders.glob("*"))


def test_mistakes_are_refused_before_any_work_and_leave_nothing(images, tmp_path, spec, project, capsys):
    from napari_clipseg.cli import main

    folder, truth = images
    with pytest.raises(ProjectError, match="at least one class prompt"):
        ncs.open_project(folder, tmp_path / "empty", prompts=[], model=spec)
    assert not (tmp_path / "empty").exists()
    with pytest.raises(ValueError, match="epochs must be a whole number of at least 1"):
        project.learn(epochs=0)
    assert not project.model.loaded  # refused before the model loads
    project.prelabel()
    for name in ("disc0", "disc1"):
        project.verify(name, truth[name])
    project.close()
    (tmp_path / "file.txt").write_text("notes")
    root = str(project.folder.root)
    capsys.readouterr()
    assert main(["project", "export", root, "--out", str(tmp_path / "file.txt" / "set")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
    for action in (["learn", root, "--steps", "1"], ["decoder", root, "base", "--no-repredict"]):
        assert main(["project", *action, "--device", "cpu", "--precision", "float32"]) == 0, capsys.readouterr().err


def test_prelabel_names_every_failed_image(images, tmp_path, tiny_model_dir, capsys):
    from napari_clipseg.cli import main

    folder, _ = images
    (folder / "broken.npy").write_bytes(b"not an array")
    code = main(
        ["project", "prelabel", str(tmp_path / "p"), "--images", str(folder), "-p", "disc", "-m", str(tiny_model_dir)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "failed: " in err and "broken.npy" in err


def test_a_failed_write_of_the_manifest_keeps_the_earlier_state(project, images, monkeypatch):
    """Transactions persist before they return: a write that fails leaves the file as it was."""
    project.prelabel()
    before = (project.folder.root / "project.json").read_text()
    monkeypatch.setattr(project.folder, "write_manifest", lambda manifest: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError, match="full"):
        project.skip("disc1")
    assert (project.folder.root / "project.json").read_text() == before
    monkeypatch.undo()


def test_the_loop_reads_in_one_sitting():
    """Each class of the project package (the facade and every part of the loop) stays small."""
    import ast
    from pathlib import Path

    folder = Path(ncs.__file__).parent / "project"
    big = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in folder.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 160
    ]
    assert big == []
    writers = [p.name for p in folder.glob("*.py") if "write_manifest(" in p.read_text() and p.name != "state.py"]
    assert writers == ["folder.py"]  # where it is defined; only the state calls it


def test_a_dropped_alias_is_gone_and_the_core_has_one_outcome():
    from napari_clipseg import errors
    from napari_clipseg.learning import core, finetune, train

    assert not hasattr(errors, "TrainingRefusedError") and not hasattr(core, "_held_out_iou")
    assert not hasattr(finetune, "_Example")
    assert finetune.FineTuneResult is train.FineTuneResult


def test_a_full_disk_stops_prelabelling_and_says_so(project, images, small_disk, monkeypatch, capsys):
    import os
    import shutil

    from napari_clipseg.cli import main
    from napari_clipseg.project import prelabel

    monkeypatch.setattr(prelabel, "CHUNK", 2)
    project.close()
    (small_disk / "filler").write_bytes(b"x" * (120 << 10))  # nearly full, for real
    shutil.rmtree(project.folder.staging, ignore_errors=True)
    os.symlink(small_disk, project.folder.staging)  # pre-labels are written there first
    assert main(["project", "prelabel", str(project.folder.root)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no space left" in err.lower()
    failed = [line for line in err.splitlines() if line.startswith("napari-clipseg: failed: ")]
    if failed:  # the images were tried: the first chunk only, each named, then the job stopped
        assert len(failed) == 2 and all("No space left on device" in line for line in failed)
        assert "stopped: the disk is full" in err
    reopened = ncs.open_project(None, project.folder.root, read_only=True)
    assert reopened.status()["new"] == len(images[1])  # nothing half-taken in


def test_the_image_on_screen_is_renewed_only_when_asked_and_shown_only_when_told(project, images):
    from napari_clipseg.segmentation.results import run

    _, truth = images
    project.prelabel()
    for name in ("disc0", "disc1"):
        project.verify(name, truth[name])
    on_screen = project.top()
    old = project.prelabels(on_screen)  # shown
    project.on_screen = on_screen
    project.learn(steps=1, force=True, learning_rate=TINY_LEARNING_RATE)  # kept; re-predicts the others
    assert project.decoder is not None and project.entry(on_screen).decoder != project.decoder.name
    renewed = run(project.iter_renew(on_screen))
    assert renewed is not None and project.entry(on_screen).decoder == project.decoder.name
    assert run(project.iter_renew(on_screen)) is None  # current now: nothing to do
    labels = np.where(old > 0, 0, 1).astype(np.uint8)
    assert project.verify(on_screen, labels) == int(np.count_nonzero(old != labels))  # not shown: the old counts
    other = project.top()
    project.prelabels(other)  # shown, then a Learn while it is on screen
    project.on_screen = other
    project.learn(steps=1, force=True, learning_rate=TINY_LEARNING_RATE)
    renewed = run(project.iter_renew(other))
    assert renewed is not None and renewed.decoder == project.decoder.name
    assert project.verify(other, project.show(renewed)) == 0  # shown now: the new one counts


def test_a_model_naming_a_decoder_the_project_learnt_reopens_it(project, images, spec):
    """The dock's Segment mode runs the project's decoder in use; the dock's model then names it."""
    _, truth = images
    project.prelabel()
    for name in ("disc0", "disc1"):
        project.verify(name, truth[name])
    project.learn(steps=1, force=True, learning_rate=TINY_LEARNING_RATE, repredict=False)
    learnt, root = project.decoder, project.folder.root
    project.close()
    with ncs.open_project(None, root, model=spec.replace(decoder=str(learnt))) as again:
        assert again.decoder == learnt and again.current_spec().decoder == str(learnt)
    elsewhere = root.parent / "elsewhere"  # a decoder folder outside the project: another model
    elsewhere.mkdir()
    with pytest.raises(ProjectMismatchError, match="another model"):
        ncs.open_project(None, root, model=spec.replace(decoder=str(elsewhere)))


def test_the_annotator_sets_the_threshold_of_the_decoder_in_use(project, images):
    from napari_clipseg.project.score import review_score

    project.prelabel()
    name = project.top()
    probabilities = project.probabilities(name)
    project.set_threshold(0.3)
    assert project.threshold == 0.3
    np.testing.assert_array_equal(project.prelabels(name), labels_from_probabilities(probabilities, 0.3))
    assert dict(project.queue())[name] == pytest.approx(review_score(probabilities, 0.3))  # scored again
    with pytest.raises(ValueError, match="threshold"):
        project.set_threshold(1.5)
    root = project.folder.root
    project.close()
    with ncs.open_project(None, root) as again:  # kept with the project
        assert again.threshold == 0.3

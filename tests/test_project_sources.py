"""Images that change under a project (issue 27, class 3): each image's bytes are pinned at its first
pre-label, so labels are never paired with other pixels; a rewritten image is re-queued (verified
labels kept in ``outdated/``), a gone one waits outside the loop until it is found again (by name,
by content, beside the project) or dropped; paths hold from any working folder."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import napari_clipseg as ncs
from napari_clipseg.errors import ProjectError


def _rewrite(path, seed=7):
    image = np.load(path)
    np.save(path, np.random.default_rng(seed).random(image.shape).astype(image.dtype))


def _verified_two(project, truth):
    project.prelabel()
    for name in ("disc0", "disc1"):
        project.verify(name, truth[name])


def test_a_rewritten_verified_image_is_labelled_anew_and_its_labels_kept(project, images, tmp_path, caplog):
    folder, truth = images
    _verified_two(project, truth)
    project.close()
    _rewrite(folder / "disc0.npy")
    os.utime(folder / "disc1.npy")  # touched, same bytes: the same image
    with ncs.open_project(None, project.folder.root) as again:
        assert again.state("disc0") == "new" and again.state("disc1") == "verified"
        assert any("disc0 changed on disk after it was verified" in n for n in again.notices)
        kept = list((again.folder.root / "outdated").glob("disc0.*"))
        assert len(kept) == 1 and "rewritten" in (kept[0] / "WHY.txt").read_text()
        np.testing.assert_array_equal(np.asarray(ncs.io.outputs.read_output(kept[0])), truth["disc0"])
        assert again.next() is not None and again.state("disc0") == "pre-labelled"
        out = again.export(tmp_path / "set")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["disc1"]
    assert "disc0 changed on disk" in caplog.text


def test_a_rewritten_prelabelled_image_is_prelabelled_again(project, images):
    folder, _ = images
    project.prelabel()
    before = project.probabilities("disc2")
    project.close()
    _rewrite(folder / "disc2.npy")
    with ncs.open_project(None, project.folder.root) as again:
        assert again.state("disc2") == "new" and "disc2 changed on disk" in " ".join(again.notices)
        again.prelabel()
        assert not np.allclose(again.probabilities("disc2"), before)


def test_an_image_of_another_shape_can_be_verified_again(project, images):
    folder, truth = images
    _verified_two(project, truth)
    project.close()
    np.save(folder / "disc0.npy", np.zeros((40, 48), np.float32))
    with ncs.open_project(None, project.folder.root) as again:
        assert again.state("disc0") == "new"
        again.verify("disc0", np.zeros((40, 48), np.uint8))
        assert again.verified_labels("disc0").shape == (40, 48)


def test_an_image_changed_during_the_session_is_never_verified_with_other_pixels(project, images):
    folder, _ = images
    project.prelabel()
    shown = project.prelabels("disc3")
    _rewrite(folder / "disc3.npy")
    with pytest.raises(ProjectError, match=r"disc3 changed on disk.*nothing was stored"):
        project.verify("disc3", shown)
    assert project.state("disc3") == "new"
    assert not (project.folder.verified / "disc3").exists()


def test_a_gone_image_waits_and_blocks_nothing_then_is_dropped(project, images, tmp_path):
    folder, truth = images
    _verified_two(project, truth)
    project.verify("disc2", truth["disc2"])
    os.remove(folder / "disc1.npy")
    os.remove(folder / "disc4.npy")
    project.close()
    with ncs.open_project(None, project.folder.root) as again:
        assert again.missing() == ["disc1", "disc4"]
        assert "disc1: its image" in again.notices[0] and "drop it" in again.notices[0]
        assert "disc4" not in dict(again.queue()) and again.next() not in ("disc1", "disc4")
        assert sorted(p.name for p in again.export(tmp_path / "set").iterdir() if p.is_dir()) == ["disc0", "disc2"]
        again.learn(steps=2, repredict=False)  # learns from the two whose images are there
        assert set(again.last_learn.training + again.last_learn.held_out) == {"disc0", "disc2"}
        again.drop("disc1")
        again.drop("disc4")
        assert "disc1" not in again.names and (again.folder.root / "outdated").is_dir()
    np.save(folder / "disc1.npy", np.zeros((64, 64), np.uint8))  # found again: a dropped name stays out
    with ncs.open_project(folder, project.folder.root) as reopened:
        assert "disc1" not in reopened.names and reopened.missing() == []


def test_a_moved_folder_or_a_renamed_file_is_found_again_by_content(project, images, tmp_path):
    folder, truth = images
    _verified_two(project, truth)
    project.close()
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    os.rename(moved / "disc1.npy", moved / "renamed.npy")
    with ncs.open_project(None, project.folder.root) as lost:
        assert len(lost.missing()) == 8
    with ncs.open_project(moved, project.folder.root) as found:
        assert found.missing() == [] and "renamed" not in found.names
        assert found.state("disc0") == "verified" and found.state("disc1") == "verified"
        assert found.item("disc1").path == moved / "renamed.npy"
        np.testing.assert_array_equal(found.verified_labels("disc1"), truth["disc1"])


def test_a_project_moved_with_its_images_finds_them_beside_it(images, tmp_path, spec):
    folder, truth = images
    with ncs.open_project(folder, tmp_path / "project", prompts=["disc"], model=spec) as project:
        _verified_two(project, truth)
    shutil.copytree(tmp_path / "images", tmp_path / "elsewhere" / "images")
    shutil.copytree(tmp_path / "project", tmp_path / "elsewhere" / "project")
    shutil.rmtree(tmp_path / "images")
    with ncs.open_project(None, tmp_path / "elsewhere" / "project") as moved:
        assert moved.missing() == []
        assert moved.item("disc0").path == tmp_path / "elsewhere" / "images" / "disc0.npy"
        assert moved.state("disc0") == "verified"


def test_relative_paths_hold_from_any_working_folder(images, tmp_path, spec, monkeypatch):
    folder, truth = images
    model = tmp_path / "model-link"
    model.symlink_to(spec.source)
    monkeypatch.chdir(tmp_path)
    relative = spec.replace(source=os.path.relpath(spec.source) + "/")  # trailing slash, relative
    with ncs.open_project("images", "project", prompts=["disc"], model=relative) as project:
        _verified_two(project, truth)
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    np.save(other / "images" / "disc0.npy", np.zeros((64, 64), np.uint8))  # the same names, other pixels
    monkeypatch.chdir(other)
    with ncs.open_project(None, tmp_path / "project", model=spec.replace(source=str(model))) as reopened:
        assert reopened.item("disc0").path == folder / "disc0.npy"  # not ./images from here
        assert reopened.missing() == []
        out = reopened.export(tmp_path / "set")
    np.testing.assert_array_equal(np.load(out / "disc0" / "image.npy"), np.load(folder / "disc0.npy"))


def test_read_only_export_leaves_out_an_image_changed_since_it_was_verified(project, images, tmp_path):
    folder, truth = images
    _verified_two(project, truth)
    project.close()
    _rewrite(folder / "disc1.npy")
    reader = ncs.open_project(None, project.folder.root, read_only=True)
    assert reader.state("disc1") == "verified" and "disc1" in reader.missing()  # nothing moved by a reader
    assert sorted(p.name for p in reader.export(tmp_path / "set").iterdir() if p.is_dir()) == ["disc0"]
    assert (project.folder.verified / "disc1").is_dir()


def test_cli_status_names_gone_images_and_drop_takes_them_out(project, images, capsys):
    from napari_clipseg.cli import main

    folder, truth = images
    _verified_two(project, truth)
    project.close()
    os.remove(folder / "disc1.npy")
    root = str(project.folder.root)
    assert main(["project", "status", root]) == 0
    out = capsys.readouterr()
    assert "1 image(s) gone" in out.out and "disc1" in out.out and "disc1: its image" in out.err
    assert main(["project", "drop", root, "nope"]) == 2 and "no image named nope" in capsys.readouterr().err
    assert main(["project", "drop", root, "disc1"]) == 0
    assert "image(s) gone" not in capsys.readouterr().out
    assert len(list((project.folder.root / "outdated").glob("disc1.*"))) == 1


def test_prelabelling_on_workers_then_here_redoes_nothing(images, tmp_path, spec):
    from napari_clipseg.datasets.settings import ComputeSettings

    folder, _ = images
    auto = spec.replace(precision="auto")  # each worker process would time and choose on its own
    with ncs.open_project(folder, tmp_path / "p", ["disc"], auto, compute=ComputeSettings(workers=2)) as project:
        first = project.prelabel()
        assert [row.status for row in first.rows] == ["done"] * 8
        chosen = project.model.base().info.precision
    with ncs.open_project(None, tmp_path / "p") as again:
        assert again.status()["pre-labelled"] == 8 and again.prelabel() is None  # nothing to redo
        records = [ncs.io.records.read_record(again.folder.prelabels / n / "clipseg.json") for n in again.names]
    assert {r["model"]["precision"] for r in records} == {chosen}

"""Nothing lost in a project folder (issue 27, the first classes): names that never nest or escape,
a manifest that is checked before it is trusted, exports that never replace the project or the
images, an interrupted re-verify put back, and refused creations that leave nothing behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import napari_clipseg as ncs
from napari_clipseg.errors import ProjectError
from napari_clipseg.project.export import MARK, choose_export_folder


def test_names_that_would_nest_are_refused_and_leave_nothing(tmp_path, spec):
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    np.save(images / "a.npy", np.zeros((32, 32), np.uint8))
    np.save(images / "a" / "b.npy", np.zeros((32, 32), np.uint8))
    with pytest.raises(ProjectError, match=r"'a' and 'a/b' would share a folder .*rename the file a or the folder a/"):
        ncs.open_project(images, tmp_path / "p", prompts=["disc"], model=spec)
    assert not (tmp_path / "p").exists()  # a refused creation leaves no folder and no lock


def _manifest(project_dir):
    return json.loads((project_dir / "project.json").read_text())


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda m: m["images"][0].update(name="../escaped"), "not a plain relative name"),
        (lambda m: m["images"][0].update(name="/etc/x"), "not a plain relative name"),
        (lambda m: m.update(prompts="disc"), "'prompts' is str"),
        (lambda m: m.update(schema_version="1"), "schema_version is '1', not a number"),
        (lambda m: m.pop("model"), "it has no 'model'"),
        (lambda m: m["images"].append(["x"]), "an image entry is"),
    ],
)
def test_an_edited_manifest_is_checked_before_it_is_trusted(project, images, edit, says):
    project.prelabel(["disc0"])
    project.close()
    manifest = _manifest(project.folder.root)
    edit(manifest)
    (project.folder.root / "project.json").write_text(json.dumps(manifest))
    with pytest.raises(ProjectError, match=says) as error:
        ncs.open_project(None, project.folder.root)
    assert "damaged" in str(error.value) or "plain relative" in str(error.value)
    assert not (project.folder.root.parent / "escaped").exists()


def test_export_never_replaces_the_project_or_the_images(project, images, tmp_path):
    folder, truth = images
    project.verify("disc0", truth["disc0"])
    before = sorted(p.name for p in folder.iterdir())
    for target in (project.folder.root, folder, tmp_path, project.folder.root / "prelabels"):
        with pytest.raises(ValueError, match=r"project folder|the project's images"):
            project.export(target, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert project.state("disc0") == "verified" and (project.folder.root / "project.json").is_file()
    assert project.export(tmp_path / "set").is_dir()


def test_a_verify_killed_between_its_two_renames_is_put_back(project, images):
    _, truth = images
    project.verify("disc1", truth["disc1"])
    project.close()
    aside = project.folder.staging / "old-interrupted"  # where a re-verify moved it before the kill
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(project.folder.verified / "disc1", aside)
    (project.folder.staging / "new-half-written").mkdir()
    with ncs.open_project(None, project.folder.root) as reopened:
        assert reopened.state("disc1") == "verified"
        np.testing.assert_array_equal(reopened.verified_labels("disc1"), truth["disc1"])
        assert not project.folder.staging.exists()  # the leftovers are gone


def test_a_project_that_never_did_anything_takes_new_settings(images, tmp_path, spec):
    folder, _ = images
    first_try = spec.replace(source=str(tmp_path / "gone"))  # a model that never loaded (a typo, offline)
    ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=first_try).close()
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=spec) as again:  # the corrected try
        assert again.spec == spec
    with pytest.raises(ProjectError, match="not a napari-clipseg project"):
        ncs.open_project(None, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_cli_prelabel_without_a_model_uses_the_default_and_says_offline_at_once(images, tmp_path, capsys):
    from napari_clipseg.cli import main

    folder, _ = images
    argv = ["project", "prelabel", str(tmp_path / "p"), "--images", str(folder), "-p", "disc"]
    assert main(argv) == 2  # the tests are offline: the default weights are not cached
    err = capsys.readouterr().err
    assert "CIDAS/clipseg-rd64-refined" in err and "NoneType" not in err
    assert not (tmp_path / "p").exists()  # nothing made: the corrected command works


def test_a_damaged_prelabel_is_made_again_and_clear_messages(project, images, tmp_path, capsys):
    from napari_clipseg.cli import main

    _, truth = images
    project.prelabel()
    project.verify("disc0", truth["disc0"])
    with pytest.raises(TypeError, match=r"unknown Learn setting\(s\) epohcs; the settings are .*epochs"):
        project.learn(epohcs=3)
    project.close()
    (project.folder.prelabels / "disc2" / "clipseg.json").write_text("{ damaged")
    with ncs.open_project(None, project.folder.root) as reopened:
        assert reopened.state("disc2") == "new"  # its own output, damaged: removed, made again
        assert reopened.next() is not None and reopened.state("disc2") == "pre-labelled"
        with pytest.raises(ncs.errors.ProjectLockedError, match="already open here"):
            ncs.open_project(None, project.folder.root)
    root = str(project.folder.root)
    assert main(["project", "status", root, "--queue", "-3"]) == 2 and "--queue must be 0" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for overwrite in ([], ["--overwrite"]):  # a folder with other files: refused, --overwrite or not
        assert main(["project", "export", root, "--out", str(tmp_path / "taken"), *overwrite]) == 1
        assert "did not write (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert main(["project", "export", root, "--out", str(tmp_path / "set"), "--coco"]) == 0
    assert main(["project", "export", root, "--out", str(tmp_path / "set")]) == 2  # an earlier export: asks
    assert "--overwrite" in capsys.readouterr().err
    assert main(["project", "export", root, "--out", str(tmp_path / "set"), "--coco", "--overwrite"]) == 0
    coco = json.loads((tmp_path / "set" / "coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["disc0/image.npy"]  # the file a COCO reader opens
    assert (tmp_path / "set" / "disc0" / "image.npy").is_file()


def test_a_schema_1_project_opens_and_is_upgraded(project, images):
    _, truth = images
    project.prelabel()
    project.verify("disc0", truth["disc0"])
    project.skip("disc1")
    project.close()
    manifest = _manifest(project.folder.root)
    names = [(e["name"], e["path"]) for e in manifest["images"]]
    manifest.update(schema_version=1, images=[{"name": n, "path": p} for n, p in names], skipped=["disc1"])
    manifest["scores"] = {"disc2": {"key": ["old"], "score": 0.5}}
    (project.folder.root / "project.json").write_text(json.dumps(manifest))
    with ncs.open_project(None, project.folder.root) as old:
        assert old.status() == {"new": 0, "pre-labelled": 6, "verified": 1, "skipped": 1}
        assert all(score >= 0 for _, score in old.queue())
    upgraded = _manifest(project.folder.root)
    assert upgraded["schema_version"] == 2 and "skipped" not in upgraded and "scores" not in upgraded
    assert next(e for e in upgraded["images"] if e["name"] == "disc1")["skipped"] is True


def test_verified_work_is_flushed_to_the_disk_before_it_is_called_done(project, images, monkeypatch):
    """A power cut after "verified" loses nothing: the labels, the record and the folders that hold
    their new names are flushed (fsync) before verify returns; so are the manifest and decoders."""
    _, truth = images
    project.prelabel(["disc0", "disc1"])
    flushed = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    project.verify("disc0", truth["disc0"])
    root = str(project.folder.root.resolve())
    names = {os.path.relpath(path, root) for path in flushed if path.startswith(root)}
    assert "verified" in names  # the folder that holds the new name, after the rename
    assert any(n.startswith(".staging/new-") and "/" not in n[len(".staging/") :] for n in names)  # the staged folder
    assert any(n.startswith(".staging/new-") and n.endswith("labels.tif") for n in names)
    assert any(n.startswith(".staging/new-") and n.endswith("clipseg.json") for n in names)
    flushed.clear()
    project.skip("disc2")
    assert any(os.path.basename(p).startswith(".project.") for p in flushed)  # the manifest's file, then
    assert root in flushed  # the folder its new name is in
    flushed.clear()
    project.verify("disc1", truth["disc1"])
    project.learn(steps=1, force=True, repredict=False)
    assert any(p.endswith(".safetensors.tmp") for p in flushed) and any(p.endswith("decoders/001") for p in flushed)


def test_an_export_killed_midway_or_at_its_swap_leaves_the_earlier_set(project, images, tmp_path):
    _, truth = images
    project.verify("disc0", truth["disc0"])
    first = project.export(tmp_path / "set")
    os.replace(first, tmp_path / ".set.old-killed")  # killed after moving the old set aside, before the swap
    (tmp_path / ".set.partial-killed").mkdir()  # and a half-written set
    project.verify("disc1", truth["disc1"])
    with pytest.raises(FileExistsError):  # the old set is back, so it is not replaced without overwrite
        project.export(tmp_path / "set")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [MARK, "disc0"]
    assert project.export(tmp_path / "set", overwrite=True).is_dir()
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [MARK, "disc0", "disc1"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".set")) == []


def test_an_export_never_takes_what_it_did_not_write(project, images, tmp_path):
    _, truth = images
    project.verify("disc0", truth["disc0"])
    (tmp_path / "empty").mkdir()
    assert (project.export(tmp_path / "empty") / "disc0" / "labels.tif").is_file()  # an empty folder is new
    (tmp_path / "empty" / "notes.txt").write_text("mine")  # the annotator's file beside an earlier export
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"did not write \(notes.txt\).*nothing was changed"):
            project.export(tmp_path / "empty", overwrite=overwrite)
    assert (tmp_path / "empty" / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.tif").write_bytes(b"x")
    (mine / MARK).write_text(json.dumps({"project": str(tmp_path / "another-project"), "entries": ["a.tif"]}))
    assert project.export(tmp_path / "set").is_dir()
    # what the dock does with a picked folder: a new set inside one with other files, or the earlier set
    assert choose_export_folder(project, tmp_path / "new") == (tmp_path / "new", False)
    assert choose_export_folder(project, tmp_path / "set") == (tmp_path / "set", True)  # this project's set
    inside = mine / f"{project.folder.root.name}-training-set"
    assert choose_export_folder(project, mine) == (inside, False)  # another project's set: not replaced
    project.export(inside)
    assert choose_export_folder(project, mine) == (inside, True)
    (inside / "notes.txt").write_text("mine")
    assert choose_export_folder(project, mine) == (mine / f"{inside.name}-2", False)


def test_a_full_disk_during_a_learn_is_said_as_such_and_keeps_the_decoder(project, images, small_disk):
    _, truth = images
    project.verify("disc0", truth["disc0"])
    project.verify("disc1", truth["disc1"])
    (small_disk / "filler").write_bytes(b"x" * (120 << 10))  # nearly full, for real
    os.symlink(small_disk, project.folder.decoders)
    with pytest.raises(OSError, match=r"no space left on the device while writing .*decoder.*nothing was written"):
        project.learn(steps=1, force=True, repredict=False)
    assert project.decoder is None and not any(small_disk.glob("0*"))
    assert project.state("disc0") == "verified"


def test_a_damaged_verified_record_is_said_and_its_labels_never_overwritten(project, images, tmp_path, caplog):
    _, truth = images
    for name in ("disc0", "disc1", "disc2"):
        project.verify(name, truth[name])
    (project.folder.verified / "disc1" / "clipseg.json").write_text("{ damaged")
    assert sorted(p.name for p in project.export(tmp_path / "set").iterdir()) == [MARK, "disc0", "disc2"]
    assert "verified labels of disc1 cannot be read" in caplog.text
    project.learn(steps=1, force=True, repredict=False)  # learns from the two it can read
    assert "left out of the Learn: the verified labels of disc1" in caplog.text
    project.verify("disc1", np.zeros_like(truth["disc1"]))  # verified again: the old folder is kept
    kept = list((project.folder.root / "outdated").glob("disc1.*"))
    assert len(kept) == 1 and (kept[0] / "labels.tif").is_file()


def test_cli_project_mistakes_exit_2_and_a_precision_asked_for_is_used(project, images, monkeypatch, capsys):
    from napari_clipseg.cli import main
    from napari_clipseg.project import open as project_open

    project.close()
    root = str(project.folder.root)
    assert main(["project", "prelabel", root, "-p", "other"]) == 2
    assert "made with prompts" in capsys.readouterr().err
    assert main(["project", "prelabel", root, "--images", "nothere/"]) == 2
    assert "nothere/" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["segment", "--sample", "astronaut", "--treshold", "0.3", "-p", "x", "-o", "o.tif"])
    assert usage.value.code == 2 and "unknown option --treshold (did you mean --threshold?)" in capsys.readouterr().err
    opened = []
    real = project_open.open_project
    monkeypatch.setattr(project_open, "open_project", lambda *a, **k: opened.append(a[3]) or real(*a, **k))
    assert main(["project", "prelabel", root, "--precision", "int8"]) == 0
    assert opened[-1].precision == "int8" and opened[-1].source == project.spec.source

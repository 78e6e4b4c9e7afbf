"""Pre-labelling datasets through the public API: outputs, equality with segment(), resume, failure
isolation, formats (OME-Zarr, COCO), inputs with pixel sizes, examples from files."""

from __future__ import annotations

import json
import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

import napari_clipseg as ncs
from conftest import DATASET_PROMPTS as PROMPTS
from conftest import output_files as _files
from napari_clipseg.datasets.steps import ExampleFile, parse_example
from napari_clipseg.io.inputs import find_inputs, open_image
from napari_clipseg.io.outputs import read_output
from napari_clipseg.io.records import object_table, read_record


def test_every_input_gets_its_outputs_and_record(dataset, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    report = ncs.segment_dataset(
        dataset["photo"].parent, PROMPTS, out, model=str(tiny_model_dir), instances=True, probabilities=True
    )
    assert [r.status for r in report.rows] == ["done"] * 3 and report.ok
    assert sorted(r.name for r in report.rows) == sorted(dataset)
    for name, source in dataset.items():
        record = read_record(out / name / "clipseg.json")
        assert [c["name"] for c in record["classes"]] == PROMPTS
        assert record["batch"]["input"] == str(source) and len(record["batch"]["key"]) == 64
        labels = read_output(out / name, "labels")
        probabilities = read_output(out / name, "probabilities")
        instances = read_output(out / name, "instances")
        assert labels.shape == instances.shape == probabilities.shape[1:]
        assert probabilities.shape[0] == 2 and record["instance_count"] == int(instances.max())
        assert sum(record["counts"].values()) == int(np.count_nonzero(labels))
    stack = read_record(out / "sub/stack" / "clipseg.json")
    assert stack["image"]["pixel_size"] == {"z": 2.0, "y": 0.25, "x": 0.5} and stack["image"]["axes"] == "ZYX"
    with tifffile.TiffFile(out / "sub/stack" / "labels.tif") as tif:  # the pixel size travels in the TIFF too
        assert open_image(out / "sub/stack" / "labels.tif").pixel_size == pytest.approx({"y": 0.25, "x": 0.5})
        assert tif.series[0].shape == (9, 64, 70)
    table = (out / "report.csv").read_text().splitlines()
    assert table[0].startswith("input,name,status") and len(table) == 4
    assert json.loads((out / "report.json").read_text())["rows"][0]["status"] == "done"


def test_batch_labels_equal_segment_with_the_same_settings(dataset, tiny_model, tmp_path):
    """A stack split into parts (4 + 4 + 1 planes) gives the labels one segment() call gives."""
    options = ncs.SegmentOptions(threshold=0.45, min_size=3)
    out = tmp_path / "out"
    ncs.segment_dataset(list(dataset.values()), PROMPTS, out, model=tiny_model, options=options, planes_per_task=4)
    for name, source in dataset.items():
        expected = ncs.segment(open_image(source).data, PROMPTS, model=tiny_model, options=options)
        np.testing.assert_array_equal(read_output(out / name.split("/")[-1]), expected)


def test_split_stack_is_byte_identical_to_one_part(dataset, tiny_model, tmp_path):
    kwargs = {"model": tiny_model, "probabilities": True, "instances": True}
    ncs.segment_dataset(dataset["sub/stack"], PROMPTS, tmp_path / "a", planes_per_task=4, **kwargs)
    ncs.segment_dataset(dataset["sub/stack"], PROMPTS, tmp_path / "b", planes_per_task=100, **kwargs)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_resume_skips_matching_outputs_and_redoes_what_changed(dataset, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    run = lambda prompts=PROMPTS, **kw: ncs.segment_dataset(  # noqa: E731
        list(dataset.values()), prompts, out, model=str(tiny_model_dir), **kw
    )
    run()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("labels.tif")}
    again = run()
    assert [r.status for r in again.rows] == ["skipped"] * 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("labels.tif")} == before
    assert again.rows[0].pixels == run(overwrite=True).rows[0].pixels  # --overwrite redoes them
    np.save(dataset["plain"], np.zeros((66, 80), np.float32))  # an input changed
    statuses = {r.name: r.status for r in run().rows}
    assert statuses == {"photo": "skipped", "stack": "skipped", "plain": "done"}  # files given: named by stem
    with pytest.raises(ValueError, match=r"holds pre-labels for other prompts .* --overwrite"):
        run(["cell"])  # an annotator may be correcting them: never replaced without asking
    assert [r.status for r in run(["cell"], overwrite=True).rows] == ["done"] * 3  # new prompts redo everything
    assert [c["name"] for c in read_record(out / "photo" / "clipseg.json")["classes"]] == ["cell"]
    assert [r.status for r in run(["cell"], threshold=0.6).rows] == ["done"] * 3  # so do new options


def test_a_bad_input_is_reported_and_never_stops_the_others(dataset, tiny_model_dir, tmp_path):
    folder = dataset["photo"].parent
    (folder / "broken.png").write_bytes(b"not an image at all")
    np.save(folder / "line.npy", np.zeros(50))
    report = ncs.segment_dataset(folder, PROMPTS, tmp_path / "out", model=str(tiny_model_dir))
    status = {r.name: r for r in report.rows}
    assert status["broken"].status == "failed" and "broken.png" in status["broken"].error
    assert status["line"].status == "failed" and "2 spatial axes" in status["line"].error
    assert all(status[n].status == "done" for n in dataset) and not report.ok
    assert not (tmp_path / "out" / "broken").exists() and not (tmp_path / "out" / ".staging").exists()


def test_a_folder_that_is_not_ours_is_left_alone(dataset, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    (out / "photo").mkdir(parents=True)
    (out / "photo" / "my-notes.txt").write_text("keep me")
    report = ncs.segment_dataset(dataset["photo"], PROMPTS, out, model=str(tiny_model_dir))
    assert report.rows[0].status == "failed" and "not a napari-clipseg output" in report.rows[0].error
    assert (out / "photo" / "my-notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "photo").iterdir()) == ["my-notes.txt"]


def test_ome_zarr_output_is_read_by_ome_zarr_with_pixel_sizes(dataset, tiny_model_dir, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "out"
    kwargs = {"model": str(tiny_model_dir), "instances": True, "probabilities": True, "file_format": "ome-zarr"}
    ncs.segment_dataset(dataset["sub/stack"], PROMPTS, out, **kwargs)
    nodes = {
        str(n.zarr.path).rstrip("/").split("/")[-1]: n for n in Reader(parse_url(out / "stack" / "labels.ome.zarr"))()
    }
    classes, instances = nodes["classes"], nodes["instances"]
    np.testing.assert_array_equal(np.asarray(classes.data[0]), read_output(out / "stack"))
    scale = next(t for t in classes.metadata["coordinateTransformations"][0] if t["type"] == "scale")["scale"]
    assert scale == [2.0, 0.25, 0.5]
    attrs = zarr.open_group(str(out / "stack" / "labels.ome.zarr" / "labels" / "classes"), mode="r").attrs
    assert [p["class"] for p in attrs["ome"]["image-label"]["properties"]] == PROMPTS
    assert int(np.asarray(instances.data[0]).max()) == len(
        object_table(out / "stack" / "clipseg.json", read_record(out / "stack" / "clipseg.json"))[0]
    )
    assert np.asarray(nodes["labels.ome.zarr"].data[0]).shape == (2, 9, 64, 70)  # probabilities as the image


def test_coco_file_round_trips_through_pycocotools(dataset, tiny_model, tmp_path):
    from pycocotools import mask as mask_utils

    from napari_clipseg.io.coco import load_coco

    out = tmp_path / "out"
    report = ncs.segment_dataset(
        [dataset["photo"], dataset["sub/stack"]], PROMPTS, out, model=tiny_model, coco=True, min_size=20
    )
    coco = load_coco(report.coco)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == PROMPTS
    assert len(coco.getImgIds()) == 1 + 9  # the photo, and one image per plane of the stack
    assert len(coco.getAnnIds()) == sum(r.instances for r in report.rows) > 0
    ids = read_output(out / "photo", "instances")
    classes, _ = object_table(out / "photo" / "clipseg.json", read_record(out / "photo" / "clipseg.json"))
    (photo,) = coco.loadImgs([i for i in coco.getImgIds() if coco.imgs[i]["file_name"] == "photo"])
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[photo["id"]])):
        mask = coco.annToMask(ann).astype(bool)
        (obj,) = np.unique(ids[mask])
        np.testing.assert_array_equal(mask, ids == obj)
        assert ann["category_id"] == classes[obj - 1]
        assert ann["area"] == mask.sum() and 0 <= ann["score"] <= 1
        assert mask_utils.toBbox(coco.annToRLE(ann)).tolist() == ann["bbox"]


def test_inputs_from_folders_globs_and_files(dataset, tmp_path):
    folder = dataset["photo"].parent
    (folder / ".hidden.png").write_bytes(b"x")
    found = find_inputs([folder])
    assert [i.name for i in found] == ["photo", "plain", "sub/stack"]
    assert [i.name for i in find_inputs([str(folder / "*.png")])] == ["photo"]
    assert [i.name for i in find_inputs([folder], skip=folder / "sub")] == ["photo", "plain"]
    other = tmp_path / "other"
    other.mkdir()
    iio.imwrite(other / "photo.jpg", np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="would both write to 'photo'"):
        find_inputs([dataset["photo"], other / "photo.jpg"])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        find_inputs([str(tmp_path / "nothing-*.tif")])


def test_pixel_sizes_from_imagej_tiff_and_ome_zarr_input(tmp_path, rng, tiny_model):
    stack = rng.integers(0, 255, (3, 40, 50), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "ij.tif", stack, imagej=True, resolution=(4.0, 2.0), metadata={"spacing": 1.5, "unit": "um"}
    )
    assert open_image(tmp_path / "ij.tif").pixel_size == {"y": 0.5, "x": 0.25, "z": 1.5}
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    write_image(stack, root, axes="zyx", scale={"z": 3.0, "y": 0.7, "x": 0.7}, scale_factors=())
    opened = open_image(tmp_path / "img.ome.zarr")
    assert opened.pixel_size == {"z": 3.0, "y": 0.7, "x": 0.7} and opened.axes == "ZYX"
    assert isinstance(opened.data, zarr.Array)  # read lazily, plane by plane
    report = ncs.segment_dataset(tmp_path / "img.ome.zarr", PROMPTS, tmp_path / "out", model=tiny_model)
    assert report.rows[0].name == "img" and report.ok


def test_example_from_files_is_a_class_like_a_visual_prompt(dataset, tiny_model, tmp_path):
    image = iio.imread(dataset["photo"])
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[20:40, 30:60] = 1
    iio.imwrite(tmp_path / "mask.png", mask)
    example = parse_example(f"{dataset['photo']}:{tmp_path / 'mask.png'}=marked")
    assert example == ExampleFile(dataset["photo"], tmp_path / "mask.png", "marked")
    report = ncs.segment_dataset(dataset["plain"], ["cell", example], tmp_path / "out", model=tiny_model)
    record = read_record(tmp_path / "out" / "plain" / "clipseg.json")
    assert [c["name"] for c in record["classes"]] == ["cell", "marked"] and report.ok
    prompt = ncs.VisualPrompt(mask, image=image, name="marked")
    expected = ncs.segment(np.load(dataset["plain"]), ["cell", prompt], model=tiny_model)
    np.testing.assert_array_equal(read_output(tmp_path / "out" / "plain"), expected)
    with pytest.raises(ValueError, match="IMAGE:MASK"):
        parse_example("no-such-file.png:mask.png")


def test_bad_requests_fail_before_any_work(dataset, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="PNG cannot hold probabilities"):
        ncs.segment_dataset(
            dataset["photo"], PROMPTS, tmp_path / "o", model="unused", file_format="png", probabilities=True
        )
    with pytest.raises(ValueError, match="given more than once"):
        ncs.segment_dataset(dataset["photo"], ["a", "a"], tmp_path / "o", model="unused")
    with pytest.raises(ValueError, match="a cluster run needs the model as a hub id"):
        next(ncs.iter_segment_dataset(dataset["photo"], ["a"], tmp_path / "o", model=tiny_model, workers=2))
    assert not (tmp_path / "o").exists()


def test_a_failing_part_of_a_stack_fails_that_input_only(dataset, tiny_model, tmp_path, monkeypatch):
    """One part of a split stack raises: the stack gets a failed row and no folder; the rest is written."""
    import napari_clipseg.datasets.api as dataset_module
    from napari_clipseg.datasets.steps import segment_part

    def flaky(job, item, planes, predictor):
        if planes == (4, 8):
            raise RuntimeError("plane trouble")
        return segment_part(job, item, planes, predictor)

    monkeypatch.setattr(dataset_module, "segment_part", flaky)
    report = ncs.segment_dataset(
        dataset["photo"].parent, PROMPTS, tmp_path / "out", model=tiny_model, planes_per_task=4
    )
    status = {r.name: r for r in report.rows}
    assert status["sub/stack"].status == "failed" and status["sub/stack"].error == "plane trouble"
    assert status["photo"].status == status["plain"].status == "done"
    assert not (tmp_path / "out" / "sub" / "stack").exists()


def test_a_finished_resume_loads_no_model(dataset, tiny_model_dir, tmp_path, monkeypatch):
    from napari_clipseg.modeling import weights

    out = tmp_path / "out"
    run = lambda **kw: ncs.segment_dataset(list(dataset.values()), PROMPTS, out, model=str(tiny_model_dir), **kw)  # noqa: E731
    run()

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every input is done")

    load_exact = weights.load_exact
    monkeypatch.setattr(weights, "load_exact", no_load)
    assert [r.status for r in run().rows] == ["skipped"] * 3
    # what changes the request needs the model again: new options, a touched weights file, --overwrite
    for kw in ({"threshold": 0.6}, {"overwrite": True}):
        with pytest.raises(AssertionError, match="the model was loaded"):
            run(**kw)
    weights_file = next(tiny_model_dir.glob("*.safetensors"))
    os.utime(weights_file, ns=(weights_file.stat().st_atime_ns, weights_file.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="the model was loaded"):
        run()
    monkeypatch.setattr(weights, "load_exact", load_exact)
    assert [r.status for r in run().rows] == ["skipped"] * 3  # same weights by hash: the full key still matches


def test_a_finished_resume_from_the_hub_cache_loads_no_model(dataset, tiny_model_dir, tmp_path, monkeypatch):
    from conftest import fake_hub_cache
    from napari_clipseg.modeling import weights

    cache = tmp_path / "hub"
    files = {p.name: p for p in tiny_model_dir.iterdir()}
    snapshot = fake_hub_cache(cache, "someone/tiny", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    out = tmp_path / "out"
    run = lambda: ncs.segment_dataset(dataset["photo"], PROMPTS, out, model="someone/tiny")  # noqa: E731
    assert [r.status for r in run().rows] == ["done"]
    monkeypatch.setattr(weights, "load_exact", lambda *a, **k: pytest.fail("loaded"))
    assert [r.status for r in run().rows] == ["skipped"]
    newer = snapshot.parent / ("1" * 40)  # the cache now resolves the hub id to a newer revision
    newer.mkdir()
    for name, src in files.items():
        (newer / name).write_bytes(src.read_bytes())
    (cache / "models--someone--tiny" / "refs" / "main").write_text("1" * 40)
    with pytest.raises(pytest.fail.Exception, match="loaded"):
        run()


def test_a_finished_resume_never_imports_torch_also_for_a_hub_model(dataset, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    from conftest import fake_hub_cache

    cache = tmp_path / "hub"
    fake_hub_cache(cache, "someone/tiny", {p.name: p for p in tiny_model_dir.iterdir()})
    code = (
        "import sys; import napari_clipseg as ncs; "
        f"r = ncs.segment_dataset({str(dataset['photo'])!r}, {PROMPTS!r}, {str(tmp_path / 'out')!r}, "
        "model='someone/tiny', precision='float32'); "
        "print([row.status for row in r.rows], 'torch' in sys.modules)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)  # noqa: E731
    first = run()
    assert first.stdout.split("]")[0] == "['done'", first.stdout + first.stderr
    again = run()
    assert again.stdout.strip() == "['skipped'] False", again.stdout + again.stderr

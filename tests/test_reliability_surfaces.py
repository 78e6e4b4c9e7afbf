"""Issue 22's catalogue rows (docs/reliability.md, 171 on): the surfaces added since issue 10
(datasets, evaluation, fine-tuning, decoder files, the precision caches, the reader), each case
a clear answer and nothing lost."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch

import napari_clipseg as ncs
from napari_clipseg.errors import DecoderMismatchError
from napari_clipseg.modeling.decoder_files import META_NAME, SCHEMA, WEIGHTS_NAME, apply_decoder, base_identity


def _decoder_folder(folder, model, state=None, meta=None):
    """A decoder folder for ``model`` written by hand (the files ``save_decoder`` writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else {k: v.clone() for k, v in model.decoder.state_dict().items()}
    safetensors.torch.save_file(state, str(folder / WEIGHTS_NAME))
    meta = meta if meta is not None else {"schema": SCHEMA, "schema_version": 1, "base": base_identity(model)}
    (folder / META_NAME).write_text(json.dumps(meta) if not isinstance(meta, str) else meta)
    return folder


def _fresh(model_dir):
    return ncs.load_model(model_dir, dtype="float32")


def test_a_decoder_full_of_nan_is_refused(tiny_model_dir, tmp_path):
    model = _fresh(tiny_model_dir)
    state = {k: torch.full_like(v, float("nan")) for k, v in model.decoder.state_dict().items()}
    folder = _decoder_folder(tmp_path / "nan", model, state)
    with pytest.raises(ncs.CorruptWeightsError, match=r"decoder.safetensors: tensor .* NaN or infinite"):
        apply_decoder(model, folder)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("empty", ncs.CorruptWeightsError, r"cannot read weights file .*decoder.safetensors.*fine-tune it again"),
        ("truncated", ncs.CorruptWeightsError, r"cannot read weights file .*decoder.safetensors"),
        ("huge header", ncs.CorruptWeightsError, r"cannot read weights file .*decoder.safetensors"),
        ("pickle", ncs.CorruptWeightsError, r"cannot read weights file .*decoder.safetensors"),  # payload never runs
        ("symlink to text", ncs.CorruptWeightsError, r"cannot read weights file .*decoder.safetensors"),
        ("wrong shape", DecoderMismatchError, "does not fit this model's decoder"),
        ("json not json", ncs.CorruptWeightsError, r"decoder.json is not valid JSON"),
        ("json a list", DecoderMismatchError, "not a napari-clipseg decoder description"),
    ],
)
def test_a_damaged_decoder_file_is_named(tiny_model_dir, tmp_path, damage, error, message):
    import pickle
    import struct

    model = _fresh(tiny_model_dir)
    folder = _decoder_folder(tmp_path / "d", model)
    weights = folder / WEIGHTS_NAME
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "huge header":
        weights.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif damage == "pickle":

        class Payload:
            def __reduce__(self):
                return (print, ("the payload ran",))

        weights.write_bytes(pickle.dumps({"x": Payload()}))  # a pickle disguised as safetensors
    elif damage == "symlink to text":
        (tmp_path / "notes.txt").write_text("these are not weights")
        weights.unlink()
        weights.symlink_to(tmp_path / "notes.txt")
    elif damage == "wrong shape":
        state = {k: v.clone() for k, v in model.decoder.state_dict().items()}
        key = next(k for k, v in state.items() if v.ndim == 2)
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
        _decoder_folder(folder, model, state)
    elif damage == "json not json":
        (folder / META_NAME).write_text("{schema: decoder")
    elif damage == "json a list":
        (folder / META_NAME).write_text("[1, 2]")
    with pytest.raises(error, match=message):
        apply_decoder(model, folder)


def test_a_pickled_decoder_given_to_the_cli_runs_nothing(tiny_model_dir, tmp_path, capfd):
    import pickle

    from napari_clipseg.cli import main

    model = _fresh(tiny_model_dir)
    folder = _decoder_folder(tmp_path / "d", model)

    class Payload:
        def __reduce__(self):
            return (print, ("THE PAYLOAD RAN",))

    (folder / WEIGHTS_NAME).write_bytes(pickle.dumps({"x": Payload()}))
    argv = ["segment", "--sample", "cell", "-p", "x", "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model_dir)]
    assert main([*argv, "--decoder", str(folder)]) == 1
    captured = capfd.readouterr()
    assert "THE PAYLOAD RAN" not in captured.out + captured.err
    (line,) = [x for x in captured.err.splitlines() if x.startswith("napari-clipseg: error:")]
    assert "decoder.safetensors" in line and "Traceback" not in captured.err


@pytest.mark.parametrize("box", [(0, float("nan"), 0, 40), (0, 40, 0), ("a", 1, 2, 3), (0, 40, 0, float("inf"))])
def test_a_box_that_is_not_four_finite_numbers_is_refused(box):
    from napari_clipseg.segmentation.regions import clip_boxes

    with pytest.raises(ValueError, match=r"a box is four finite numbers \(y0, y1, x0, x1\)"):
        clip_boxes([box], (64, 64))


def _batch_output(tmp_path, tiny_model, probabilities):
    image = np.random.default_rng(0).integers(0, 255, (48, 56, 3), dtype=np.uint8)
    np.save(tmp_path / "img.npy", image)
    out = tmp_path / ("out-p" if probabilities else "out")
    ncs.segment_dataset(tmp_path / "img.npy", ["cat"], out, model=tiny_model, probabilities=probabilities)
    return out


def test_evaluate_never_guesses_what_a_float_truth_holds(tmp_path, tiny_model):
    import tifffile

    (tmp_path / "alpha").mkdir()
    tifffile.imwrite(tmp_path / "alpha" / "img.tif", np.linspace(0, 1, 48 * 56, dtype=np.float32).reshape(48, 56))
    plain = _batch_output(tmp_path, tiny_model, probabilities=False)
    with pytest.raises(ValueError, match="could be labels or an alpha matte: say which"):
        ncs.evaluate(plain, tmp_path / "alpha")  # was: scored as classes "0" and "1"
    with pytest.raises(ValueError, match="the prediction has none"):
        ncs.evaluate(plain, tmp_path / "alpha", truth_kind="matte")
    (tmp_path / "float-labels").mkdir()  # values 0, 1, 2 as float32: labels when said so
    labels = np.zeros((48, 56), np.float32)
    labels[5:20, 5:20], labels[25:40, 25:40] = 1, 2
    tifffile.imwrite(tmp_path / "float-labels" / "img.tif", labels)
    with_probabilities = _batch_output(tmp_path, tiny_model, probabilities=True)
    with pytest.raises(ValueError, match="say which"):
        ncs.evaluate(with_probabilities, tmp_path / "float-labels")  # was: scored as a matte, no IoU
    report = ncs.evaluate(with_probabilities, tmp_path / "float-labels", truth_kind="labels")
    assert "iou" in report.mean and "mad" not in report.mean


def test_evaluate_writes_its_files_all_or_none(tmp_path, tiny_model, monkeypatch):
    from napari_clipseg import atomic

    out = _batch_output(tmp_path, tiny_model, probabilities=False)
    report = ncs.evaluate(out, out)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metrics.csv").write_text("the earlier table")
    real = atomic.json_writer

    def full_disk(record):
        def write(tmp):
            real(record)(tmp)
            raise OSError(28, "No space left on device")

        return write

    monkeypatch.setattr(atomic, "json_writer", full_disk)
    with pytest.raises(OSError, match="no space left on the device"):
        report.write(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metrics.csv"]
    assert (tmp_path / "m" / "metrics.csv").read_text() == "the earlier table"


@pytest.mark.parametrize(
    ("truth", "prediction", "message"),
    [
        ("{not json", "[]", r"t.json is not valid JSON"),
        ("[1, 2]", "[]", r"t.json is not a COCO dataset"),
        (None, "{oops", r"p.json is not valid JSON"),
        (None, '[{"image_id": 99, "category_id": 1, "score": 1, "segmentation": {}}]', r"image ids the ground truth"),
    ],
)
def test_bad_coco_files_given_to_evaluate_are_named(tmp_path, truth, prediction, message):
    from napari_clipseg.io.coco import build_coco

    ids = np.zeros((20, 20), np.int32)
    ids[2:8, 2:8] = 1
    valid = json.dumps(build_coco([("a", ids, [1], None)], ["cell"]))
    (tmp_path / "t.json").write_text(valid if truth is None else truth)
    (tmp_path / "p.json").write_text(prediction)
    with pytest.raises(ValueError, match=message):
        ncs.evaluate(tmp_path / "p.json", tmp_path / "t.json")


def test_finetuning_masks_that_label_nothing_is_refused_before_the_model_loads(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    import tifffile

    from napari_clipseg.cli import main
    from napari_clipseg.modeling import weights
    from napari_clipseg.samples import striped_discs

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for k in range(3):
        image, labels = striped_discs(k, 64)
        tifffile.imwrite(tmp_path / "images" / f"i{k}.tif", image)
        tifffile.imwrite(tmp_path / "masks" / f"i{k}.tif", np.zeros_like(labels))
    monkeypatch.setattr(weights, "load_exact", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = ["finetune", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "-p", "disc"]
    assert main([*argv, "--out", str(tmp_path / "dec"), "-m", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert "the 3 corrected masks label nothing" in err and "force" not in err
    assert not (tmp_path / "dec").exists()


def test_the_batch_progress_bar_starts_with_its_total(tmp_path, tiny_model_dir, capsys):
    from napari_clipseg.cli import main

    (tmp_path / "in").mkdir()
    for k in range(2):
        np.save(tmp_path / "in" / f"a{k}.npy", np.zeros((40, 40), np.float32))
    assert (
        main(["batch", str(tmp_path / "in"), "-p", "x", "--out", str(tmp_path / "out"), "-m", str(tiny_model_dir)]) == 0
    )
    err = capsys.readouterr().err
    assert "0image [" not in err and "/2 [" in err  # was: a stray "0image [00:00, ?image/s]" first


def test_one_file_named_twice_is_one_input(tmp_path, monkeypatch):
    from napari_clipseg.io.inputs import find_inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.zeros((20, 20)))
    (tmp_path / "link.npy").symlink_to(tmp_path / "in" / "a.npy")
    found = find_inputs(["in/a.npy", str(tmp_path / "in" / "a.npy"), "link.npy"])  # was: "would both write to 'a'"
    assert [f.name for f in found] == ["a"]


@pytest.mark.parametrize("layout", ["out is the input folder", "glob over a folder holding the output"])
def test_a_run_never_takes_its_own_outputs_as_inputs(tmp_path, tiny_model_dir, layout):
    (tmp_path / "in").mkdir()
    for k in range(2):
        np.save(tmp_path / "in" / f"a{k}.npy", np.random.default_rng(k).random((40, 40)).astype(np.float32))
    if layout == "out is the input folder":
        inputs, out = tmp_path / "in", tmp_path / "in"
    else:
        inputs, out = str(tmp_path / "in" / "**" / "*.npy"), tmp_path / "in" / "out"
    run = lambda: ncs.segment_dataset(inputs, ["x"], out, model=str(tiny_model_dir), file_format="npy")  # noqa: E731
    assert sorted(r.status for r in run().rows) == ["done", "done"]
    again = run()  # was: the first run's labels.npy files taken as new inputs
    assert sorted((r.name, r.status) for r in again.rows) == [("a0", "skipped"), ("a1", "skipped")]


@pytest.mark.parametrize("name", ["report.json.npy", "coco.json.png", "report.csv.npy", ".staging.npy"])
def test_an_input_named_like_the_datasets_own_files_is_refused_before_work(tmp_path, tiny_model_dir, name):
    import imageio.v3 as iio

    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / name
    if name.endswith(".png"):
        iio.imwrite(path, np.zeros((32, 32), np.uint8))
    else:
        np.save(path, np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="the dataset's own files use"):
        ncs.segment_dataset(path, ["x"], tmp_path / "out", model=str(tiny_model_dir), coco=True)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _ome_zarr(path, level="0", scale=(0.5, 0.5)):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", shape=(32, 32), dtype="uint8")
    group.attrs["multiscales"] = [
        {
            "axes": [{"name": "y"}, {"name": "x"}],
            "datasets": [{"path": level, "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]}],
        }
    ]
    return path


@pytest.mark.parametrize(
    ("level", "scale", "expected"),
    [
        ("0", (0.5, 0.25), {"y": 0.5, "x": 0.25}),
        ("0", ("a", 0.25), {"x": 0.25}),  # was: could not convert string to float: 'a'
        ("0", (-1.0, 0.0), {}),  # was: recorded as pixel sizes
        ("9", (1, 1), "names the level '9', which the store lacks"),  # was: a bare '9'
    ],
)
def test_ome_zarr_metadata_follows_one_rule_for_pixel_sizes(tmp_path, level, scale, expected):
    from napari_clipseg.io.inputs import open_image

    path = _ome_zarr(tmp_path / "a.ome.zarr", level, scale)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            open_image(path)
    else:
        assert open_image(path).pixel_size == expected


def test_tiff_pixel_sizes_follow_the_same_rule():
    from napari_clipseg.io.inputs import pixel_sizes

    assert pixel_sizes({"z": 2, "y": "0.5", "x": float("nan"), "c": 3.0, "t": 1}) == {"z": 2.0}


def test_four_planes_stored_as_tiff_samples_are_never_read_as_colour_silently(tmp_path, tiny_model_dir, caplog):
    import logging

    import tifffile

    stack = np.random.default_rng(0).integers(0, 255, (4, 48, 48), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)  # tifffile's defaults: one 4-sample image, planar
    run = lambda **kw: ncs.segment_dataset(  # noqa: E731
        tmp_path / "stack.tif", ["x"], tmp_path / kw.pop("out"), model=str(tiny_model_dir), **kw
    )
    with caplog.at_level(logging.WARNING, logger="napari_clipseg"):
        run(out="colour")
    assert "read as one colour image from 4 samples" in caplog.text and "--rgb no" in caplog.text
    from napari_clipseg.io.outputs import read_output

    assert np.shape(read_output(tmp_path / "colour" / "stack")) == (48, 48)
    run(out="planes", rgb=False)  # as the message says: each plane segmented
    assert np.shape(read_output(tmp_path / "planes" / "stack")) == (4, 48, 48)


def test_a_record_stays_small_however_many_objects(tmp_path, tiny_model):
    from napari_clipseg.io.records import object_table, read_record

    noise = np.random.default_rng(0).random((160, 160)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    predictor = ncs.ClipSegPredictor(tiny_model, cache_bytes=0)
    predictor.set_image(noise)
    middle = float(np.median(predictor.predict(["x"])))  # thresholded at its median: noise makes hundreds of objects
    settings = {"model": tiny_model, "instances": True, "coco": True, "threshold": middle}
    report = ncs.segment_dataset(tmp_path / "noise.npy", ["x"], tmp_path / "out", **settings)
    folder = tmp_path / "out" / "noise"
    record = read_record(folder / "clipseg.json")
    classes, scores = object_table(folder / "clipseg.json", record)
    assert report.rows[0].instances == record["instance_count"] == len(classes) == len(scores) > 100
    assert (folder / "clipseg.json").stat().st_size < 8_000 and "instance_classes" not in record
    assert "\n" not in (folder / "objects.json").read_text()  # compact, one line
    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert len(coco["annotations"]) == len(classes)
    assert ncs.evaluate(tmp_path / "out", tmp_path / "out").mean["ap"] == 1.0

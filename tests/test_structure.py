"""The structure's promises: loading never runs the model, one model spec everywhere, grouped
dataset settings, one record writer that refuses what it does not know."""

from __future__ import annotations

import pytest

import napari_clipseg as ncs
from napari_clipseg.errors import RecordError


@pytest.fixture
def forward_calls(monkeypatch):
    """Every run of a vision or text tower (what the check on the weights and the timing would do)."""
    from napari_clipseg.modeling import backbone

    calls = []
    for name in ("vision_taps", "text_embedding", "image_embedding"):
        real = getattr(backbone, name)
        monkeypatch.setattr(
            backbone, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k)
        )
    return calls


def test_loading_at_float32_runs_no_forward_pass(tiny_model_dir, forward_calls):
    from napari_clipseg.modeling.weights import load_exact

    assert load_exact(tiny_model_dir).info.precision == "float32"
    assert ncs.load_model(tiny_model_dir, dtype="float32").info.precision == "float32"
    assert ncs.ModelSpec(str(tiny_model_dir), precision="float32").load().info.precision == "float32"
    assert forward_calls == []


def test_choosing_an_approximate_path_is_its_own_step(tiny_model_dir, forward_calls, monkeypatch, tmp_path):
    """``auto`` that resolves to int8 checks it on the weights: that runs the model, after loading."""
    from napari_clipseg.precision import choice

    monkeypatch.setenv("NAPARI_CLIPSEG_CACHE_DIR", str(tmp_path))  # no check remembered from an earlier test
    monkeypatch.setattr(choice, "speedups", lambda candidates, measure=True, stop=None: dict.fromkeys(candidates, 3.0))
    model = ncs.ModelSpec(str(tiny_model_dir), precision="auto").load()
    assert forward_calls  # the check on the loaded weights ran the model
    assert model.info.precision in ("int8", "float32")  # int8, or float32 when the check refused it


def test_the_model_spec_round_trips_and_names_its_differences(tiny_model_dir):
    spec = ncs.ModelSpec(tiny_model_dir, precision="fp32")  # a path and an alias become their canonical forms
    assert spec.source == str(tiny_model_dir) and spec.precision == "float32"
    assert ncs.ModelSpec.from_dict(spec.to_dict()) == spec
    assert ncs.ModelSpec.of(str(tiny_model_dir), device="cpu", precision="float32") == spec
    assert spec.differences(spec.replace(device="cuda")) == ["device: 'cpu' -> 'cuda'"]
    with pytest.raises(ValueError, match="unknown model setting"):
        ncs.ModelSpec.from_dict({**spec.to_dict(), "precison": "int8"})
    with pytest.raises(ValueError, match="unknown precision"):
        ncs.ModelSpec(precision="int4")
    with pytest.raises(TypeError, match="hub id, a folder or a file path"):
        ncs.ModelSpec(42)


def test_every_command_that_loads_a_model_takes_the_same_model_options(tmp_path):
    from napari_clipseg.cli.main import _parser

    for path in ("m", "d"):  # local paths are checked when the spec is made
        (tmp_path / path).mkdir()
    (tmp_path / "b.safetensors").write_bytes(b"")
    model = [
        *("-m", str(tmp_path / "m"), "--backbone", str(tmp_path / "b.safetensors"), "--decoder", str(tmp_path / "d")),
        *("--device", "cpu", "--precision", "int8"),
    ]
    commands = {
        "segment": ["segment", "--sample", "cell", "-p", "x", "-o", "o.tif"],
        "batch": ["batch", "in", "-p", "x", "--out", "o"],
        "finetune": ["finetune", "--images", "i", "--masks", "m", "--out", "o"],
        "project prelabel": ["project", "prelabel", "p"],
    }
    from napari_clipseg.cli.args import model_spec
    from napari_clipseg.errors import UsageError

    specs = {name: model_spec(_parser().parse_args([*argv, *model])) for name, argv in commands.items()}
    expected = ncs.ModelSpec(
        str(tmp_path / "m"), backbone=str(tmp_path / "b.safetensors"), decoder=str(tmp_path / "d"), precision="int8"
    )
    assert set(specs.values()) == {expected}
    with pytest.raises(UsageError, match=r"the decoder .*gone does not exist"):
        model_spec(_parser().parse_args([*commands["segment"], "--decoder", str(tmp_path / "gone")]))


def test_dataset_keywords_go_to_their_group():
    from napari_clipseg.datasets.settings import group_keywords

    how, options, output, compute = group_keywords(
        {"threshold": 0.3, "instances": True, "workers": 2, "precision": "float32"}, None, None, None
    )
    assert how == {"precision": "float32"} and options.threshold == 0.3
    assert output.instances is not None and compute.workers == 2 and compute.on_cluster
    with pytest.raises(TypeError, match="unknown dataset setting 'treshold'"):
        group_keywords({"treshold": 0.3}, None, None, None)
    with pytest.raises(ValueError, match="workers must be at least 0"):
        group_keywords({"workers": -1}, None, None, None)


def test_a_record_changes_only_through_its_known_sections(tmp_path):
    from napari_clipseg.io.records import extend_record, record_file

    record = ncs.build_record(["cell"], counts={"cell": 3})
    assert extend_record(record, boxes=[[0, 1, 0, 1]])["boxes"] == [[0, 1, 0, 1]]
    with pytest.raises(RecordError, match="unknown record section"):
        extend_record(record, colour="red")
    with pytest.raises(RecordError, match="section 'counts' has the wrong type"):
        extend_record(record, counts=[1, 2])
    (tmp_path / "out").mkdir()
    assert record_file(tmp_path / "out" / "clipseg.json", "labels.tif") == tmp_path / "out" / "labels.tif"
    with pytest.raises(RecordError, match="outside its own folder"):
        record_file(tmp_path / "out" / "clipseg.json", "../secret.tif")


def test_a_decoders_own_threshold_is_the_default(tmp_path, tiny_model):
    """The threshold fine-tuning chose is used unless the user gives one (CLI and segment())."""
    import copy
    import json

    import numpy as np

    from napari_clipseg.cli.args import run_options
    from napari_clipseg.cli.main import _parser
    from napari_clipseg.learning.finetune import FineTuneResult, FineTuneSettings
    from napari_clipseg.modeling.decoder_files import use_result

    (tmp_path / "dec").mkdir()
    (tmp_path / "dec" / "decoder.json").write_text(json.dumps({"threshold": 0.55}))
    argv = ["segment", "--sample", "cell", "-p", "x", "-o", "o.tif", "--decoder", str(tmp_path / "dec")]
    assert run_options(_parser().parse_args(argv)).threshold == 0.55
    assert run_options(_parser().parse_args([*argv, "--threshold", "0.3"])).threshold == 0.3
    assert run_options(_parser().parse_args(argv[:-2])).threshold == 0.4  # no decoder: the default

    state = {k: v.clone() for k, v in tiny_model.decoder.state_dict().items()}
    trained = FineTuneResult(state, ["x"], {}, FineTuneSettings(), 0.0, 0.0, 0, threshold=0.9)
    model = use_result(tiny_model.with_decoder(copy.deepcopy(tiny_model.decoder)), trained)
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    at_own = ncs.segment(image, ["x"], model=model)
    assert np.array_equal(at_own, ncs.segment(image, ["x"], model=model, threshold=0.9))
    assert not np.array_equal(at_own, ncs.segment(image, ["x"], model=model, threshold=0.0))


def test_the_docks_settings_keep_the_model_as_a_spec_and_read_older_files(tmp_path, monkeypatch):
    import json

    from napari_clipseg._napari.settings import Settings, load_settings, save_settings

    monkeypatch.setenv("NAPARI_CLIPSEG_CONFIG_DIR", str(tmp_path))
    (tmp_path / "settings.json").write_text(json.dumps({"model_source": "my/model", "device": "cpu", "decoder": ""}))
    assert load_settings().model == ncs.ModelSpec("my/model", device="cpu")  # an older file's fields
    save_settings(Settings(model=ncs.ModelSpec("other", precision="int8")))
    assert load_settings().model == ncs.ModelSpec("other", precision="int8")
    (tmp_path / "settings.json").write_text(json.dumps({"model": {"source": "x", "precision": "int4"}}))
    assert load_settings().model == Settings().model  # a bad saved model falls back to the default

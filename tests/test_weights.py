"""Loading from every source format, and a clear error (with nothing changed on disk) for every failure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import safetensors.torch
import torch

import napari_clipseg as ncs
from conftest import fake_hub_cache as _fake_hub_cache
from conftest import perturb_, tree_snapshot
from napari_clipseg.constants import OPENAI_BACKBONE_FILE, OPENAI_BACKBONE_HUB_ID
from napari_clipseg.modeling import keymap
from napari_clipseg.segmentation.prompts import tokenize


def _logits(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(2, 3, 96, 96, generator=gen)
    with torch.inference_mode():
        return model(pixels, input_ids=tokenize(["a cat", "a jar of jam"]))


def _write_original(model, directory, *, with_reduce=True):
    """Write ``model`` as the original release does: decoder-only .pth + open_clip backbone."""
    decoder = {k.removeprefix("decoder."): v for k, v in model.state_dict().items() if k.startswith("decoder.")}
    if with_reduce:  # the released files carry the unused `reduce` layer
        width = model.config.vision.width
        decoder |= {
            "reduce.weight": torch.randn(model.config.reduce_dim, width),
            "reduce.bias": torch.zeros(model.config.reduce_dim),
        }
    pth = directory / "rd-uni.pth"
    torch.save(decoder, pth)
    backbone = {k.removeprefix("clip."): v.contiguous() for k, v in model.state_dict().items() if k.startswith("clip.")}
    backbone_file = directory / "open_clip_model.safetensors"
    safetensors.torch.save_file(backbone, backbone_file)
    return pth, backbone_file


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


# --- every source loads, with the same logits --------------------------------------------------


def test_hf_directory_roundtrip(tiny_model, tiny_model_dir):
    loaded = ncs.load_model(tiny_model_dir, dtype="float32")
    assert loaded.info.weights.kind == "hf-directory"
    assert torch.equal(_logits(loaded), _logits(tiny_model))
    assert not loaded.training and not any(p.requires_grad for p in loaded.clip.parameters())


def test_hf_single_weights_file_with_config_beside_it(tiny_model, tiny_model_dir):
    loaded = ncs.load_model(tiny_model_dir / "model.safetensors", dtype="float32")
    assert loaded.info.weights.kind == "hf-file"
    assert torch.equal(_logits(loaded), _logits(tiny_model))


def test_pytorch_model_bin_and_sharded_checkpoints(tiny_model, tiny_model_dir, tmp_path):
    state = safetensors.torch.load_file(tiny_model_dir / "model.safetensors")
    single = tmp_path / "bin"
    single.mkdir()
    shutil.copy(tiny_model_dir / "config.json", single)
    torch.save(state, single / "pytorch_model.bin")
    assert torch.equal(_logits(ncs.load_model(single, dtype="float32")), _logits(tiny_model))

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(tiny_model_dir / "config.json", sharded)
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        safetensors.torch.save_file({k: state[k] for k in part}, sharded / name)
    index = {"weight_map": {k: name for name, part in halves.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(_logits(ncs.load_model(sharded, dtype="float32")), _logits(tiny_model))


@pytest.mark.parametrize("refined", [True, False])
def test_original_decoder_checkpoint_with_local_backbone(refined, tmp_path):
    model = perturb_(ncs.build_model("tiny" if refined else "tiny-simple", seed=1))
    pth, backbone = _write_original(model, tmp_path)
    loaded = ncs.load_model(pth, backbone=backbone, config="tiny" if refined else "tiny-simple", dtype="float32")
    assert loaded.info.weights.kind == "original"
    assert loaded.info.weights.files == (str(pth), str(backbone))
    assert torch.equal(_logits(loaded), _logits(model))


def test_original_full_state_dict_needs_no_backbone(tmp_path):
    """CLIPDensePredT.state_dict(): towers under clip_model.*, a duplicate under model.*."""
    model = perturb_(ncs.build_model("tiny", seed=2))
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("clip."):
            state["clip_model." + k.removeprefix("clip.")] = v
            if k.startswith("clip.visual."):
                state["model." + k.removeprefix("clip.visual.")] = v
        else:
            state[k.removeprefix("decoder.")] = v
    torch.save(state, tmp_path / "clip_plus_rd16-uni.pth")
    loaded = ncs.load_model(tmp_path / "clip_plus_rd16-uni.pth", config="tiny", dtype="float32")
    assert torch.equal(_logits(loaded), _logits(model))


def test_open_clip_training_checkpoint_wrapping_is_unwrapped(tmp_path):
    model = perturb_(ncs.build_model("tiny", seed=3))
    pth, _ = _write_original(model, tmp_path)
    wrapped = {
        "state_dict": {
            "module." + k.removeprefix("clip."): v for k, v in model.state_dict().items() if k.startswith("clip.")
        },
        "epoch": torch.tensor(3),
    }
    torch.save(wrapped, tmp_path / "epoch_3.pt")
    loaded = ncs.load_model(pth, backbone=tmp_path / "epoch_3.pt", config="tiny", dtype="float32")
    assert torch.equal(_logits(loaded), _logits(model))


@pytest.mark.slow
def test_released_sizes_are_inferred_from_original_checkpoint(tmp_path):
    """rd64-uni-refined.pth + ViT-B/16 backbone, no config given: the released architecture."""
    model = ncs.build_model("rd64-refined", seed=0)
    pth, backbone = _write_original(model, tmp_path)
    assert set(torch.load(pth, weights_only=True)) >= {"reduce.weight", "trans_conv.4.bias"}
    loaded = ncs.load_model(pth, backbone=backbone, dtype="float32")
    assert loaded.config == ncs.ClipSegConfig()
    pixels = torch.randn(1, 3, 352, 352)
    with torch.inference_mode():
        assert torch.equal(loaded(pixels, input_ids=tokenize(["a cat"])), model(pixels, input_ids=tokenize(["a cat"])))


def test_hub_id_loads_from_the_cache_offline(tiny_model, tiny_model_dir, hub_cache):
    files = {name: tiny_model_dir / name for name in ("config.json", "model.safetensors")}
    _fake_hub_cache(hub_cache, "CIDAS/clipseg-rd16", files)
    loaded = ncs.load_model("CIDAS/clipseg-rd16", dtype="float32")
    assert loaded.info.weights.kind == "hub" and loaded.info.weights.source == "CIDAS/clipseg-rd16"
    assert torch.equal(_logits(loaded), _logits(tiny_model))


def test_original_checkpoint_fetches_the_openai_backbone_from_the_hub_cache(tmp_path, hub_cache):
    model = perturb_(ncs.build_model("tiny", seed=4))
    pth, backbone = _write_original(model, tmp_path)
    _fake_hub_cache(hub_cache, OPENAI_BACKBONE_HUB_ID, {OPENAI_BACKBONE_FILE: backbone})
    loaded = ncs.load_model(pth, config="tiny", dtype="float32")
    assert torch.equal(_logits(loaded), _logits(model))


def test_weights_hash_is_the_files_sha256(tiny_model_dir):
    info = ncs.load_model(tiny_model_dir, dtype="float32").info.weights
    expected = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert info.sha256 == expected and info.to_dict()["sha256"] == expected


def test_key_table_is_its_own_inverse(tiny_model):
    state = tiny_model.state_dict()
    back = keymap.hf_to_ours(keymap.ours_to_hf(state, tiny_model.config), tiny_model.config)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


# --- failures: clear error, nothing changed on disk ---------------------------------------------


def test_offline_hub_miss_says_what_to_do(hub_cache):
    before = tree_snapshot(hub_cache)
    with pytest.raises(ncs.WeightsUnavailableError, match="HF_HUB_OFFLINE=1") as err:
        ncs.load_model()
    assert "CIDAS/clipseg-rd64-refined" in str(err.value) and "local directory" in str(err.value)
    assert tree_snapshot(hub_cache) == before


def test_offline_backbone_miss_for_original_checkpoint(tmp_path, hub_cache):
    pth, _ = _write_original(ncs.build_model("tiny", seed=0), tmp_path)
    with pytest.raises(ncs.WeightsUnavailableError, match=OPENAI_BACKBONE_HUB_ID):
        ncs.load_model(pth, config="tiny")


def test_missing_local_path(tmp_path):
    with pytest.raises(ncs.WeightsUnavailableError, match="no such file"):
        ncs.load_model(tmp_path / "nope" / "rd64-uni-refined.pth")
    with pytest.raises(ncs.WeightsUnavailableError, match="no such file"):
        ncs.load_model("./relative/dir")


def test_directory_without_weights_or_config(tmp_path, tiny_model_dir):
    (tmp_path / "no-weights").mkdir()
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "no-weights")
    with pytest.raises(ncs.WeightsUnavailableError, match="has no weights"):
        ncs.load_model(tmp_path / "no-weights")
    (tmp_path / "no-config").mkdir()
    shutil.copy(tiny_model_dir / "model.safetensors", tmp_path / "no-config")
    with pytest.raises(ncs.WeightsUnavailableError, match=r"config\.json"):
        ncs.load_model(tmp_path / "no-config")


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_weights_file_is_reported_and_left_alone(name, tiny_model_dir, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, target)
    if name == "pytorch_model.bin":
        torch.save(safetensors.torch.load_file(target / "model.safetensors"), target / name)
        os.remove(target / "model.safetensors")
    data = (target / name).read_bytes()
    (target / name).write_bytes(data[: len(data) // 2])
    before = tree_snapshot(target)
    with pytest.raises(ncs.CorruptWeightsError, match="truncated or damaged"):
        ncs.load_model(target)
    assert tree_snapshot(target) == before


def test_garbage_config_json(tiny_model_dir, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, target)
    (target / "config.json").write_text("{not json")
    with pytest.raises(ncs.CorruptWeightsError, match="not valid JSON"):
        ncs.load_model(target)


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"film_mul.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ncs.UnsafeWeightsError, match="refusing"):
        ncs.load_model(tmp_path / "evil.pth", config="tiny")
    assert not marker.exists()


def test_checkpoint_that_does_not_match_its_config(tiny_model_dir, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["reduce_dim"] = 32
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ncs.ArchitectureMismatchError, match="wrong shape"):
        ncs.load_model(target)
    config["reduce_dim"], config["extract_layers"] = 16, [1, 3]
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ncs.ArchitectureMismatchError, match="unexpected"):
        ncs.load_model(target)


def test_original_checkpoint_with_the_wrong_backbone(tmp_path):
    pth, _ = _write_original(ncs.build_model("tiny", seed=0), tmp_path)
    other = ncs.build_model("tiny-simple", seed=0).state_dict()
    bad = {k.removeprefix("clip."): v for k, v in other.items() if k.startswith("clip.visual.")}
    safetensors.torch.save_file(bad, tmp_path / "vision_only.safetensors")
    with pytest.raises(ncs.ArchitectureMismatchError, match="missing"):
        ncs.load_model(pth, backbone=tmp_path / "vision_only.safetensors", config="tiny")


def test_save_pretrained_never_overwrites(tiny_model, tiny_model_dir):
    before = tree_snapshot(tiny_model_dir)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ncs.save_pretrained(tiny_model, tiny_model_dir)
    assert tree_snapshot(tiny_model_dir) == before


def test_unavailable_device_and_precision_are_refused(tiny_model_dir):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            ncs.load_model(tiny_model_dir, device="cuda")
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        ncs.load_model(tiny_model_dir, dtype="float16")
    with pytest.raises(ValueError, match="unknown precision"):
        ncs.load_model(tiny_model_dir, dtype="int4")
    assert ncs.load_model(tiny_model_dir, device="auto", dtype="bfloat16").autocast_dtype == torch.bfloat16


def test_a_load_can_be_stopped_from_another_thread(tiny_model_dir):
    import threading

    from napari_clipseg.errors import RunCancelled

    stop = threading.Event()
    stop.set()
    with pytest.raises(RunCancelled):
        ncs.load_model(tiny_model_dir, stop=stop)
    stop.clear()
    assert ncs.load_model(tiny_model_dir, stop=stop, dtype="float32").config.reduce_dim == 16


def test_a_source_below_an_existing_folder_is_a_local_path_never_a_hub_id(tmp_path, monkeypatch):
    from napari_clipseg.paths import is_local_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipseg-demo").mkdir()
    assert is_local_path("clipseg-demo/modle") and is_local_path("./x/y") and is_local_path("~/m")
    assert is_local_path("/abs/model") and is_local_path("model.pth") and is_local_path("../m")
    assert not is_local_path("CIDAS/clipseg-rd64-refined") and not is_local_path("someone/model")
    with pytest.raises(ncs.WeightsUnavailableError, match=r"clipseg-demo/modle does not exist.*clipseg-demo exists"):
        ncs.load_model("clipseg-demo/modle")  # no hub lookup (offline here: that would name the cache)
    with pytest.raises(ncs.WeightsUnavailableError, match="no local file or folder, and as a hub id"):
        ncs.load_model("someone/model")

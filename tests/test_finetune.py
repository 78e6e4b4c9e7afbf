"""Learning from corrections: a task the random base model fails, fixed by fine-tuning the decoder."""

from __future__ import annotations

import numpy as np
import pytest

import napari_clipseg as ncs
from conftest import TINY_LEARNING_RATE, perturb_, striped_discs
from napari_clipseg.errors import DecoderMismatchError, RunCancelled
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.learning.finetune import FineTuneSettings, TrainingPair, finetune, iter_finetune
from napari_clipseg.modeling.decoder_files import apply_decoder, read_decoder, save_decoder


@pytest.fixture(scope="module")
def base():
    return perturb_(ncs.build_model("tiny", seed=0)).eval()


@pytest.fixture(scope="module")
def pairs():
    return [TrainingPair(*striped_discs(seed), name=f"disc {seed}") for seed in range(8)]


@pytest.fixture(scope="module")
def trained(base, pairs):
    return finetune(
        ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=20, patience=20, learning_rate=TINY_LEARNING_RATE
    )


def _iou(model, seeds) -> float:
    scores = []
    for seed in seeds:
        image, truth = striped_discs(seed)
        scores.append(class_scores(ncs.segment(image, ["disc"], model=model), truth, 1)["iou"])
    return float(np.mean(scores))


def test_fine_tuning_fixes_what_the_base_model_gets_wrong(base, trained, tmp_path):
    """On images never seen in training, through segment(): the untrained decoder fails the bar."""
    unseen = range(100, 104)
    before = _iou(base, unseen)
    assert before < 0.3  # the same assertion fails for an untrained decoder
    model = apply_decoder(perturb_(ncs.build_model("tiny", seed=0)).eval(), save_decoder(trained, tmp_path / "dec"))
    after = _iou(model, unseen)
    assert after > 0.7, (before, after)
    assert trained.iou > 0.7 > 0.3 > trained.base_iou and 1 <= trained.best_epoch <= 20
    assert trained.history[0]["loss"] > trained.history[-1]["loss"]
    assert set(trained.training).isdisjoint(trained.held_out) and len(trained.held_out) == 2


def test_same_seed_gives_the_same_weights(base, pairs, trained):
    again = finetune(
        ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=20, patience=20, learning_rate=TINY_LEARNING_RATE
    )
    assert all(np.array_equal(trained.state[k].numpy(), again.state[k].numpy()) for k in trained.state)
    other = finetune(ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=1, patience=1, seed=1, force=True)
    assert not all(np.array_equal(trained.state[k].numpy(), other.state[k].numpy()) for k in trained.state)


def test_the_base_model_is_never_changed_by_training(base, pairs):
    before = {k: v.clone() for k, v in base.decoder.state_dict().items()}
    finetune(ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=1, patience=1, force=True)
    assert all(np.array_equal(before[k], v) for k, v in base.decoder.state_dict().items())


def test_artefact_round_trip_and_wrong_base_refused(trained, tiny_model_dir, tmp_path):
    folder = save_decoder(trained, tmp_path / "decoder")
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.json", "decoder.safetensors"]
    state, meta = read_decoder(folder)
    assert meta["classes"] == ["disc"] and meta["metrics"]["iou"] == trained.iou
    assert meta["base"]["source"] == "random:tiny" and meta["settings"]["epochs"] == 20
    model = apply_decoder(perturb_(ncs.build_model("tiny", seed=0)).eval(), folder)
    assert model.info.to_dict()["decoder"]["name"] == "decoder"
    assert all(np.array_equal(v, state[k]) for k, v in model.decoder.state_dict().items())
    with pytest.raises(DecoderMismatchError, match="made for other base weights"):
        ncs.load_model(
            tiny_model_dir, decoder=folder, dtype="float32"
        )  # saved tiny weights: another hash than random:tiny
    with pytest.raises(DecoderMismatchError, match="other base weights"):
        apply_decoder(ncs.build_model("tiny", seed=1), folder)
    with pytest.raises(FileExistsError):
        save_decoder(trained, folder)


def test_combined_model_saves_and_loads_in_transformers(trained, tmp_path):
    from transformers import CLIPSegForImageSegmentation

    model = apply_decoder(perturb_(ncs.build_model("tiny", seed=0)).eval(), save_decoder(trained, tmp_path / "d"))
    ncs.save_pretrained(model, tmp_path / "combined")
    hf = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "combined")
    ours = ncs.load_model(tmp_path / "combined", dtype="float32")
    key = "decoder.film_mul.weight"
    assert np.allclose(hf.state_dict()[key].numpy(), ours.decoder.film_mul.weight.detach().numpy())
    assert np.allclose(ours.decoder.film_mul.weight.detach().numpy(), trained.state["film_mul.weight"].numpy())


def test_cancel_and_refusal_leave_no_decoder(base, pairs, tmp_path):
    predictor = ncs.ClipSegPredictor(base)
    events = iter_finetune(predictor, pairs, ["disc"], epochs=3)
    for event in events:
        if "epoch" in event.stage:
            predictor.stop.set()
            break
    with pytest.raises(RunCancelled):
        next(events)
    predictor.stop.clear()
    refused = finetune(predictor, pairs, ["disc"], epochs=1, patience=1, learning_rate=1e-12)  # an outcome
    assert not refused.accepted and refused.iou <= refused.base_iou
    assert "stays as it was" in refused.message
    with pytest.raises(ValueError, match="refused"):
        ncs.save_decoder(refused, tmp_path / "decoder")
    assert list(tmp_path.iterdir()) == []


def test_bad_training_input_is_refused(base, pairs):
    predictor = ncs.ClipSegPredictor(base)
    with pytest.raises(ValueError, match="at least 2 corrected images"):
        finetune(predictor, pairs[:1], ["disc"])
    with pytest.raises(ValueError, match=r"label values must be 0\.\.1"):
        finetune(predictor, [pairs[0], TrainingPair(pairs[1].image, pairs[1].labels * 3)], ["disc"])
    with pytest.raises(ValueError, match="holdout must lie"):
        FineTuneSettings(holdout=1.0)


def test_unlabelled_pixels_are_left_out(base, pairs):
    """Pixels marked ignore_value carry no loss: marking all background unlabelled changes the result."""
    marked = [TrainingPair(p.image, np.where(p.labels == 0, 255, p.labels).astype(np.uint8), p.name) for p in pairs]
    a = finetune(ncs.ClipSegPredictor(base), marked, ["disc"], epochs=1, patience=1, ignore_value=255, force=True)
    b = finetune(ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=1, patience=1, force=True)
    assert not np.array_equal(a.state["film_mul.weight"].numpy(), b.state["film_mul.weight"].numpy())


def test_finetune_command_then_segment_and_batch_with_the_decoder(base, tmp_path, capsys):
    """Files in, a decoder folder out; segment and batch apply it and record it."""
    import tifffile

    from napari_clipseg.cli import main
    from napari_clipseg.io.records import read_record

    model_dir = ncs.save_pretrained(base, tmp_path / "base")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for seed in range(6):
        image, labels = striped_discs(seed)
        tifffile.imwrite(tmp_path / "images" / f"s{seed}.tif", image)
        tifffile.imwrite(tmp_path / "masks" / f"s{seed}.tif", labels)
    argv = ["finetune", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "-p", "disc"]
    argv += ["--out", str(tmp_path / "decoder"), "-m", str(model_dir), "--epochs", "30", "--patience", "30"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "held-out IoU" in err and f"--decoder {tmp_path / 'decoder'}" in err
    assert main(argv) == 2 and "already holds a decoder" in capsys.readouterr().err
    image, truth = striped_discs(200)
    tifffile.imwrite(tmp_path / "new.tif", image)
    seg = ["segment", str(tmp_path / "new.tif"), "-p", "disc", "-o", str(tmp_path / "new-labels.tif")]
    assert main([*seg, "-m", str(model_dir), "--decoder", str(tmp_path / "decoder")]) == 0
    record = read_record(tmp_path / "new-labels.tif.json")
    assert record["model"]["decoder"]["name"] == "decoder"
    assert class_scores(tifffile.imread(tmp_path / "new-labels.tif"), truth, 1)["iou"] > 0.5
    batch = ["batch", str(tmp_path / "new.tif"), "-p", "disc", "--out", str(tmp_path / "out"), "-m", str(model_dir)]
    assert main([*batch, "--decoder", str(tmp_path / "decoder"), "--quiet"]) == 0
    assert read_record(tmp_path / "out" / "new" / "clipseg.json")["model"]["decoder"]["name"] == "decoder"
    other = ncs.save_pretrained(ncs.build_model("tiny", seed=3), tmp_path / "other")
    assert main([*seg[:-1], str(tmp_path / "x.tif"), "-m", str(other), "--decoder", str(tmp_path / "decoder")]) == 1
    assert "made for other base weights" in capsys.readouterr().err


def test_progress_carries_loss_iou_and_a_live_plot(base, pairs):
    from napari_clipseg.learning.core import sparkline
    from napari_clipseg.learning.finetune import TrainingProgress

    events = []
    finetune_events = iter_finetune(ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=2, patience=2, force=True)
    result = ncs.run(finetune_events, events.append)
    epochs = [e for e in events if isinstance(e, TrainingProgress)]
    assert [e.step for e in epochs] == [1, 2] and all(e.total == 2 for e in epochs)
    assert [e.loss for e in epochs] == [h["loss"] for h in result.history]
    assert epochs[-1].stage.endswith(sparkline([result.base_iou, *(h["iou"] for h in result.history)], 0, 1))
    assert sparkline([0.0, 0.5, 1.0]) == "▁▄█" and sparkline([]) == ""


def test_a_feature_cache_on_disk_skips_the_image_tower_next_time(base, pairs, tmp_path):
    calls = []
    hook = base.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = finetune(
            ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=2, patience=2, force=True, cache_dir=tmp_path / "c"
        )
        encoded = len(calls)
        again = finetune(
            ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=2, patience=2, force=True, cache_dir=tmp_path / "c"
        )
    finally:
        hook.remove()
    assert encoded == len(pairs) * 4 and len(calls) == encoded  # the second run encoded nothing
    assert len(list((tmp_path / "c").iterdir())) == len(pairs) * 4
    assert all(np.array_equal(first.state[k].numpy(), again.state[k].numpy()) for k in first.state)
    other = ncs.build_model("tiny", seed=5)  # other weights: other keys, encoded anew
    calls.clear()
    hook = other.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        finetune(
            ncs.ClipSegPredictor(other), pairs[:2], ["disc"], epochs=1, patience=1, force=True, cache_dir=tmp_path / "c"
        )
    finally:
        hook.remove()
    assert len(calls) == 2 * 4

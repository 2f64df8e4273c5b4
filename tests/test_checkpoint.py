"""Fine-tuning's parts: checkpoints and resume, the term that keeps general similarity, heads fitted
first, length-grouped batches, mixed precision. Mechanics on the tiny BERT; the figures are the README's."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from core.card import model_card
from core.checkpoint import read_checkpoint, save_checkpoint
from core.config import HeadsConfig, TrainingConfig
from core.data import MultiTaskDataset
from core.datasets import StsPairs, make_synthetic
from core.encoder import SentenceEncoder
from core.errors import ConfigError, ModelFolderError
from core.model import MultiTaskModel
from core.precision import cpu_has_fast_bf16, training_dtype
from core.runtime import resolve_device
from core.training import CheckpointEvent, StepEvent, _batches, fit, train
from tests.helpers import make_tiny_encoder

CLASSES = ["Business", "Sci/Tech", "Sports", "World"]


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(240, seed=5).split(0.25, seed=0)


def _tiny(tokenizer, seed=0, **settings):
    torch.manual_seed(seed)
    return MultiTaskModel(make_tiny_encoder(tokenizer, seed=seed, **settings), HeadsConfig(class_names=CLASSES))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


RUNS = {
    "whole encoder, kept near what it knew, heads first": TrainingConfig(
        epochs=3, batch_size=16, freeze="none", keep_similarity=2.0, topic_head_first=True, seed=3,
        early_stopping_patience=None, encoder_learning_rate=1e-3),
    "whole encoder learning STS pairs beside the tasks": TrainingConfig(
        epochs=2, batch_size=16, freeze="none", topic_head_first=True, pairs_per_step=4, seed=2,
        early_stopping_patience=None, encoder_learning_rate=1e-3),
    "gradual unfreezing, early stopping": TrainingConfig(
        epochs=3, batch_size=16, gradual_unfreeze=True, layer_lr_decay=0.8, seed=4, early_stopping_patience=1,
        encoder_learning_rate=1e-3),
}


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("stop_at", [5, 12, 18])  # mid first epoch; at the end of the first; mid second
def test_a_resumed_run_ends_with_the_weights_of_one_never_stopped(tokenizer, tiny_encoder_dir, synthetic, tmp_path,
                                                                  name, stop_at):
    config = RUNS[name]
    train_set, val_set = synthetic
    pairs = _pairs(val_set) if "pairs" in name else None
    def built():  # the same encoder and initial heads each time
        torch.manual_seed(0)
        return MultiTaskModel(SentenceEncoder.from_pretrained(str(tiny_encoder_dir)), HeadsConfig(class_names=CLASSES))

    whole = built()
    expected = fit(whole, train_set, val_set, config, pairs=pairs)
    interrupted = built()
    stop, saved = threading.Event(), []
    folder = tmp_path / "run"
    for event in train(interrupted, train_set, val_set, config, stop=stop, pairs=pairs):
        if isinstance(event, StepEvent) and event.global_step == stop_at:
            stop.set()
        if isinstance(event, CheckpointEvent):
            save_checkpoint(interrupted, event.state, folder, {"note": "test"})
            saved.append(event.state)
    assert saved and saved[-1].global_step == stop_at
    state, run = read_checkpoint(folder)
    assert run == {"note": "test"} and (state.epoch, state.step) == (saved[-1].epoch, saved[-1].step)

    resumed = MultiTaskModel.load(folder)
    result = fit(resumed, train_set, val_set, config, resume=state, pairs=pairs)
    assert _max_diff(_weights(resumed), _weights(whole)) <= 1e-6
    assert result.steps == expected.steps and result.best_epoch == expected.best_epoch
    assert json.dumps(result.history) == json.dumps(expected.history)  # every loss and metric, epoch by epoch


def _pairs(data, n=40):
    """Pairs of the data's sentences scored 5 when they share a topic, else 0: a similarity the tiny BERT can learn."""
    texts, labels = data.texts[:n], data.labels[:n]
    return StsPairs(texts[:-1], texts[1:], [5.0 if a == b else 0.0 for a, b in zip(labels[:-1], labels[1:])])


def _pair_error(model, pairs):
    with torch.no_grad():
        u = model.encoder.encode(pairs.sentences1, convert_to="tensor")
        v = model.encoder.encode(pairs.sentences2, convert_to="tensor")
    return float(((F.cosine_similarity(u, v) - torch.tensor(pairs.scores) / 5) ** 2).mean())


def test_sts_pairs_teach_the_encoder_their_similarities_beside_the_tasks(tokenizer, synthetic):
    train_set, val_set = synthetic
    pairs = _pairs(val_set)
    config = TrainingConfig(epochs=3, freeze="none", encoder_learning_rate=3e-3, early_stopping_patience=None, seed=1,
                            pairs_per_step=8, pair_weight=4.0)
    errors, losses = {}, {}
    for given in (None, pairs):
        model = _tiny(tokenizer, seed=1)
        before = _pair_error(model, pairs)
        result = fit(model, train_set, val_set, config, pairs=given)
        errors[given is not None] = _pair_error(model, pairs)
        losses[given is not None] = [h["train"].get("pairs") for h in result.history]
    assert errors[True] < 0.5 * min(errors[False], before), (before, errors)
    assert losses[False] == [None] * 3 and all(v >= 0 for v in losses[True]), losses
    # a frozen encoder learns nothing from them: the heads are fitted exactly, as without pairs
    frozen, plain = _tiny(tokenizer, seed=1), _tiny(tokenizer, seed=1)
    fit(frozen, train_set, val_set, TrainingConfig(seed=1), pairs=pairs)
    fit(plain, train_set, val_set, TrainingConfig(seed=1))
    assert _max_diff(_weights(frozen), _weights(plain)) == 0
    for bad in ({"pairs_per_step": 0}, {"pair_weight": -1.0}, {"pair_weight": float("nan")}):
        with pytest.raises(ConfigError):
            TrainingConfig(**bad)


def test_a_checkpoint_folder_holds_only_safetensors_and_json_and_loads_as_a_model(tokenizer, synthetic, tmp_path):
    train_set, val_set = synthetic
    model = _tiny(tokenizer)
    config = TrainingConfig(epochs=2, batch_size=32, freeze="none", keep_similarity=1.0, topic_head_first=True)
    states = [e.state for e in train(model, train_set, val_set, config) if isinstance(e, CheckpointEvent)]
    assert [(s.epoch, s.step) for s in states] == [(1, 0)]  # after each epoch but the last
    folder = save_checkpoint(model, states[0], tmp_path / "ckpt", {})
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert all(f.endswith((".json", ".safetensors", ".txt", ".md")) for f in files), files
    assert "checkpoint/state.safetensors" in files and "checkpoint/state.json" in files
    assert states[0].teacher is not None and states[0].teacher.shape == (len(train_set), 32)

    (folder / "checkpoint" / "state.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="is not a checkpoint Sentence Lab wrote"):
        read_checkpoint(folder)
    model.save(tmp_path / "finished")
    with pytest.raises(ModelFolderError, match="holds no training checkpoint"):
        read_checkpoint(tmp_path / "finished")


def test_keeping_similarity_keeps_the_encoder_near_what_it_knew(tokenizer, synthetic):
    train_set, val_set = synthetic
    texts = val_set.texts
    drift = {}
    for keep in (0.0, 20.0):
        model = _tiny(tokenizer)
        before = model.encoder.embed(texts, convert_to="tensor", stage="pooled").embeddings
        config = TrainingConfig(epochs=3, freeze="none", keep_similarity=keep, encoder_learning_rate=3e-3,
                                early_stopping_patience=None, seed=1)
        events = list(train(model, train_set, val_set, config))
        after = model.encoder.embed(texts, convert_to="tensor", stage="pooled").embeddings
        drift[keep] = float((1 - F.cosine_similarity(before, after)).mean())
        similarity = [e.similarity for e in events if isinstance(e, StepEvent)]
        assert all(s is None for s in similarity) if keep == 0 else all(s >= 0 for s in similarity)
    assert drift[20.0] < 0.5 * drift[0.0], drift  # held texts it never trained on, too


def test_a_keep_share_of_0_leaves_sentiment_rows_free(tokenizer, synthetic):
    train_set, val_set = synthetic
    half = len(train_set) // 2  # the first half keeps only its sentiment, the second half only its topic
    mixed = MultiTaskDataset(train_set.texts, [None] * half + train_set.labels[half:],
                             train_set.sentiments[:half] + [None] * (len(train_set) - half))
    weights = {}
    for keep, on in ((0.0, 1.0), (5.0, 1.0), (5.0, 0.0)):
        model = _tiny(tokenizer)
        config = TrainingConfig(epochs=1, freeze="none", keep_similarity=keep, keep_sentiment_rows=on, seed=1,
                                encoder_learning_rate=3e-3, early_stopping_patience=None, group_by_length=False)
        list(train(model, mixed, val_set, config))
        weights[keep, on] = _weights(model)
    assert _max_diff(weights[5.0, 1.0], weights[5.0, 0.0]) > 1e-4  # the sentiment rows' term is gone
    assert _max_diff(weights[0.0, 1.0], weights[5.0, 0.0]) > 1e-4  # the topic rows' term is not
    sentiment_only = MultiTaskDataset(train_set.texts[:half], [None] * half, train_set.sentiments[:half])
    runs = []
    for keep in (0.0, 5.0):  # no row with a topic, and a share of 0: nothing is held
        model = _tiny(tokenizer)
        config = TrainingConfig(epochs=1, freeze="none", keep_similarity=keep, keep_sentiment_rows=0.0, seed=1,
                                encoder_learning_rate=3e-3, early_stopping_patience=None, group_by_length=False)
        list(train(model, sentiment_only, None, config))
        runs.append(_weights(model))
    assert _max_diff(*runs) == 0.0


def test_without_encoder_dropout_the_similarity_term_measures_drift_not_noise(tokenizer, synthetic):
    train_set, val_set = synthetic
    first = {}
    for dropout in (True, False):
        model = _tiny(tokenizer)
        config = TrainingConfig(epochs=1, freeze="none", keep_similarity=1.0, encoder_dropout=dropout,
                                encoder_learning_rate=1e-12, learning_rate=1e-12, early_stopping_patience=None)
        first[dropout] = next(e.similarity for e in train(model, train_set, val_set, config) if isinstance(e, StepEvent))
    assert first[False] < 1e-5 and first[True] > 1e-3, first  # nothing has moved yet: only dropout differs


def test_the_topic_head_first_is_the_frozen_encoder_presets_fit_and_the_sentiment_head_starts_new(tokenizer, synthetic):
    train_set, val_set = synthetic
    exact = _tiny(tokenizer)
    fit(exact, train_set, None, TrainingConfig(freeze="encoder"))  # the optimum on the frozen encoder's vectors
    model = _tiny(tokenizer)
    new_head = model.state_dict()["sentiment_head.linear.weight"].clone()
    config = TrainingConfig(epochs=1, freeze="none", topic_head_first=True, encoder_learning_rate=1e-12,
                            learning_rate=1e-12, max_grad_norm=None, early_stopping_patience=None)
    fit(model, train_set, val_set, config)  # steps too small to move anything: the heads are as they started
    for name in ("classifier.linear.weight", "classifier.linear.bias"):
        a, b = exact.state_dict()[name], model.state_dict()[name]
        assert torch.allclose(a, b, atol=1e-3 * float(a.abs().max())), name
    assert torch.allclose(model.state_dict()["sentiment_head.linear.weight"], new_head, atol=1e-6)


def test_length_grouped_batches_cover_every_row_once_with_little_padding():
    lengths = torch.randint(3, 200, (1000,))
    generator = torch.Generator().manual_seed(0)
    grouped = _batches(1000, 32, generator, lengths)
    plain = _batches(1000, 32, torch.Generator().manual_seed(0), None)
    assert sorted(torch.cat(grouped).tolist()) == list(range(1000))
    padded = lambda batches: sum(len(b) * int(lengths[b].max()) for b in batches)  # noqa: E731
    assert padded(grouped) < 0.6 * padded(plain)
    assert _batches(1000, 32, torch.Generator().manual_seed(0), lengths)[0].tolist() == grouped[0].tolist()  # seeded


def test_mixed_precision_is_chosen_by_the_hardware_and_an_impossible_one_is_refused():
    cpu = torch.device("cpu")
    assert training_dtype("fp32", cpu) is None
    assert training_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_fast_bf16() else None)
    with pytest.raises(ConfigError, match="precision 'fp16' is not supported on cpu"):
        training_dtype("fp16", cpu)


def test_the_run_records_the_precision_its_encoder_steps_used_and_the_card_names_it(tokenizer, synthetic):
    fast = "bf16" if cpu_has_fast_bf16() else "fp32"
    for freeze, used in (("none", fast), ("encoder", "fp32")):  # a frozen encoder never runs in a step
        model = _tiny(tokenizer)
        result = fit(model, *synthetic, TrainingConfig(epochs=1, freeze=freeze, precision="auto"))
        assert result.precision == used and model.record.config.precision == used, freeze
        if freeze == "none":
            assert f"precision {used}" in model_card(model.facts())


@pytest.mark.parametrize("device, message", [("meta", "holds no values"), ("mps", "is not available here"),
                                             ("xpu", "is not available here")])
def test_a_device_that_is_not_here_is_refused_in_words(device, message):
    try:
        resolve_device(device)
    except ConfigError as exc:
        assert message in str(exc) and "\n" not in str(exc)
    else:
        pytest.skip(f"this machine has a working {device}")


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_that_resumes_to_the_uninterrupted_runs_weights(tiny_encoder_dir, tmp_path):
    from safetensors.torch import load_file

    args = ["train", "--builtin", "synthetic", "--size", "3000", "--model", tiny_encoder_dir, "--recipe", "finetune",
            "--epochs", "2", "--batch-size", "8", "--encoder-lr", "1e-3", "--quiet"]
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "core", *map(str, args), "--out", str(whole)], check=True, capture_output=True)

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "core", *map(str, args), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first epoch's checkpoint: now stop it in the second
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: stopped at epoch 2, step "), err
    assert f"go on with: python -m core train --resume {out}" in err and "Traceback" not in err

    proc = subprocess.run([sys.executable, "-m", "core", "train", "--resume", str(out), "--epochs", "9"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--resume goes on with the run's own settings" in proc.stderr
    subprocess.run([sys.executable, "-m", "core", "train", "--resume", str(out), "--quiet"], check=True,
                   capture_output=True, env=os.environ)
    assert not (out / "checkpoint").exists()  # a finished model
    for name in ("heads.safetensors", "encoder/model.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(out / name))
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6, name

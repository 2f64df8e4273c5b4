"""The training loop: events, loss going down, reproducibility, stop, early stopping, the cache."""

import math
import threading

import numpy as np
import pytest
import torch

from core.config import HeadsConfig, TrainingConfig
from core.data import MultiTaskDataset
from core.datasets import make_synthetic
from core.model import MultiTaskModel
from core.training import (DoneEvent, EpochEvent, PrepareEvent, StartEvent, StepEvent, ValidationEvent, evaluate, fit,
                           selection_score, train)
from tests.helpers import make_tiny_encoder

CLASSES = ["Business", "Sci/Tech", "Sports", "World"]


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(240, seed=5).split(0.25, seed=0)


def _tiny(tokenizer, seed=0):
    torch.manual_seed(seed)
    return MultiTaskModel(make_tiny_encoder(tokenizer, seed=seed), HeadsConfig(class_names=CLASSES))


def test_event_stream(tiny_model, synthetic):
    train_set, val_set = synthetic
    config = TrainingConfig(epochs=2, batch_size=32, freeze="none", early_stopping_patience=None)
    events = list(train(tiny_model, train_set, val_set, config))
    kinds = [e.kind for e in events]
    steps_per_epoch = math.ceil(len(train_set) / 32)
    assert isinstance(events[0], StartEvent) and events[0].total_steps == 2 * steps_per_epoch
    epoch = ["step"] * steps_per_epoch + ["epoch", "validation"]
    assert kinds == ["start"] + epoch + ["checkpoint"] + epoch + ["done"]  # a checkpoint after each epoch but the last
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [s.global_step for s in steps] == list(range(1, 2 * steps_per_epoch + 1))
    assert all(set(s.losses) == {"classification", "sentiment"} and math.isfinite(s.loss) for s in steps)
    lrs = [s.learning_rate for s in steps]
    assert max(lrs) == pytest.approx(config.learning_rate, rel=0.05) and lrs[-1] < lrs[len(lrs) // 2]  # warm-up, then decay
    validation = [e for e in events if isinstance(e, ValidationEvent)]
    assert {"accuracy", "macro_f1", "mse", "mae", "pearson", "spearman"} <= set(validation[-1].metrics)
    assert events[-1].result.history[-1]["validation"]["loss"] == validation[-1].loss


def test_training_lowers_the_loss_on_synthetic_data(real_model, synthetic):
    train_set, val_set = synthetic
    untrained = evaluate(real_model, val_set)
    config = TrainingConfig(epochs=8, learning_rate=2e-2, early_stopping_patience=None, head_solver="sgd")
    result = fit(real_model, train_set, val_set, config)
    val_losses = [h["validation"]["loss"] for h in result.history]
    assert val_losses[-1] < 0.8 * val_losses[0]  # and the first is after one epoch of learning already
    trained = evaluate(real_model, val_set)
    # 180 rows with negations and mixed settings: a frozen encoder reads the topics well, the sentiment less so.
    assert trained["accuracy"] > 0.85 > untrained["accuracy"]
    assert trained["pearson"] > 0.7 and trained["mse"] < 0.5 * untrained["mse"]


def test_same_seed_same_history_and_weights(tokenizer, synthetic):
    train_set, val_set = synthetic
    config = TrainingConfig(epochs=2, freeze="none", seed=7)
    runs = []
    for _ in range(2):
        model = _tiny(tokenizer)
        runs.append((fit(model, train_set, val_set, config).history, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    other = _tiny(tokenizer)
    assert fit(other, train_set, val_set, TrainingConfig(epochs=2, freeze="none", seed=8)).history != runs[0][0]


def test_stop_keeps_the_model_trained_so_far(tiny_model, synthetic, tmp_path):
    train_set, val_set = synthetic
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    stop = threading.Event()
    seen = []
    for event in train(tiny_model, train_set, val_set, TrainingConfig(epochs=5, freeze="none"), stop=stop):
        seen.append(event)
        if isinstance(event, StepEvent) and event.global_step == 3:
            stop.set()
    done = seen[-1]
    assert isinstance(done, DoneEvent) and done.result.stopped and done.result.steps == 3
    assert sum(isinstance(e, StepEvent) for e in seen) == 3
    assert any(not torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert not tiny_model.training
    reloaded = MultiTaskModel.load(tiny_model.save(tmp_path / "stopped"))
    predictions = reloaded.predict(["The striker scored twice."])
    assert predictions[0].label in CLASSES and math.isfinite(predictions[0].sentiment)


def test_early_stopping_restores_the_best_weights(tiny_model, synthetic):
    train_set, val_set = synthetic
    # A learning rate this high makes validation loss bounce, so the best epoch is not the last.
    config = TrainingConfig(epochs=6, freeze="none", learning_rate=0.3, encoder_learning_rate=0.2,
                            early_stopping_patience=2, warmup_ratio=0.0, max_grad_norm=None,
                            group_by_length=False)  # the batch order this bounce was found with
    events = list(train(tiny_model, train_set, val_set, config))
    result = events[-1].result
    best = [e for e in events if isinstance(e, ValidationEvent) and e.epoch == result.best_epoch][0]
    assert result.best_metrics == best.metrics
    assert result.best_epoch != result.history[-1]["epoch"], "test set-up: expected a non-final best epoch"
    assert evaluate(tiny_model, val_set) == pytest.approx(best.metrics, abs=1e-6)


def test_selection_score_orders_epochs_by_loss_or_by_the_figures_people_read():
    assert selection_score("loss", 0.5, {"accuracy": 0.9, "pearson": 0.7}) == 0.5
    assert selection_score("metrics", 0.5, {"accuracy": 0.9, "pearson": 0.7, "mse": 0.1}) == pytest.approx(-0.8)
    assert selection_score("metrics", 0.5, {"accuracy": 0.9}) == pytest.approx(-0.9)  # a topic-only run
    assert selection_score("metrics", 0.5, {"pearson": float("nan")}) == 0.0  # constant predictions: no better than 0


def test_best_epoch_by_metrics_keeps_the_epoch_with_the_best_held_out_figures(tiny_model, synthetic):
    train_set, val_set = synthetic
    config = TrainingConfig(epochs=6, freeze="none", learning_rate=0.3, encoder_learning_rate=0.2,
                            early_stopping_patience=None, warmup_ratio=0.0, max_grad_norm=None,
                            group_by_length=False, best_epoch_by="metrics")
    events = list(train(tiny_model, train_set, val_set, config))
    result = events[-1].result
    scores = {e.epoch: (e.metrics["accuracy"] + e.metrics["pearson"]) / 2 for e in events if isinstance(e, ValidationEvent)}
    assert result.best_epoch == max(scores, key=scores.get)
    assert result.best_epoch != result.history[-1]["epoch"], "test set-up: expected a non-final best epoch"
    assert evaluate(tiny_model, val_set) == pytest.approx(result.best_metrics, abs=1e-6)


def test_rows_without_one_target_train_without_nan(tiny_model):
    data = MultiTaskDataset(["a good match", "shares fell", "a new phone", "talks failed"] * 4,
                            ["Sports", None, "Sci/Tech", None] * 4, [None, -0.5, None, -0.8] * 4)
    events = list(train(tiny_model, data, data, TrainingConfig(epochs=2, batch_size=2, freeze="none")))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert all(math.isfinite(s.loss) for s in steps)
    assert any(set(s.losses) == {"classification"} for s in steps)  # batches with only labels ...
    assert any(set(s.losses) == {"sentiment"} for s in steps)  # ... and with only sentiment


def test_frozen_encoder_embeds_each_text_once(tiny_model, synthetic):
    train_set, val_set = synthetic
    calls = []
    tiny_model.encoder.backbone.register_forward_hook(lambda *args: calls.append(1))
    events = list(train(tiny_model, train_set, val_set, TrainingConfig(epochs=1, freeze="encoder")))
    assert events[0].cached
    after_one = len(calls)
    list(train(tiny_model, train_set, val_set, TrainingConfig(epochs=4, freeze="encoder", early_stopping_patience=None)))
    assert len(calls) - after_one == after_one  # 4 epochs cost the backbone what 1 epoch did: the caching pass
    assert after_one == math.ceil(len(train_set) / 64) + math.ceil(len(val_set) / 64)


def test_cached_and_uncached_training_agree(tokenizer, synthetic):
    train_set, val_set = synthetic
    results = []
    for cache in (True, False):
        model = _tiny(tokenizer)
        config = TrainingConfig(epochs=2, cache_embeddings=cache, head_solver="sgd")
        results.append(fit(model, train_set, val_set, config).best_metrics)
    assert results[0] == pytest.approx(results[1], abs=1e-4)


def test_gradual_unfreezing_opens_one_layer_per_epoch(tiny_model, synthetic):
    train_set, val_set = synthetic
    config = TrainingConfig(epochs=3, gradual_unfreeze=True, layer_lr_decay=0.8, early_stopping_patience=None)
    events = list(train(tiny_model, train_set, val_set, config))
    assert events[0].cached
    assert [e.freeze.open_layers for e in events if isinstance(e, EpochEvent)] == [0, 1, 2]


def test_gradual_unfreezing_runs_the_frozen_bottom_once_per_epoch(tiny_model, synthetic):
    train_set, val_set = synthetic
    bottom_calls, top_calls = [], []
    layers = tiny_model.encoder.backbone.encoder.layer  # 2 layers
    layers[0].register_forward_hook(lambda *args: bottom_calls.append(1))
    layers[1].register_forward_hook(lambda *args: top_calls.append(1))
    config = TrainingConfig(epochs=2, batch_size=8, gradual_unfreeze=True, early_stopping_patience=None)
    list(train(tiny_model, train_set, val_set, config))
    passes = math.ceil(len(train_set) / 64) + math.ceil(len(val_set) / 64)  # one caching pass over train + val
    steps = math.ceil(len(train_set) / 8)
    # Epoch 1: heads only, from pooled vectors (one pass through both layers). Epoch 2: layer 0
    # stays frozen and runs only in its caching pass; layer 1 is open and runs at every step and
    # in validation. After the run the open top runs once more over the training rows' cached states,
    # for the topic head's unsure rule (core.confidence); the bottom never runs again.
    assert len(bottom_calls) == 2 * passes
    assert len(top_calls) == passes + steps + math.ceil(len(val_set) / 64) + math.ceil(len(train_set) / 64)


@pytest.mark.parametrize("prefetch", [True, False])
def test_gradual_unfreezing_caches_the_coming_epochs_in_one_pass(tokenizer, synthetic, monkeypatch, prefetch):
    import core.cache

    if not prefetch:
        monkeypatch.setattr(core.cache, "PREFETCH_BYTES", 0)  # no room: each epoch runs its own pass
    train_set, val_set = synthetic
    model = _tiny(tokenizer)
    calls = []
    model.encoder.backbone.embeddings.register_forward_hook(lambda *args: calls.append(1))
    config = TrainingConfig(epochs=3, batch_size=8, gradual_unfreeze=True, early_stopping_patience=None)
    list(train(model, train_set, val_set, config))
    passes = math.ceil(len(train_set) / 64) + math.ceil(len(val_set) / 64)
    # Epoch 1: the pooled cache. Epoch 2 caches layer 0's output (for itself) and, room allowing,
    # the embeddings' output (for epoch 3) in the same pass; epoch 3 then starts from the latter.
    assert len(calls) == (2 if prefetch else 3) * passes


def test_gradual_unfreezing_cached_and_uncached_agree(tokenizer, synthetic):
    train_set, val_set = synthetic
    states = []
    for cache in (True, False):
        model = _tiny(tokenizer)
        model.encoder.backbone.config.hidden_dropout_prob = 0.0
        fit(model, train_set, val_set, TrainingConfig(epochs=3, batch_size=16, gradual_unfreeze=True, cache_embeddings=cache,
                                                      early_stopping_patience=None))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for name, value in states[0].items():
        assert torch.allclose(value, states[1][name], atol=1e-4), name


def test_nothing_to_train_is_refused(tiny_model, synthetic):
    with pytest.raises(ValueError, match="Nothing to train: freeze preset 'all'"):  # a baseline needs held-out rows
        list(train(tiny_model, synthetic[0], None, TrainingConfig(freeze="all")))
    sentiment_only = MultiTaskDataset(["a", "b"], [None, None], [0.1, 0.2])
    with pytest.raises(ValueError, match="Nothing to learn"):
        list(train(tiny_model, sentiment_only, None, TrainingConfig(sentiment_weight=0.0)))


@pytest.mark.parametrize("settings, message", [
    ({"learning_rate": 0}, "learning_rate must be > 0"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"classification_weight": 0, "sentiment_weight": 0}, "both 0"),
    ({"freeze": "heads"}, "Valid freeze preset values are: none, all, encoder"),
    ({"gradual_unfreeze": True, "freeze": "all"}, "gradual_unfreeze .* needs freeze 'none' or 'encoder'"),
    ({"layer_lr_decay": 1.5}, r"layer_lr_decay must be in \(0, 1\]"),
    ({"best_epoch_by": "accuracy"}, "Valid best_epoch_by values are: loss, metrics"),
    ({"keep_sentiment_rows": 1.5}, "keep_sentiment_rows must be a share from 0 to 1, got 1.5"),
])
def test_bad_training_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**settings)


def test_unknown_label_in_validation_data_names_the_row(tiny_model, synthetic):
    bad = MultiTaskDataset(["x"], ["Weather"], [None], ["val.csv row 2"])
    with pytest.raises(ValueError, match=r"val.csv row 2, column 'label': 'Weather' is not one of the model's classes"):
        list(train(tiny_model, synthetic[0], bad, TrainingConfig(epochs=1)))


def test_zero_task_weight_drops_rows_that_only_carry_that_task(tiny_model):
    data = MultiTaskDataset(["a good match", "shares fell", "a new phone", "talks failed"] * 4,
                            ["Sports", None, "Sci/Tech", None] * 4, [None, -0.5, None, -0.8] * 4)
    config = TrainingConfig(epochs=1, batch_size=2, classification_weight=0.0, head_solver="sgd")
    events = list(train(tiny_model, data, data, config))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert len(steps) == 4  # the 8 sentiment rows, 2 per batch; the topic-only rows are left out
    assert all(set(s.losses) == {"sentiment"} for s in steps)


def test_a_deadline_ends_the_run_like_stop_and_says_it_expired(tiny_model, synthetic):
    import threading

    from core.training import Deadline

    train_set, val_set = synthetic
    stop = threading.Event()
    late = Deadline(3600, stop)
    assert not late.is_set() and not late.expired
    stop.set()
    assert late.is_set() and not late.expired  # the Stop button, not the clock

    gone = Deadline(0.0)
    events = list(train(tiny_model, train_set, val_set, TrainingConfig(epochs=2), stop=gone))
    result = events[-1].result
    assert gone.expired and result.stopped and result.steps == 0


# -- heads on a frozen encoder: fitted exactly -----------------------------------------------------------


def test_heads_on_a_frozen_encoder_reach_the_probes_optimum(real_model):
    """Eight rows per topic: the topic head is scikit-learn's converged LogisticRegression(C=1) on the same
    embeddings, the sentiment head its Ridge(alpha=1), fitted on every row given (training + held-out)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    data = make_synthetic(32, seed=3)
    train_set, val_set = data.split(0.25, seed=0)
    model = MultiTaskModel.for_data(data, real_model.encoder, seed=0)
    result = fit(model, train_set, val_set, TrainingConfig())
    assert not result.stopped and result.steps > 1 and {"accuracy", "pearson"} <= set(result.best_metrics)
    assert model.record.head_fit["final_fit"] == "training + held-out rows"

    X = model.encoder.encode(data.texts)  # (32, 384): what the heads see
    labels = data.label_ids(model.class_names).numpy()
    probe = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X, labels)
    ridge = Ridge(alpha=1.0).fit(X, data.sentiment_targets().numpy())
    out = model.predict_tensors(data.texts)
    assert np.abs(torch.softmax(out.logits, -1).numpy() - probe.predict_proba(X)).max() < 1e-4
    assert np.abs(out.sentiment.numpy() - ridge.predict(X)).max() < 1e-4


def test_an_exact_fit_is_deterministic_streams_its_iterations_and_stops_when_asked(real_model, synthetic):
    import threading

    train_set, val_set = synthetic
    heads = []
    for _ in range(2):
        model = MultiTaskModel.for_data(train_set, real_model.encoder, seed=5)
        events = list(train(model, train_set, val_set, TrainingConfig(epochs=3, seed=5)))
        heads.append({k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")})
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert events[0].cached and [s.global_step for s in steps] == list(range(1, len(steps) + 1))
    prepared = [(e.done, e.total) for e in events if isinstance(e, PrepareEvent)]  # the embedding pass, told
    assert prepared[-1] == (len(train_set) + len(val_set),) * 2 and prepared == sorted(prepared)
    assert steps[-1].losses["classification"] < steps[0].losses["classification"]  # the curve goes down

    stop = threading.Event()
    model = MultiTaskModel.for_data(train_set, real_model.encoder, seed=5)
    partial = []
    for event in train(model, train_set, val_set, TrainingConfig(epochs=3, seed=5), stop=stop):
        if isinstance(event, StepEvent) and event.global_step == 3:
            stop.set()
        partial.append(event)
    result = partial[-1].result
    assert result.stopped and result.steps == 3 and model.record.head_fit["final_fit"] == "training rows"


def test_small_data_figures_come_from_leave_one_out_over_every_row_whatever_the_split(real_model):
    from core.probe import fit_logistic

    data = make_synthetic(28, seed=2)
    results = []
    for fraction in (0.1, 0.3):  # 3 or 8 held-out rows: the figures must not hang on which
        train_set, val_set = data.split(fraction, seed=0)
        model = MultiTaskModel.for_data(data, real_model.encoder, seed=0)
        results.append(fit(model, train_set, val_set, TrainingConfig(epochs=2, seed=0)))
    assert [r.measured_on for r in results] == ["leave-one-out cross-validation over all 28 rows"] * 2
    assert results[0].best_metrics == pytest.approx(results[1].best_metrics, abs=1e-9)
    assert results[0].best_metrics["n_classification"] == 28 and model.record.head_fit["held_out_figures"]

    # By hand: each row's topic from a logistic fit on the other 27, with the same penalty.
    with torch.no_grad():
        pooled = model.encoder.embed(data.texts, convert_to="tensor", stage="pooled").embeddings
        X = model.encoder.project(pooled).double()  # what the heads see
    y = data.label_ids(model.class_names)
    hits = 0
    for i in range(len(data)):
        others = torch.arange(len(data)) != i
        W, b = fit_logistic(X[others], y[others], len(model.class_names), 1.0 / 27)
        hits += int((X[i] @ W.T + b).argmax() == y[i])
    assert results[0].best_metrics["accuracy"] == pytest.approx(hits / 28)


def test_held_out_rows_give_the_figures_from_two_hundred_rows_on(real_model, synthetic):
    train_set, val_set = synthetic  # 240 rows
    model = MultiTaskModel.for_data(train_set, real_model.encoder, seed=0)
    result = fit(model, train_set, val_set, TrainingConfig(epochs=2, seed=0))
    assert result.measured_on == "the held-out rows" and result.best_metrics["n_classification"] == len(val_set)


def test_a_run_that_diverges_ends_at_once_with_a_clear_message(tokenizer, synthetic):
    from core.errors import DivergedError

    train_set, val_set = synthetic
    tiny_model = _tiny(tokenizer)  # its own: this run leaves it broken
    config = TrainingConfig(epochs=3, freeze="none", learning_rate=1e30, encoder_learning_rate=1e30,
                            warmup_ratio=0.0, max_grad_norm=None, head_solver="sgd")
    steps = []
    with pytest.raises(DivergedError, match=r"training diverged at epoch 1, step \d+: the loss became (nan|inf)\. "
                                            r"Lower the learning rate \(now 1e\+30 for the heads, 1e\+30 for the "
                                            r"encoder\); nothing from this run was kept"):
        for event in train(tiny_model, train_set, val_set, config):
            steps += [event] if isinstance(event, StepEvent) else []
    assert len(steps) < 10  # it ended at the first bad step, not after three epochs of noise


def test_everything_frozen_is_a_baseline_with_the_figures_evaluate_gives(tiny_model, synthetic):
    train_set, val_set = synthetic
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    events = list(train(tiny_model, train_set, val_set, TrainingConfig(freeze="all")))
    assert [e.kind for e in events] == ["start", "validation", "done"]
    result = events[-1].result
    assert result.steps == 0 and all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    expected = evaluate(tiny_model, val_set)
    assert result.best_metrics == pytest.approx(expected, abs=1e-6)


def test_little_data_is_not_stopped_early_on_a_handful_of_rows_nor_spent_in_warm_up(tiny_model):
    train_set, val_set = make_synthetic(24, seed=1).split(0.2, seed=0)  # 19 rows to learn from, 5 held out
    # This rate makes the held-out loss bounce: on 60 rows, patience 1 stops such a run (see above).
    config = TrainingConfig(epochs=6, batch_size=32, freeze="none", learning_rate=0.3, encoder_learning_rate=0.05,
                            early_stopping_patience=1, warmup_ratio=0.5, head_solver="sgd")
    events = list(train(tiny_model, train_set, val_set, config))
    result = events[-1].result
    assert len(result.history) == 6 and not result.stopped_early
    steps = [e for e in events if isinstance(e, StepEvent)]  # one step per epoch; each says the next step's rate
    assert steps[0].learning_rate == pytest.approx(config.learning_rate)  # warm-up over after the first epoch


@pytest.mark.parametrize("how", ["done", "stopped", "diverged"])
def test_a_run_keeps_no_gradients(tiny_model, synthetic, how):
    """The last step's gradients are as big as every weight that trained (86 MB for MiniLM): not kept."""
    train_set, val_set = synthetic
    stop = threading.Event()
    config = TrainingConfig(epochs=2, batch_size=32, freeze="none", early_stopping_patience=None,
                            learning_rate=1e30 if how == "diverged" else 1e-3)
    events = train(tiny_model, train_set, val_set, config, stop=stop)
    try:
        for event in events:
            if how == "stopped" and isinstance(event, StepEvent) and event.global_step == 2:
                stop.set()
    except Exception as exc:
        assert how == "diverged" and "diverged" in str(exc)
    assert all(p.grad is None for p in tiny_model.parameters())
    assert any(p.requires_grad for p in tiny_model.parameters())  # it did train


def test_a_huge_epoch_count_with_gradual_unfreezing_lists_only_the_layers_to_come(tiny_model, synthetic, monkeypatch):
    """--epochs 1000000000 --gradual-unfreeze built a list over every remaining epoch at each epoch: 85 s for 4
    steps. The layers still to open are at most the encoder's layers, whatever the epoch count."""
    from core.cache import TrainingInputs

    train_set, val_set = synthetic
    seen, set_frozen = [], TrainingInputs.set_frozen

    def spy(self, frozen_layers, coming=()):
        seen.append(len(coming))
        return set_frozen(self, frozen_layers, coming)

    monkeypatch.setattr(TrainingInputs, "set_frozen", spy)
    stop = threading.Event()
    config = TrainingConfig(epochs=10**9, batch_size=64, freeze="none", gradual_unfreeze=True,
                            early_stopping_patience=None)
    for event in train(tiny_model, train_set, val_set, config, stop=stop):
        if isinstance(event, EpochEvent) and event.epoch == 3:
            stop.set()
    assert seen and max(seen) <= len(tiny_model.encoder.layers)  # 2 layers here, not 999,999,999 epochs

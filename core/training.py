"""The training loop. It knows nothing of any UI: it yields events that the CLI's progress bar,
the tests and the app's live plots all consume.

    for event in train(model, train_set, val_set, TrainingConfig(epochs=3)):
        if isinstance(event, StepEvent): ...
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import torch
import torch.nn.functional as F

from .cache import TrainingInputs
from .confidence import MAX_ROWS as CONFIDENCE_ROWS
from .confidence import MAX_ROWS_EMBEDDED_AGAIN as CONFIDENCE_ROWS_EMBEDDED_AGAIN
from .confidence import MIN_ROWS as CONFIDENCE_MIN_ROWS
from .confidence import ConfidenceRule, fit_rule
from .config import TrainingConfig
from .data import MultiTaskDataset
from .errors import ConfigError, DivergedError
from .freezing import FreezeReport, apply_preset, freeze_report, parameter_groups, unfreeze_top_layers
from .losses import IGNORE_LABEL, MultiTaskLoss
from .metrics import classification_metrics, confusion, per_class, regression_metrics
from .model import MultiTaskModel
from .probe import fit_logistic, fit_ridge, logistic_steps
from .record import TrainingRecord
from .precision import dtype_name, training_dtype
from .runtime import eval_mode, resolve_device, seed_everything

if TYPE_CHECKING:
    from .datasets import StsPairs

logger = logging.getLogger(__name__)

# An exact fit on a frozen encoder streams its L-BFGS iterations: this many make one "epoch" of the curves.
ITERATIONS_PER_EPOCH = 25
MIN_ROWS_TO_STOP_EARLY = 50  # held-out rows early stopping needs; with fewer, every epoch runs


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class Deadline:
    """A stop flag that is also set once ``seconds`` have passed since it was made (a host's time limit).

    ``stop``: another flag (the Stop button's) that ends the run too. ``expired`` tells the two apart.
    """

    def __init__(self, seconds: float, stop: StopFlag | None = None) -> None:
        self.seconds, self.stop = seconds, stop
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def expired(self) -> bool:
        return self.elapsed > self.seconds

    def is_set(self) -> bool:
        return self.expired or (self.stop is not None and self.stop.is_set())


# -- events ---------------------------------------------------------------------------------


@dataclass
class StartEvent:
    total_steps: int
    steps_per_epoch: int
    freeze: FreezeReport
    cached: bool  # the frozen part of the encoder runs once, not every step
    kind: str = "start"


@dataclass
class PrepareEvent:
    """Work before the first step: ``done`` of ``total`` texts embedded (the frozen encoder runs once)."""

    done: int
    total: int
    kind: str = "prepare"


@dataclass
class StepEvent:
    epoch: int
    step: int  # within the epoch, from 1
    global_step: int  # from 1
    total_steps: int
    loss: float  # weighted total
    losses: dict[str, float]  # per task, unweighted
    learning_rate: float
    similarity: float | None = None  # keep_similarity's term: mean(1 - cosine) to the frozen encoder's vectors
    kind: str = "step"


@dataclass
class EpochEvent:
    """End of an epoch's training part: mean train losses over its steps."""

    epoch: int
    losses: dict[str, float]
    freeze: FreezeReport
    kind: str = "epoch"


@dataclass
class ValidationEvent:
    epoch: int
    loss: float  # weighted total, what early stopping watches
    losses: dict[str, float]
    metrics: dict[str, float]
    is_best: bool
    kind: str = "validation"


HELD_OUT = "the held-out rows"  # TrainResult.measured_on when the figures come from the validation split


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # one entry per epoch: train losses, validation losses and metrics
    best_epoch: int | None
    best_metrics: dict[str, float]
    stopped: bool  # the stop flag ended the run; the model keeps what it learned so far
    stopped_early: bool  # early stopping ended the run; the best weights were restored
    steps: int
    seconds: float
    freeze: FreezeReport
    measured_on: str = HELD_OUT  # where best_metrics come from, in words (HELD_OUT or cross-validation)
    # The topic predictions best_metrics were measured on, topic by topic (see topic_breakdown); None without
    # topic rows to measure on (no topic head or data, or no validation before Stop).
    breakdown: dict[str, Any] | None = None
    precision: str = "fp32"  # the autocast the encoder's steps ran under ("fp32" when the encoder did not learn)


@dataclass
class TrainState:
    """All a run needs to go on exactly where it was: at ``step`` batches into ``epoch`` (from 0).

    Tensors and plain values only, so a checkpoint folder holds safetensors and JSON (core.checkpoint).
    """

    epoch: int
    step: int
    global_step: int
    epoch_rng: torch.Tensor  # the batch-order generator's state before ``epoch`` drew its batches
    rng: torch.Tensor  # torch's CPU generator (dropout) after the last step
    cuda_rng: torch.Tensor | None
    sums: dict[str, float]  # the epoch's running loss sums so far
    history: list[dict[str, Any]]  # the epochs done
    best_score: float  # the kept epoch's held-out score, lower is better (see selection_score)
    best_epoch: int | None
    best_metrics: dict[str, float]
    best_breakdown: dict[str, Any] | None
    bad_epochs: int
    best_state: dict[str, torch.Tensor] | None  # the best epoch's weights (of the parameters that change)
    optimizer: dict[str, Any]  # state_dicts
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    teacher: torch.Tensor | None  # (N, H) the frozen encoder's pooled vectors (keep_similarity, topic_head_first)
    seconds: float  # run time so far


@dataclass
class CheckpointEvent:
    """A point the run can go on from: after every epoch but the last, and when Stop ends a run early."""

    state: TrainState
    kind: str = "checkpoint"


@dataclass
class DoneEvent:
    result: TrainResult
    kind: str = "done"


Event = StartEvent | PrepareEvent | StepEvent | EpochEvent | ValidationEvent | CheckpointEvent | DoneEvent
EMBED_CHUNK = 256  # texts embedded between two PrepareEvents
LENGTH_GROUP = 16  # batches whose rows are sorted by length together (see _batches)
# Below this many rows (training + held-out) a held-out split is a handful of rows and its figures are
# noise: an exact fit reports k-fold cross-validation over every row instead (the fits take milliseconds).
# Up to LEAVE_ONE_OUT_UP_TO rows each row is predicted by a fit on all the others (one answer, whatever the
# split); above that, CV_FOLDS folds.
CROSS_VALIDATE_BELOW = 200
LEAVE_ONE_OUT_UP_TO = 100
CV_FOLDS = 10


# -- helpers ----------------------------------------------------------------------------------


def warmup_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def _inputs(model: MultiTaskModel, data: MultiTaskDataset, batch_size: int) -> TrainingInputs:
    return TrainingInputs(model, data.texts, data.label_ids(model.class_names), data.sentiment_targets(), batch_size)


def _rows_with_targets(data: MultiTaskDataset, tasks: tuple[str, ...]) -> MultiTaskDataset:
    keep = [i for i in range(len(data)) if ("classification" in tasks and data.labels[i] is not None)
            or ("sentiment" in tasks and data.sentiments[i] is not None)]
    return data if len(keep) == len(data) else data.subset(keep)


def _batch_tasks(tasks: tuple[str, ...], labels: torch.Tensor, targets: torch.Tensor) -> tuple[str, ...]:
    """Per-task forward passes: only the heads whose targets this batch carries."""
    has = {"classification": bool((labels != IGNORE_LABEL).any()), "sentiment": bool((~torch.isnan(targets)).any())}
    return tuple(t for t in tasks if has[t])


@torch.no_grad()
def _validate(model: MultiTaskModel, inputs: TrainingInputs, tasks: tuple[str, ...], loss_fn: MultiTaskLoss,
              batch_size: int) -> tuple[float, dict[str, float], dict[str, float], dict[str, Any] | None]:
    """The held-out loss (total and per task), the metrics, and the topics' breakdown (see topic_breakdown)."""
    logits, scores = [], []
    with eval_mode(model):
        for start in range(0, len(inputs), batch_size):
            index = torch.arange(start, min(start + batch_size, len(inputs)))
            out = inputs.forward(index, tasks)
            logits.append(out.logits)
            scores.append(out.sentiment)
    logits_all = torch.cat(logits) if "classification" in tasks else None
    scores_all = torch.cat(scores) if "sentiment" in tasks else None
    loss = loss_fn(logits_all, scores_all, inputs.labels, inputs.targets)
    metrics = task_metrics(model, logits_all, scores_all, inputs.labels, inputs.targets)
    return (float(loss.total), {t: float(v) for t, v in loss.per_task.items()}, metrics,
            topic_breakdown(model, logits_all, inputs.labels))


def task_metrics(model: MultiTaskModel, logits: torch.Tensor | None, scores: torch.Tensor | None,
                 labels: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro-F1 on labelled rows; MSE, MAE, Pearson, Spearman on rows with sentiment.

    Sentiment is scored as users see it: clipped to the model's scale.
    """
    metrics: dict[str, float] = {}
    has_label = labels != IGNORE_LABEL
    if logits is not None and has_label.any():
        y_pred = logits[has_label].argmax(-1).cpu().numpy()
        metrics |= classification_metrics(labels[has_label].cpu().numpy(), y_pred, len(model.class_names))
        metrics["n_classification"] = int(has_label.sum())
    has_score = ~torch.isnan(targets)
    if scores is not None and has_score.any():
        pred = model.clip_sentiment(scores[has_score]).float().cpu().numpy()
        metrics |= regression_metrics(targets[has_score].cpu().numpy(), pred)
        metrics["n_sentiment"] = int(has_score.sum())
    return metrics


def selection_score(by: str, loss: float, metrics: dict[str, float]) -> float:
    """How good a held-out epoch is, lower is better: its summed task loss (``by="loss"``), or minus the mean of
    its accuracy and Pearson over the tasks present (``by="metrics"``; a Pearson that is NaN counts as 0)."""
    if by == "loss":
        return loss
    figures = [metrics[k] for k in ("accuracy", "pearson") if k in metrics]
    return -sum(0.0 if math.isnan(f) else f for f in figures) / max(len(figures), 1)


def topic_breakdown(model: MultiTaskModel, logits: torch.Tensor | None, labels: torch.Tensor) -> dict[str, Any] | None:
    """Where the topics go right and wrong, on the rows with a topic.

    Args:
        logits: (N, C) topic logits, or None (no topic head ran).
        labels: (N,) class indices into ``model.class_names``; IGNORE_LABEL for rows without a topic.

    Returns:
        {"per_class": {class name: {"precision", "recall", "f1", "support"}}, "confusion": {"classes": [...],
        "matrix": (C, C) counts, rows = true class, columns = predicted}}; None without logits or topic rows.
    """
    labelled = labels != IGNORE_LABEL
    if logits is None or not labelled.any():
        return None
    y_true = labels[labelled].cpu().numpy()
    y_pred = logits[labelled.to(logits.device)].argmax(-1).cpu().numpy()
    names = list(model.class_names)
    return {"per_class": per_class(y_true, y_pred, names),
            "confusion": {"classes": names, "matrix": confusion(y_true, y_pred, len(names))}}


def evaluate(model: MultiTaskModel, data: MultiTaskDataset, batch_size: int = 64, show_progress_bar: bool = False,
             *, breakdown: bool = False) -> dict[str, Any]:
    """All per-task metrics of a model on a dataset; a task with no rows in the data is left out.

    With ``breakdown``, topic classification also gives ``per_class`` ({class name: precision,
    recall, f1, support}) and ``confusion`` ({"classes": [...], "matrix": rows = true class,
    columns = predicted}); without it every value is a number, as ``task_metrics`` gives them.
    """
    tasks = tuple(t for t in data.tasks if t in model.tasks)
    labels = data.label_ids(model.class_names) if "classification" in tasks else torch.full((len(data),), IGNORE_LABEL)
    out = model.predict_tensors(data.texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
    device = out.embeddings.device
    metrics: dict[str, Any] = task_metrics(model, out.logits if "classification" in tasks else None,
                                           out.sentiment if "sentiment" in tasks else None, labels.to(device),
                                           data.sentiment_targets().to(device))
    if breakdown and "classification" in tasks:
        metrics |= topic_breakdown(model, out.logits, labels) or {}
    return metrics


# -- the loop ---------------------------------------------------------------------------------


def train(
    model: MultiTaskModel,
    train_data: MultiTaskDataset,
    val_data: MultiTaskDataset | None = None,
    config: TrainingConfig | None = None,
    stop: StopFlag | None = None,
    resume: TrainState | None = None,
    pairs: StsPairs | None = None,
) -> Iterator[Event]:
    """Train ``model`` in place, yielding events; the last event is a DoneEvent.

    Args:
        model: the model to train; its heads must cover the data's classes.
        train_data, val_data: datasets; without val_data there is no validation or early stopping.
        config: TrainingConfig (epochs, learning rates, freezing, seed, ...).
        stop: any object with ``is_set()`` (a threading.Event); checked before every step.
        resume: a CheckpointEvent's state (core.checkpoint reads one from a folder): the run goes on from
            there and ends with the weights the uninterrupted run would have (same model, data and config).
        pairs: sentence pairs with gold similarities (0-5) that the encoder also learns from while it trains
            (``config.pair_weight``, ``config.pairs_per_step``), so it keeps comparing sentences well.
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    seed_everything(config.seed)
    model.to(resolve_device(config.device))

    tasks = tuple(t for t in train_data.tasks if t in model.tasks and config.task_weights[t] > 0)
    if not tasks:
        raise ConfigError(f"Nothing to learn: the data has targets for {list(train_data.tasks) or 'no task'}, "
                         f"the model has heads for {list(model.tasks)}, task weights {config.task_weights}")
    # Rows with no target for a task being learned (e.g. topic rows when the topic weight is 0) carry nothing.
    train_data = _rows_with_targets(train_data, tasks)
    val_data = _rows_with_targets(val_data, tasks) if val_data is not None else None
    # Gradual unfreezing starts from the frozen encoder and opens one more top layer each epoch.
    report = apply_preset(model, "encoder" if config.gradual_unfreeze else config.freeze)
    if report.trainable == 0:  # everything frozen: the model as it is, measured, is the baseline
        yield from _baseline(model, val_data, tasks, config, report, started)
        return

    if _fits_exactly(model, config):
        yield from _fit_heads_exactly(model, train_data, val_data, tasks, config, stop, report, started)
        return

    train_inputs = _inputs(model, train_data, config.batch_size)
    val_inputs = _inputs(model, val_data, config.batch_size) if val_data is not None and len(val_data) else None
    frozen_layers = model.encoder.frozen_bottom()
    val_tasks = tuple(t for t in tasks if val_data is not None and t in val_data.tasks)
    device = model.encoder.device
    encoder_learns = config.gradual_unfreeze or any(p.requires_grad for p in model.encoder.backbone.parameters())
    amp = training_dtype(config.precision, device) if encoder_learns else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # fp16 needs loss scaling; bf16 not

    optimizer = torch.optim.AdamW(parameter_groups(model, config.learning_rate, encoder_learning_rate=config.encoder_learning_rate,
                                                   layer_lr_decay=config.layer_lr_decay, weight_decay=config.weight_decay))
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    # The warm-up never takes more than the first epoch: a long run on little data must not spend its
    # first epochs at a fraction of the rate.
    warmup = min(int(config.warmup_ratio * total_steps), steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(warmup, total_steps))
    # Early stopping judges on held-out rows; on a handful of them it would judge noise, so it needs enough.
    patience = config.early_stopping_patience if val_data is not None and len(val_data) >= MIN_ROWS_TO_STOP_EARLY else None
    if config.early_stopping_patience and patience is None:
        logger.info("early stopping is off: %d held-out rows are too few to judge on (%d needed)",
                    len(val_data) if val_data is not None else 0, MIN_ROWS_TO_STOP_EARLY)
    loss_fn = MultiTaskLoss(config.task_weights)
    generator = torch.Generator().manual_seed(config.seed)
    lengths = train_inputs.lengths if encoder_learns and config.group_by_length else None
    yield StartEvent(total_steps=total_steps, steps_per_epoch=steps_per_epoch, freeze=report,
                     cached=config.cache_embeddings and frozen_layers is not None)

    # The frozen encoder's pooled vectors of the training rows: what keep_similarity holds the encoder to,
    # and what topic_head_first fits the topic head on. A resumed run brings its own.
    teacher = resume.teacher if resume is not None else None
    if teacher is None and encoder_learns and (config.keep_similarity > 0 or config.topic_head_first):
        parts: list[torch.Tensor] = []
        yield from _embeddings(model, train_data.texts, config.batch_size, parts, 0, len(train_data), stage="pooled")
        teacher = torch.cat(parts).float().to(device)
        if config.topic_head_first and "classification" in tasks:
            _fit_topic_head_on(model, teacher, train_inputs)
    keep = config.keep_similarity if teacher is not None else 0.0
    pair_inputs = _PairInputs(model, pairs, config.batch_size) if pairs is not None and encoder_learns \
        and config.pair_weight > 0 else None

    history: list[dict[str, Any]] = []
    # Only weights that can change are snapshotted for early stopping: a frozen encoder is 22.7M
    # parameters that would otherwise be copied at every improving epoch.
    changing = [n for n, p in model.named_parameters() if p.requires_grad or
                (config.gradual_unfreeze and n.startswith("encoder.backbone."))]
    best_score, best_epoch, best_metrics, best_state, best_breakdown = math.inf, None, {}, None, None
    bad_epochs, global_step, stopped, stopped_early = 0, 0, False, False
    first_epoch, done_in_epoch = 0, 0
    if resume is not None:  # go on exactly where the checkpoint left off
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        history = [dict(h) for h in resume.history]
        best_score, best_epoch, best_metrics = resume.best_score, resume.best_epoch, resume.best_metrics
        best_state, best_breakdown, bad_epochs = resume.best_state, resume.best_breakdown, resume.bad_epochs
        global_step, first_epoch, done_in_epoch = resume.global_step, resume.epoch, resume.step
        started -= resume.seconds

    def state(epoch: int, step: int, epoch_rng: torch.Tensor, sums: dict[str, float]) -> TrainState:
        return TrainState(epoch=epoch, step=step, global_step=global_step, epoch_rng=epoch_rng,
                          rng=torch.get_rng_state(), cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                          sums=dict(sums), history=[dict(h) for h in history], best_score=best_score, best_epoch=best_epoch,
                          best_metrics=best_metrics, best_breakdown=best_breakdown, bad_epochs=bad_epochs,
                          best_state=best_state, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                          scaler=scaler.state_dict(), teacher=teacher, seconds=time.perf_counter() - started)

    try:
        for epoch in range(first_epoch, config.epochs):
            if config.gradual_unfreeze and epoch > 0:
                report = unfreeze_top_layers(model, epoch)
                frozen_layers = model.encoder.frozen_bottom()
            num_layers = len(model.encoder.layers)
            # the layers the next epochs open (none past the last layer: an epoch count of 10**9 lists six at most)
            coming = ([num_layers - e for e in range(epoch + 1, min(config.epochs, num_layers + 1))]
                      if config.gradual_unfreeze else [])
            for inputs in (train_inputs, val_inputs):
                if inputs is not None:  # runs the frozen bottom (for this epoch and, memory allowing, the coming ones)
                    inputs.set_frozen(frozen_layers if config.cache_embeddings else None, coming)
            model.train()
            if not config.encoder_dropout:
                model.encoder.backbone.eval()  # no dropout in the encoder; the heads keep theirs
            elif frozen_layers is not None:
                model.encoder.bottom_eval(frozen_layers)  # frozen layers run as the cache saw them: no dropout
            resuming = resume is not None and epoch == first_epoch
            if resuming:
                generator.set_state(resume.epoch_rng)
            epoch_rng = generator.get_state()
            batches = _batches(len(train_data), config.batch_size, generator, lengths)
            sums: dict[str, float] = dict(resume.sums) if resuming else {}
            steps = done_in_epoch if resuming else 0
            if resuming:  # dropout draws on from where the interrupted run stopped
                torch.set_rng_state(resume.rng)
                if resume.cuda_rng is not None and device.type == "cuda":
                    torch.cuda.set_rng_state(resume.cuda_rng, device)
            for step, index in enumerate(batches, 1):
                if step <= steps:
                    continue  # done before the checkpoint
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                index = index.to(train_inputs.labels.device)
                labels, targets = train_inputs.labels[index], train_inputs.targets[index]
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    pooled = train_inputs.pooled_rows(index)
                    out = model(pooled=pooled, tasks=_batch_tasks(tasks, labels, targets))
                    pair_loss = pair_inputs.loss(config, global_step) if pair_inputs is not None else None
                loss = loss_fn(out.logits, out.sentiment, labels, targets)
                total = loss.total
                if pair_loss is not None:
                    total = total + config.pair_weight * pair_loss
                drift = None
                if keep > 0 and train_inputs.pooled is None:  # the encoder runs: hold it near what it knew
                    distance = 1 - F.cosine_similarity(pooled.float(), teacher[index], dim=-1)
                    # a row with a topic weighs keep / batch size; one without, keep_sentiment_rows times that
                    share = torch.where(labels != IGNORE_LABEL, 1.0, config.keep_sentiment_rows).to(distance)
                    if share.sum() > 0:
                        drift = (distance * share).sum() / share.sum()
                        total = total + keep * (distance * share).sum() / len(distance)
                if not torch.isfinite(total):
                    raise _diverged(config, epoch, step, f"the loss became {total.item()}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if config.max_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                global_step, steps = global_step + 1, steps + 1
                losses = {t: v.item() for t, v in loss.per_task.items()}
                extra = [("similarity", drift.item())] if drift is not None else []
                paired = [("pairs", pair_loss.item())] if pair_loss is not None else []
                for key, value in [*losses.items(), ("total", total.item()), *extra, *paired]:
                    sums[key] = sums.get(key, 0.0) + value
                yield StepEvent(epoch=epoch, step=step, global_step=global_step, total_steps=total_steps,
                                loss=total.item(), losses=losses, learning_rate=max(scheduler.get_last_lr()),
                                similarity=extra[0][1] if extra else None)
            if stopped:  # before the partial epoch enters the history: a resumed run finishes this epoch itself
                yield CheckpointEvent(state(epoch, steps, epoch_rng, sums))
            if stopped and steps == 0:
                break
            entry: dict[str, Any] = {"epoch": epoch, "train": {k: v / steps for k, v in sums.items()}}
            yield EpochEvent(epoch=epoch, losses=entry["train"], freeze=report)
            if stopped:
                history.append(entry)
                break
            if val_inputs is not None and val_tasks:
                val_loss, val_losses, metrics, topics = _validate(model, val_inputs, val_tasks, loss_fn,
                                                                  max(config.batch_size, 64))
                score = selection_score(config.best_epoch_by, val_loss, metrics)
                is_best = score < best_score
                entry["validation"] = {"loss": val_loss, **val_losses}
                entry["metrics"] = metrics
                if is_best:
                    best_score, best_epoch, best_metrics, bad_epochs = score, epoch, metrics, 0
                    best_breakdown = topics
                    params = dict(model.named_parameters())
                    best_state = {n: params[n].detach().clone() for n in changing}
                else:
                    bad_epochs += 1
                yield ValidationEvent(epoch=epoch, loss=val_loss, losses=val_losses, metrics=metrics, is_best=is_best)
                history.append(entry)
                if patience and bad_epochs >= patience:
                    stopped_early = True
                    break
            else:
                history.append(entry)
            if epoch + 1 < config.epochs:  # a complete epoch: a run interrupted later goes on from here
                yield CheckpointEvent(state(epoch + 1, 0, generator.get_state(), {}))
    finally:  # the last step's gradients (a copy of every trained weight's size) are not kept with the model
        model.zero_grad(set_to_none=True)

    if not stopped and best_state is not None and best_epoch != history[-1]["epoch"]:
        model.load_state_dict(best_state, strict=False)  # keep the best epoch's weights, not the last one's
        logger.info("restored the weights of epoch %d (best held-out %s)", best_epoch, config.best_epoch_by)
    bad = next((n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None)
    if bad is not None:  # a last step can leave weights broken although every loss seen was finite
        raise _diverged(config, len(history) - 1, global_step, f"the weights of {bad} are no longer finite")
    yield DoneEvent(_finish(model, config, train_data, val_data, history, best_epoch, best_metrics, stopped,
                            stopped_early, global_step, started, breakdown=best_breakdown,
                            rule_vectors=_cached_vectors(model, train_inputs, stopped), precision=dtype_name(amp)))


class _PairInputs:
    """Sentence pairs the encoder learns from beside the tasks: each sentence tokenized once, and a step's loss,
    the MSE between the cosine of a pair's pooled vectors and its gold score / 5 (CosineSimilarityLoss)."""

    def __init__(self, model: MultiTaskModel, pairs: StsPairs, batch_size: int) -> None:
        unique = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
        where = {s: i for i, s in enumerate(unique)}
        none = torch.full((len(unique),), IGNORE_LABEL)
        self.inputs = TrainingInputs(model, unique, none, torch.full((len(unique),), math.nan), batch_size)
        self.first = torch.tensor([where[s] for s in pairs.sentences1])
        self.second = torch.tensor([where[s] for s in pairs.sentences2])
        self.gold = torch.tensor(pairs.scores, dtype=torch.float32).clamp(0, 5).div(5).to(model.encoder.device)

    def loss(self, config: TrainingConfig, global_step: int) -> torch.Tensor:
        """The loss on this step's pairs: drawn from the seed and the step's number alone, so a resumed run
        draws the same pairs without keeping a generator."""
        draw = torch.Generator().manual_seed((config.seed * 1_000_003 + global_step) % 2**63)
        pick = torch.randperm(len(self.gold), generator=draw)[:config.pairs_per_step]
        pooled = self.inputs.pooled_rows(torch.cat([self.first[pick], self.second[pick]])).float()
        u, v = pooled.chunk(2)
        return F.mse_loss(F.cosine_similarity(u, v, dim=-1), self.gold[pick.to(self.gold.device)])


def _batches(n: int, batch_size: int, generator: torch.Generator, lengths: torch.Tensor | None) -> list[torch.Tensor]:
    """An epoch's batches of row indices, in a seeded random order. With ``lengths`` (tokens per row), rows
    are sorted by length within groups of LENGTH_GROUP batches before they are cut into batches, and the
    batches are shuffled: each batch pads to a similar length (about 1.2x the real tokens, not 2.5x on AG
    News + SST), while the rows a batch meets stay random."""
    order = torch.randperm(n, generator=generator)
    if lengths is None:
        return list(order.split(batch_size))
    batches: list[torch.Tensor] = []
    for group in order.split(batch_size * LENGTH_GROUP):
        batches += group[torch.argsort(lengths[group], descending=True, stable=True)].split(batch_size)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@torch.no_grad()
def _fit_topic_head_on(model: MultiTaskModel, pooled: torch.Tensor, inputs: TrainingInputs) -> None:
    """The new topic head fitted exactly (L2 1/n, as the frozen-encoder preset does) on the frozen encoder's
    pooled vectors, before the encoder trains: its first steps then serve a head that already works."""
    with eval_mode(model):
        X = model.encoder.project(pooled).double().cpu()
    labels = inputs.labels.cpu()
    rows = labels != IGNORE_LABEL
    if rows.any():
        _fit_head(model, "classification", X[rows], labels[rows])


def _diverged(config: TrainingConfig, epoch: int, step: int, what: str) -> DivergedError:
    """The error that ends a run which blew up: what happened, where, and which setting to lower."""
    rates = f"{config.learning_rate:g} for the heads"
    if config.freeze != "encoder" or config.gradual_unfreeze:
        rates += f", {config.encoder_learning_rate or config.learning_rate:g} for the encoder"
    return DivergedError(f"training diverged at epoch {epoch + 1}, step {step}: {what}. Lower the learning rate "
                         f"(now {rates}); nothing from this run was kept")


def _finish(model: MultiTaskModel, config: TrainingConfig, train_data: MultiTaskDataset,
            val_data: MultiTaskDataset | None, history: list[dict[str, Any]], best_epoch: int | None,
            best_metrics: dict[str, float], stopped: bool, stopped_early: bool, steps: int, started: float,
            head_fit: dict[str, Any] | None = None, measured_on: str = HELD_OUT,
            rule_vectors: Callable[[torch.Tensor], torch.Tensor] | None = None,
            breakdown: dict[str, Any] | None = None, precision: str = "fp32") -> TrainResult:
    """The run's result, and its record on the model (what the saved folder and the card will say), and
    the topic head's unsure rule (``rule_vectors``: see _fit_confidence)."""
    model.eval()
    _fit_confidence(model, config, train_data, rule_vectors, stopped)
    result = TrainResult(history=history, best_epoch=best_epoch, best_metrics=best_metrics, stopped=stopped,
                         stopped_early=stopped_early, steps=steps, seconds=time.perf_counter() - started,
                         freeze=freeze_report(model), measured_on=measured_on, breakdown=breakdown, precision=precision)
    model.record = TrainingRecord(  # its config names the precision the run used ("auto" resolved)
        config=replace(config, precision=precision), train_data=train_data.summary(), validation_data=val_data.summary() if val_data is not None else None,
        files=model.record.files, epochs_run=len(history), best_epoch=best_epoch, stopped=stopped, steps=steps,
        seconds=result.seconds, metrics={"validation": best_metrics} if best_metrics else model.record.metrics,
        head_fit=head_fit or {})
    return result


def _encoder_frozen(model: MultiTaskModel) -> bool:
    """Whether the vectors the heads see could not change in this run (backbone and projection frozen)."""
    projection = model.encoder.projection
    return (model.encoder.frozen_bottom() == len(model.encoder.layers)
            and (projection is None or not any(p.requires_grad for p in projection.parameters())))


def _cached_vectors(model: MultiTaskModel, inputs: TrainingInputs,
                   stopped: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Training rows -> (n, D) the vectors the heads now see, from the run's cache: its pooled vectors (a
    frozen encoder: only the projection runs), or its hidden states below the frozen bottom (gradual
    unfreezing: only the open top runs, in eval mode). None without a cache, or when Stop ended the run
    and the top would have to run."""
    if inputs.pooled is None and (inputs.hidden is None or stopped):
        return None

    @torch.no_grad()
    def vectors(rows: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return torch.cat([inputs.forward(batch, ()).embeddings
                              for batch in rows.to(inputs.labels.device).split(inputs.batch_size)])
    return vectors


def _fit_confidence(model: MultiTaskModel, config: TrainingConfig, data: MultiTaskDataset,
                    vectors: Callable[[torch.Tensor], torch.Tensor] | None, stopped: bool) -> None:
    """Set the topic head's unsure rule (core.confidence) for what this run leaves: reference points from up
    to CONFIDENCE_ROWS of its topic-labelled training rows (a seeded sample), with the final encoder.

    ``vectors``: row indices of ``data`` -> (n, D) the vectors the heads see, from what the run holds (a
    frozen encoder's embeddings: nothing runs again). Without it a smaller sample (CONFIDENCE_ROWS_EMBEDDED_AGAIN)
    is embedded once more, unless Stop or a time limit ended the run, which must end now: then, as with
    fewer than CONFIDENCE_MIN_ROWS labelled rows (a 20-row data set), the model keeps the probability rule only.
    """
    if model.classifier is None:
        return
    num_classes = len(model.class_names)
    if config.task_weights["classification"] <= 0 or "classification" not in data.tasks:
        # the topic head did not learn here: its rule stands while the vectors it was built on are unchanged
        if not _encoder_frozen(model):
            model.confidence = ConfidenceRule.probability_only(num_classes)
        return
    labels = data.label_ids(model.class_names)
    labelled = torch.nonzero(labels != IGNORE_LABEL).squeeze(-1)
    if len(labelled) < CONFIDENCE_MIN_ROWS or (vectors is None and stopped):
        model.confidence = ConfidenceRule.probability_only(num_classes)
        return
    order = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(config.seed))
    sample = labelled[order[:CONFIDENCE_ROWS if vectors is not None else CONFIDENCE_ROWS_EMBEDDED_AGAIN]]
    if vectors is not None:
        X = vectors(sample)
    else:
        parts: list[torch.Tensor] = []
        for _ in _embeddings(model, [data.texts[i] for i in sample.tolist()], config.batch_size, parts, 0, len(sample)):
            pass  # no PrepareEvent: the run's events keep their shape
        X = torch.cat(parts)
    model.confidence = fit_rule(X, labels[sample], num_classes, config.seed)


def _baseline(model: MultiTaskModel, val_data: MultiTaskDataset | None, tasks: tuple[str, ...],
              config: TrainingConfig, report: FreezeReport, started: float) -> Iterator[Event]:
    """Nothing trains: the held-out figures of the model as it is, as one validation, with no step."""
    val_tasks = tuple(t for t in tasks if val_data is not None and t in val_data.tasks)
    if not val_tasks:
        raise ConfigError(f"Nothing to train: freeze preset {config.freeze!r} freezes every parameter. As a baseline it "
                          "measures the model on held-out rows, and there are none for its tasks")
    yield StartEvent(total_steps=0, steps_per_epoch=0, freeze=report, cached=False)
    batch_size = max(config.batch_size, 64)
    loss, losses, metrics, topics = _validate(model, _inputs(model, val_data, batch_size), val_tasks,
                                              MultiTaskLoss(config.task_weights), batch_size)
    yield ValidationEvent(epoch=0, loss=loss, losses=losses, metrics=metrics, is_best=True)
    model.eval()
    history = [{"epoch": 0, "validation": {"loss": loss, **losses}, "metrics": metrics}]
    yield DoneEvent(TrainResult(history=history, best_epoch=None, best_metrics=metrics, stopped=False,
                                stopped_early=False, steps=0, seconds=time.perf_counter() - started, freeze=report,
                                breakdown=topics))


def _fits_exactly(model: MultiTaskModel, config: TrainingConfig) -> bool:
    """Whether only the heads learn, on fixed embeddings: then each is a convex problem, solved exactly."""
    return (config.head_solver == "exact" and not config.gradual_unfreeze and config.cache_embeddings
            and _encoder_frozen(model))


@torch.no_grad()
def _embeddings(model: MultiTaskModel, texts: list[str], batch_size: int, out: list[torch.Tensor],
                done: int, total: int, stage: str = "embedding") -> Iterator[PrepareEvent]:
    """Append to ``out`` the (N, D) vectors the heads see (pooled, projected, normalised as the model does,
    float64), a chunk at a time, saying after each how many of ``total`` texts are done. ``stage``
    "pooled": the encoder's (N, H) pooled output instead, float32."""
    for start in range(0, len(texts), EMBED_CHUNK):
        chunk = texts[start:start + EMBED_CHUNK]
        pooled = model.encoder.embed(chunk, batch_size=max(batch_size, 64), convert_to="tensor",
                                     stage="pooled").embeddings
        if stage == "pooled":
            out.append(pooled)
        else:
            with eval_mode(model):
                out.append(model.encoder.project(pooled).double())
        yield PrepareEvent(done=done + start + len(chunk), total=total)


def _folds(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """A fold number per row: seeded, and stratified by topic (rows without one count as one more class)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(labels[order], stable=True)]  # shuffled within each class
    folds = torch.empty(len(labels), dtype=torch.long)
    folds[order] = torch.arange(len(labels)) % k
    return folds


def _cross_validated(model: MultiTaskModel, X: torch.Tensor, y: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                     tasks: tuple[str, ...], seed: int) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Held-out figures by k-fold cross-validation over every row (each row predicted by a fit without it),
    with the same penalties as the real fit, and the topics' breakdown of those predictions. Leaves the heads
    set to the last fold's fit."""
    k = len(X) if len(X) <= LEAVE_ONE_OUT_UP_TO else CV_FOLDS
    folds = _folds(y["classification"], k, seed)
    logits = torch.zeros(len(X), len(model.class_names)) if "classification" in tasks else None
    scores = torch.zeros(len(X)) if "sentiment" in tasks else None
    for fold in range(k):
        fit_rows, held = folds != fold, folds == fold
        for task in tasks:
            use = fit_rows & rows[task]
            if use.any():
                _fit_head(model, task, X[use], y[task][use])
        with eval_mode(model), torch.no_grad():
            out = model.heads(X[held].float(), tasks)
        if logits is not None:
            logits[held] = out.logits
        if scores is not None:
            scores[held] = out.sentiment
    return (task_metrics(model, logits, scores, y["classification"], y["sentiment"]),
            topic_breakdown(model, logits, y["classification"]))


def _set_linear(linear: torch.nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight.reshape(linear.weight.shape))
        linear.bias.copy_(bias.reshape(linear.bias.shape))


def _fit_head(model: MultiTaskModel, task: str, X: torch.Tensor, target: torch.Tensor,
              init: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Set one head to its exact fit on (X, target), L2 penalty 1/n: ridge in closed form, or logistic by
    L-BFGS (from ``init`` when given)."""
    if task == "sentiment":
        _set_linear(model.sentiment_head.linear, *fit_ridge(X, target, 1.0 / len(target)))
    else:
        _set_linear(model.classifier.linear, *fit_logistic(X, target, len(model.class_names), 1.0 / len(target),
                                                           init=init))


def _fit_heads_exactly(model: MultiTaskModel, train_data: MultiTaskDataset, val_data: MultiTaskDataset | None,
                       tasks: tuple[str, ...], config: TrainingConfig, stop: StopFlag | None, report: FreezeReport,
                       started: float) -> Iterator[Event]:
    """Heads on a frozen encoder, fitted to the optimum: topic by L-BFGS (streamed), sentiment in closed form.

    Each head's L2 penalty is 1/n (see core.probe). The figures reported are the held-out rows' under
    the fit on the training rows; the model then keeps a final fit on training and held-out rows together,
    so no row the user gave is wasted (8 rows per topic or 100,000).
    """
    total_steps = config.epochs * ITERATIONS_PER_EPOCH
    yield StartEvent(total_steps=total_steps, steps_per_epoch=ITERATIONS_PER_EPOCH, freeze=report, cached=True)
    has_val = val_data is not None and len(val_data) > 0
    texts = len(train_data) + (len(val_data) if has_val else 0)
    train_parts: list[torch.Tensor] = []
    val_parts: list[torch.Tensor] = []
    yield from _embeddings(model, train_data.texts, config.batch_size, train_parts, 0, texts)
    X = torch.cat(train_parts)  # (N, D)
    labels, targets = train_data.label_ids(model.class_names), train_data.sentiment_targets()
    if has_val:
        yield from _embeddings(model, val_data.texts, config.batch_size, val_parts, len(train_data), texts)
        X_val = torch.cat(val_parts)
        val_labels, val_targets = val_data.label_ids(model.class_names), val_data.sentiment_targets()
    rows = {"classification": labels != IGNORE_LABEL, "sentiment": ~torch.isnan(targets)}
    val_rows = {"classification": val_labels != IGNORE_LABEL, "sentiment": ~torch.isnan(val_targets)} if has_val else {}
    y = {"classification": labels, "sentiment": targets}
    y_val = {"classification": val_labels, "sentiment": val_targets} if has_val else {}
    num_classes = len(model.class_names)

    head_fit: dict[str, Any] = {"l2": "1/n (n: the rows of that task in the fit)"}
    train_losses: dict[str, float] = {}
    if "sentiment" in tasks:
        w, b = fit_ridge(X[rows["sentiment"]], targets[rows["sentiment"]], 1.0 / int(rows["sentiment"].sum()))
        _set_linear(model.sentiment_head.linear, w, b)
        train_losses["sentiment"] = float(((X[rows["sentiment"]] @ w + b - targets[rows["sentiment"]].double()) ** 2).mean())
    iterations = iter(())
    if "classification" in tasks:
        Xc, yc = X[rows["classification"]], labels[rows["classification"]]
        iterations = logistic_steps(Xc, yc, num_classes, 1.0 / len(yc))
    weights = config.task_weights
    loss_fn = MultiTaskLoss(weights)
    val_tasks = tuple(t for t in tasks if has_val and bool(val_rows[t].any()))

    history: list[dict[str, Any]] = []
    best_metrics: dict[str, float] = {}
    breakdown: dict[str, Any] | None = None  # of the predictions best_metrics come from
    global_step, stopped, converged, W_b = 0, False, "classification" not in tasks, None
    for epoch in range(config.epochs):
        sums, steps = {}, 0
        for step in range(1, ITERATIONS_PER_EPOCH + 1):
            if stop is not None and stop.is_set():
                stopped = True
                break
            if not converged:
                try:
                    W, b, _ = next(iterations)
                except StopIteration:
                    converged = True
                else:
                    W_b = (W, b)
                    _set_linear(model.classifier.linear, W, b)
                    train_losses["classification"] = float(F.cross_entropy(Xc @ W.T + b, yc))
            if converged and steps + global_step > 0:
                break  # a head in closed form, or L-BFGS done: nothing left to show
            global_step, steps = global_step + 1, steps + 1
            weighted = sum(weights[t] * v for t, v in train_losses.items())
            for key, value in [*train_losses.items(), ("total", weighted)]:
                sums[key] = sums.get(key, 0.0) + value
            yield StepEvent(epoch=epoch, step=step, global_step=global_step, total_steps=total_steps, loss=weighted,
                            losses=dict(train_losses), learning_rate=0.0)
        if steps == 0:
            break
        entry: dict[str, Any] = {"epoch": epoch, "train": {k: v / steps for k, v in sums.items()}}
        yield EpochEvent(epoch=epoch, losses=entry["train"], freeze=report)
        if not stopped and val_tasks:
            with eval_mode(model), torch.no_grad():
                out = model.heads(X_val.float(), val_tasks)
            loss = loss_fn(out.logits, out.sentiment, val_labels, val_targets)
            losses = {t: float(v) for t, v in loss.per_task.items()}
            best_metrics = task_metrics(model, out.logits, out.sentiment, val_labels, val_targets)
            breakdown = topic_breakdown(model, out.logits, val_labels)
            entry["validation"], entry["metrics"] = {"loss": float(loss.total), **losses}, best_metrics
            yield ValidationEvent(epoch=epoch, loss=float(loss.total), losses=losses, metrics=best_metrics, is_best=True)
        history.append(entry)
        if stopped or converged:
            break
    if not stopped and not converged:  # more iterations than the epochs showed: finish the fit quietly
        for W, b, _ in iterations:
            W_b = (W, b)
            _set_linear(model.classifier.linear, W, b)

    measured_on = HELD_OUT
    if not stopped and has_val:  # the final heads learn from every row given; the figures above are held out
        every = torch.cat([X, X_val])
        every_y = {t: torch.cat([y[t], y_val[t]]) for t in y}
        every_rows = {t: torch.cat([rows[t], val_rows[t]]) for t in rows}
        if len(every) < CROSS_VALIDATE_BELOW:  # too few held-out rows to judge on: cross-validate over all
            best_metrics, breakdown = _cross_validated(model, every, every_y, every_rows, tasks, config.seed)
            way = "leave-one-out" if len(every) <= LEAVE_ONE_OUT_UP_TO else f"{CV_FOLDS}-fold"
            measured_on = head_fit["held_out_figures"] = f"{way} cross-validation over all {len(every):,} rows"
        for task in tasks:
            keep = every_rows[task]
            _fit_head(model, task, every[keep], every_y[task][keep], init=W_b if task == "classification" else None)
        head_fit["final_fit"] = "training + held-out rows"
    else:
        head_fit["final_fit"] = "training rows"
    head_fit["iterations"] = global_step
    best_epoch = history[-1]["epoch"] if best_metrics and history else None
    yield DoneEvent(_finish(model, config, train_data, val_data, history, best_epoch, best_metrics, stopped, False,
                            global_step, started, head_fit, measured_on, rule_vectors=lambda rows: X[rows],
                            breakdown=breakdown))


def fit(model: MultiTaskModel, train_data: MultiTaskDataset, val_data: MultiTaskDataset | None = None,
        config: TrainingConfig | None = None, stop: StopFlag | None = None,
        callback: Callable[[Event], None] | None = None, show_progress_bar: bool = False,
        resume: TrainState | None = None, pairs: StsPairs | None = None) -> TrainResult:
    """Run ``train`` to the end and return its result; ``callback`` sees every event."""
    from tqdm.auto import tqdm

    bar = None
    result = None
    for event in train(model, train_data, val_data, config, stop, resume, pairs):
        if isinstance(event, StartEvent):
            bar = tqdm(total=event.total_steps, initial=resume.global_step if resume is not None else 0,
                       desc="Training", unit="step", disable=not show_progress_bar)
        elif isinstance(event, StepEvent) and bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}")
        elif isinstance(event, ValidationEvent) and show_progress_bar and bar is not None:
            bar.write(file=sys.stderr, s=f"epoch {event.epoch + 1}: validation loss {event.loss:.4f} "
                      + " ".join(f"{k}={v:.4f}" for k, v in event.metrics.items() if not k.startswith("n_")))
        elif isinstance(event, DoneEvent):
            result = event.result
        if callback is not None:
            callback(event)
    if bar is not None:
        bar.close()
    assert result is not None
    return result

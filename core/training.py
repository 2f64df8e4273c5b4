"""The training loop. It knows nothing of any UI: it yields events that the CLI's progress bar,
the tests and the app's live plots all consume.

    for event in train(model, train_set, val_set, TrainingConfig(epochs=3)):
        if isinstance(event, StepEvent): ...
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from .config import TrainingConfig
from .data import MultiTaskDataset
from .encoder import encoder_layers
from .freezing import FreezeReport, apply_preset, freeze_report, parameter_groups, unfreeze_top_layers
from .losses import IGNORE_LABEL, MultiTaskLoss
from .metrics import classification_metrics, regression_metrics
from .model import MultiTaskModel

logger = logging.getLogger(__name__)

# Gradual unfreezing caches the hidden states at the coming epochs' boundaries in one pass, up to this many bytes.
PREFETCH_BYTES = 4 * 1024**3


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


# -- events ---------------------------------------------------------------------------------


@dataclass
class StartEvent:
    total_steps: int
    steps_per_epoch: int
    freeze: FreezeReport
    cached: bool  # the frozen part of the encoder runs once, not every step
    kind: str = "start"


@dataclass
class StepEvent:
    epoch: int
    step: int  # within the epoch, from 1
    global_step: int  # from 1
    total_steps: int
    loss: float  # weighted total
    losses: dict[str, float]  # per task, unweighted
    learning_rate: float
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


@dataclass
class DoneEvent:
    result: TrainResult
    kind: str = "done"


Event = StartEvent | StepEvent | EpochEvent | ValidationEvent | DoneEvent


# -- helpers ----------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """One call for reproducibility: Python, numpy and torch generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def warmup_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


class _Inputs:
    """A dataset on the device as the loop needs it: targets, plus what each step starts from.

    A step starts from as high up the encoder as its frozen part allows (``set_frozen``):
    cached pooled vectors when the whole encoder is frozen; cached hidden states below the
    first trainable layer when only the bottom is frozen (gradual unfreezing: the frozen
    bottom runs in one caching pass, the open top every step); token ids when the embeddings train.
    """

    def __init__(self, model: MultiTaskModel, data: MultiTaskDataset, batch_size: int) -> None:
        self.model, self.texts, self.batch_size = model, data.texts, max(batch_size, 64)
        device = model.encoder.device
        self.labels = data.label_ids(model.class_names).to(device)  # (N,)
        self.targets = data.sentiment_targets().to(device)  # (N,)
        self._ids: list[list[int]] | None = None
        self.frozen_layers: int | None = None  # layers below the cache; None: no cache
        self.pooled: torch.Tensor | None = None  # (N, H) when the whole encoder is frozen
        self.hidden: list[torch.Tensor] | None = None  # N x (T_i, H) when only the bottom is
        self._later: dict[int, list[torch.Tensor]] = {}  # hidden states at the boundaries coming epochs will use

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ids(self) -> list[list[int]]:
        if self._ids is None:
            self._ids, _ = self.model.encoder.tokenize(self.texts)  # once, when a step or the cache first needs them
        return self._ids

    def set_frozen(self, frozen_layers: int | None, coming: Sequence[int] = ()) -> None:
        """(Re)build the cache for an encoder whose embeddings and bottom ``frozen_layers`` layers are frozen.

        ``coming``: lower boundaries that later epochs will ask for (gradual unfreezing opens one
        more layer each epoch). As many as fit in PREFETCH_BYTES are cached in the same pass, so
        the frozen bottom runs once in all rather than once per epoch.
        """
        if frozen_layers == self.frozen_layers:
            return
        encoder = self.model.encoder
        self.frozen_layers, self.pooled, self.hidden = frozen_layers, None, None
        self._later = {b: v for b, v in self._later.items() if frozen_layers is not None and b <= frozen_layers}
        if frozen_layers is None:
            return
        if frozen_layers == len(encoder_layers(encoder.backbone)):
            self.pooled = encoder.embed(self.texts, batch_size=self.batch_size, convert_to="tensor", stage="pooled").embeddings
        elif frozen_layers in self._later:
            self.hidden = self._later.pop(frozen_layers)
        else:
            per_boundary = sum(len(x) for x in self.ids) * encoder.hidden_size * 4  # float32 hidden states
            extra = [b for b in coming if b < frozen_layers][:max(0, PREFETCH_BYTES // per_boundary - 1)]
            self._later = _hidden_states(encoder, self.ids, [frozen_layers, *extra], self.batch_size)
            self.hidden = self._later.pop(frozen_layers)

    def forward(self, index: torch.Tensor, tasks: tuple[str, ...]):
        if self.pooled is not None:
            return self.model(pooled=self.pooled[index.to(self.pooled.device)], tasks=tasks)
        if self.hidden is not None:
            encoder = self.model.encoder
            rows = [self.hidden[i] for i in index.tolist()]
            side = getattr(encoder.tokenizer, "padding_side", "right")
            hidden = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_side=side)  # (B, T, H)
            mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(r), dtype=torch.long, device=r.device) for r in rows],
                                                   batch_first=True, padding_side=side)
            return self.model(pooled=encoder.top(hidden, mask, self.frozen_layers), tasks=tasks)
        return self.model(self.model.encoder.collate([self.ids[i] for i in index.tolist()]), tasks=tasks)


@torch.no_grad()
def _hidden_states(encoder, ids: list[list[int]], boundaries: Sequence[int], batch_size: int) -> dict[int, list[torch.Tensor]]:
    """Each text's hidden states after the embeddings and ``b`` layers, for every b in ``boundaries``,
    in one pass up the stack; unpadded, (T_i, H) per text."""
    bounds = sorted(set(boundaries))
    was_training = encoder.training
    encoder.eval()
    out: dict[int, list[torch.Tensor]] = {b: [torch.empty(0)] * len(ids) for b in bounds}
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: little padding
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            features = encoder.collate([ids[i] for i in batch])
            mask = features["attention_mask"]
            hidden, at = encoder.bottom(features, bounds[0]), bounds[0]
            for b in bounds:
                if b > at:
                    hidden, at = encoder.run_layers(hidden, mask, at, b), b  # on from the last boundary
                for row, i in enumerate(batch):
                    out[b][i] = hidden[row][mask[row].bool()].clone()
    finally:
        encoder.train(was_training)
    return out


def _frozen_bottom(model: MultiTaskModel) -> int | None:
    """How many bottom layers a cache can cover: all of them when the encoder is frozen, the
    frozen ones below the first trainable layer otherwise; None when the embeddings train or
    the backbone cannot be run in two parts."""
    backbone = model.encoder.backbone
    layers = encoder_layers(backbone)
    if not any(p.requires_grad for p in backbone.parameters()):
        return len(layers)
    if not model.encoder.can_split() or any(p.requires_grad for p in backbone.embeddings.parameters()):
        return None
    return next(i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters()))


def _freeze_modes(model: MultiTaskModel, frozen_layers: int | None) -> None:
    """Frozen bottom layers run as in inference (no dropout), as the cache computed them."""
    backbone = model.encoder.backbone
    if frozen_layers is None:
        return
    if frozen_layers == len(encoder_layers(backbone)):
        backbone.eval()
        return
    backbone.embeddings.eval()
    for layer in encoder_layers(backbone)[:frozen_layers]:
        layer.eval()


def _rows_with_targets(data: MultiTaskDataset, tasks: tuple[str, ...]) -> MultiTaskDataset:
    keep = [i for i in range(len(data)) if ("classification" in tasks and data.labels[i] is not None)
            or ("sentiment" in tasks and data.sentiments[i] is not None)]
    return data if len(keep) == len(data) else data.subset(keep)


def _batch_tasks(tasks: tuple[str, ...], labels: torch.Tensor, targets: torch.Tensor) -> tuple[str, ...]:
    """Per-task forward passes: only the heads whose targets this batch carries."""
    has = {"classification": bool((labels != IGNORE_LABEL).any()), "sentiment": bool((~torch.isnan(targets)).any())}
    return tuple(t for t in tasks if has[t])


@torch.no_grad()
def _validate(model: MultiTaskModel, inputs: _Inputs, tasks: tuple[str, ...], loss_fn: MultiTaskLoss,
              batch_size: int) -> tuple[float, dict[str, float], dict[str, float]]:
    was_training = model.training
    model.eval()
    logits, scores = [], []
    try:
        for start in range(0, len(inputs), batch_size):
            index = torch.arange(start, min(start + batch_size, len(inputs)))
            out = inputs.forward(index, tasks)
            logits.append(out.logits)
            scores.append(out.sentiment)
    finally:
        model.train(was_training)
    logits_all = torch.cat(logits) if "classification" in tasks else None
    scores_all = torch.cat(scores) if "sentiment" in tasks else None
    loss = loss_fn(logits_all, scores_all, inputs.labels, inputs.targets)
    metrics = task_metrics(model, logits_all, scores_all, inputs.labels, inputs.targets)
    return float(loss.total), {t: float(v) for t, v in loss.per_task.items()}, metrics


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


def evaluate(model: MultiTaskModel, data: MultiTaskDataset, batch_size: int = 64, show_progress_bar: bool = False) -> dict[str, float]:
    """All per-task metrics of a model on a dataset; a task with no rows in the data is left out."""
    tasks = tuple(t for t in data.tasks if t in model.tasks)
    labels = data.label_ids(model.class_names) if "classification" in tasks else torch.full((len(data),), IGNORE_LABEL)
    out = model.predict_tensors(data.texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
    device = out.embeddings.device
    return task_metrics(model, out.logits if "classification" in tasks else None,
                        out.sentiment if "sentiment" in tasks else None, labels.to(device), data.sentiment_targets().to(device))


# -- the loop ---------------------------------------------------------------------------------


def train(
    model: MultiTaskModel,
    train_data: MultiTaskDataset,
    val_data: MultiTaskDataset | None = None,
    config: TrainingConfig | None = None,
    stop: StopFlag | None = None,
) -> Iterator[Event]:
    """Train ``model`` in place, yielding events; the last event is a DoneEvent.

    Args:
        model: the model to train; its heads must cover the data's classes.
        train_data, val_data: datasets; without val_data there is no validation or early stopping.
        config: TrainingConfig (epochs, learning rates, freezing, seed, ...).
        stop: any object with ``is_set()`` (a threading.Event); checked before every step.
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    seed_everything(config.seed)
    model.to(resolve_device(config.device))

    tasks = tuple(t for t in train_data.tasks if t in model.tasks and config.task_weights[t] > 0)
    if not tasks:
        raise ValueError(f"Nothing to learn: the data has targets for {list(train_data.tasks) or 'no task'}, "
                         f"the model has heads for {list(model.tasks)}, task weights {config.task_weights}")
    # Rows with no target for a task being learned (e.g. topic rows when the topic weight is 0) carry nothing.
    train_data = _rows_with_targets(train_data, tasks)
    val_data = _rows_with_targets(val_data, tasks) if val_data is not None else None
    # Gradual unfreezing starts from the frozen encoder and opens one more top layer each epoch.
    report = apply_preset(model, "encoder" if config.gradual_unfreeze else config.freeze)
    if report.trainable == 0:
        raise ValueError(f"Nothing to train: freeze preset {config.freeze!r} freezes every parameter")

    train_inputs = _Inputs(model, train_data, config.batch_size)
    val_inputs = _Inputs(model, val_data, config.batch_size) if val_data is not None and len(val_data) else None
    frozen_layers = _frozen_bottom(model)
    val_tasks = tuple(t for t in tasks if val_data is not None and t in val_data.tasks)

    optimizer = torch.optim.AdamW(parameter_groups(model, config.learning_rate, encoder_learning_rate=config.encoder_learning_rate,
                                                   layer_lr_decay=config.layer_lr_decay, weight_decay=config.weight_decay))
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(int(config.warmup_ratio * total_steps), total_steps))
    loss_fn = MultiTaskLoss(config.task_weights)
    generator = torch.Generator().manual_seed(config.seed)
    yield StartEvent(total_steps=total_steps, steps_per_epoch=steps_per_epoch, freeze=report,
                     cached=config.cache_embeddings and frozen_layers is not None)

    history: list[dict[str, Any]] = []
    # Only weights that can change are snapshotted for early stopping: a frozen encoder is 22.7M
    # parameters that would otherwise be copied at every improving epoch.
    changing = [n for n, p in model.named_parameters() if p.requires_grad or
                (config.gradual_unfreeze and n.startswith("encoder.backbone."))]
    best_loss, best_epoch, best_metrics, best_state = math.inf, None, {}, None
    bad_epochs, global_step, stopped, stopped_early = 0, 0, False, False
    for epoch in range(config.epochs):
        if config.gradual_unfreeze and epoch > 0:
            report = unfreeze_top_layers(model, epoch)
            frozen_layers = _frozen_bottom(model)
        num_layers = len(encoder_layers(model.encoder.backbone))
        coming = [num_layers - e for e in range(epoch + 1, config.epochs) if config.gradual_unfreeze and e <= num_layers]
        for inputs in (train_inputs, val_inputs):
            if inputs is not None:  # runs the frozen bottom (for this epoch and, memory allowing, the coming ones)
                inputs.set_frozen(frozen_layers if config.cache_embeddings else None, coming)
        model.train()
        _freeze_modes(model, frozen_layers)
        sums: dict[str, float] = {}
        steps = 0
        for step, index in enumerate(torch.randperm(len(train_data), generator=generator).split(config.batch_size), 1):
            if stop is not None and stop.is_set():
                stopped = True
                break
            index = index.to(train_inputs.labels.device)
            labels, targets = train_inputs.labels[index], train_inputs.targets[index]
            out = train_inputs.forward(index, _batch_tasks(tasks, labels, targets))
            loss = loss_fn(out.logits, out.sentiment, labels, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            global_step, steps = global_step + 1, steps + 1
            losses = {t: v.item() for t, v in loss.per_task.items()}
            for key, value in [*losses.items(), ("total", loss.total.item())]:
                sums[key] = sums.get(key, 0.0) + value
            yield StepEvent(epoch=epoch, step=step, global_step=global_step, total_steps=total_steps,
                            loss=loss.total.item(), losses=losses, learning_rate=max(scheduler.get_last_lr()))
        if stopped and steps == 0:
            break
        entry: dict[str, Any] = {"epoch": epoch, "train": {k: v / steps for k, v in sums.items()}}
        yield EpochEvent(epoch=epoch, losses=entry["train"], freeze=report)
        if stopped:
            history.append(entry)
            break
        if val_inputs is not None and val_tasks:
            val_loss, val_losses, metrics = _validate(model, val_inputs, val_tasks, loss_fn, max(config.batch_size, 64))
            is_best = val_loss < best_loss
            entry["validation"] = {"loss": val_loss, **val_losses}
            entry["metrics"] = metrics
            if is_best:
                best_loss, best_epoch, best_metrics, bad_epochs = val_loss, epoch, metrics, 0
                params = dict(model.named_parameters())
                best_state = {n: params[n].detach().clone() for n in changing}
            else:
                bad_epochs += 1
            yield ValidationEvent(epoch=epoch, loss=val_loss, losses=val_losses, metrics=metrics, is_best=is_best)
            history.append(entry)
            if config.early_stopping_patience and bad_epochs >= config.early_stopping_patience:
                stopped_early = True
                break
        else:
            history.append(entry)

    if not stopped and best_state is not None and best_epoch != history[-1]["epoch"]:
        model.load_state_dict(best_state, strict=False)  # keep the best epoch's weights, not the last one's
        logger.info("restored the weights of epoch %d (best validation loss %.4f)", best_epoch, best_loss)
    model.eval()
    result = TrainResult(history=history, best_epoch=best_epoch, best_metrics=best_metrics, stopped=stopped,
                         stopped_early=stopped_early, steps=global_step, seconds=time.perf_counter() - started,
                         freeze=freeze_report(model))
    model.info["training"] = {"config": config.to_dict(), "data": {"train": train_data.summary(),
                              "validation": val_data.summary() if val_data is not None else None},
                              "best_epoch": best_epoch, "stopped": stopped, "steps": global_step,
                              "seconds": round(result.seconds, 2)}
    model.info["metrics"] = {"validation": best_metrics} if best_metrics else model.info.get("metrics", {})
    yield DoneEvent(result)


def fit(model: MultiTaskModel, train_data: MultiTaskDataset, val_data: MultiTaskDataset | None = None,
        config: TrainingConfig | None = None, stop: StopFlag | None = None,
        callback: Callable[[Event], None] | None = None, show_progress_bar: bool = False) -> TrainResult:
    """Run ``train`` to the end and return its result; ``callback`` sees every event."""
    from tqdm.auto import tqdm

    bar = None
    result = None
    for event in train(model, train_data, val_data, config, stop):
        if isinstance(event, StartEvent):
            bar = tqdm(total=event.total_steps, desc="Training", unit="step", disable=not show_progress_bar)
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

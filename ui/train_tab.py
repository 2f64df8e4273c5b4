"""Train: choose data and a freezing strategy, watch the loss curves draw live, keep or download the model.

The run itself is ``core.train``; this tab turns its events into a figure, a table and a status
line, bounds the run by the host's limits, and makes the visitor's model the one in use.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import pandas as pd

from core import (Deadline, DoneEvent, EpochEvent, MultiTaskModel, PrepareEvent, StartEvent, StepEvent, TrainingConfig,
                  TrainResult, ValidationEvent)
from core import evaluate, folders, plots, train
from core.config import RECIPES
from core.training import CROSS_VALIDATE_BELOW, HELD_OUT
from core.errors import ConfigError
from core.export import export
from core.freezing import PRESET_HELP, preview

from .classify_tab import ClassifyParts
from .inputs import TrainForm, bad_input, shown_in_page, whole
from .state import MAX_RUNS, Run, Session, Shared, model_note, release_memory

logger = logging.getLogger("sentence_lab.app")

VAL_FRACTION = 0.2  # a fifth of the rows is held out for the validation curve and the metrics
ROUGH_BELOW = 30  # fewer held-out rows than this, and the status says its figures are rough
STREAM_EVERY_S = 0.25  # step events update the page at most ~4 times a second; epoch events always do
# What the download offers: the label shown -> the format, and the folder name inside the zip.
DOWNLOAD_FORMATS = {"Sentence Lab": "sentence-lab", "sentence-transformers": "sentence-transformers", "ONNX": "onnx"}
DOWNLOAD_NAMES = {"sentence-lab": "sentence-lab-model", "sentence-transformers": "sentence-lab-st", "onnx": "sentence-lab-onnx"}
DOWNLOAD_HELP = {
    "Sentence Lab": "a folder for `MultiTaskModel.load` and `python -m core predict --model`.",
    "sentence-transformers": "`SentenceTransformer(folder)` gives the same embeddings; the heads are in heads.safetensors.",
    "ONNX": "one graph for onnxruntime: token ids in; embedding, topic probabilities and sentiment out.",
}
NO_DOWNLOAD = "<small>Train a model to download it.</small>"
PRESET_LABELS = {
    "encoder": "Encoder frozen: train the heads only (fast)",
    "none": "Nothing frozen: train everything",
    "finetune": "Fine-tune (recipe): everything learns, the topic head fitted first, the encoder kept near what it knew",
    "all": "Everything frozen: no training (baseline)",
    "classification_head": "Topic head frozen",
    "sentiment_head": "Sentiment head frozen",
}
OPTION_HELP = PRESET_HELP | {
    "finetune": "Everything learns by the measured recipe: the topic head is fitted first, and each sentence's vector "
                "is held near where the encoder first put it, so comparing sentences stays as good. Slower than heads only.",
}
SOURCE_CHOICES = [("Synthetic sentences (generated, 4 topics + sentiment)", "synthetic"),
                  ("Review sentences (real: products, movies, restaurants + sentiment)", "reviews"),
                  ("BBC News articles (real, 5 topics)", "bbc_news"),
                  ("My CSV file", "csv")]
STARTS_FROM_CURRENT = ("all", "classification_head", "sentiment_head")  # presets that need the model in use
# The order "Compare strategies" runs them in: the head-frozen ones last, right after "encoder frozen",
# so that both start from the heads that run just fitted on this data (see TrainTab.compare).
COMPARE_ORDER = ("none", "finetune", "encoder", "classification_head", "sentiment_head")
RUN_COLUMNS = ["Run", "Data", "Freezing", "Epochs", "Seconds", "Accuracy", "Macro-F1", "MAE", "Pearson", "In use"]
DATA_SHOWN = 40  # characters of a run's data name in the runs table (the Run list below it has the whole name)
METRIC_COLUMNS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "mae": "MAE", "pearson": "Pearson"}  # validation


PERCENT_COLUMNS = ("Accuracy", "Macro-F1")
METRIC_NOTE = "<small>" + " · ".join(f"**{name}**: {words}" for name, words in plots.METRIC_HELP.items()) + "</small>"
TOPIC_COLUMNS = ["Topic", "Precision", "Recall", "F1", "Rows"]
NO_BREAKDOWN = "Press Start: where the topics<br>go wrong shows here."  # <br>: a phone is ~300 px wide
BREAKDOWN_HEIGHT = 240  # the placeholder's: a message needs less room than a matrix
BREAKDOWN_NOTE = ("<small>**Where the topics go wrong**, on the rows the topic accuracy above was measured on: "
                  "each row of the matrix is a true topic, each column the topic predicted, so the outlined "
                  "diagonal holds the right answers · **Precision**: of the rows given a topic, the share that "
                  "have it · **Recall**: of a topic's rows, the share given it · **F1**: the two in one "
                  "(100% best) · **Rows**: how many have the topic</small>")


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and macro-F1 as percentages, written as the status line writes them."""
    for column in PERCENT_COLUMNS:
        if column in table:
            table[column] = [plots.percent(v) if pd.notna(v) else "" for v in table[column]]
    return table


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1_000_000 else f"{n:,}"


def _percent(part: int, whole_: int) -> str:
    share = 100 * part / max(whole_, 1)
    return f"{share:.1f}%" if share >= 0.1 or part == 0 else f"{share:.3f}%"


@dataclass
class RunLog:
    """What the tab shows of a run, built from the training events."""

    total_epochs: int
    steps_per_epoch: int = 1
    total_steps: int = 0
    step: int = 0
    epoch: int = 0
    embedded: tuple[int, int] | None = None  # (done, total) texts while the frozen encoder embeds them
    # split -> task -> [(epoch, loss), ...]; training points are per step, at fractional epochs
    curves: dict[str, dict[str, list[tuple[float, float]]]] = field(
        default_factory=lambda: {"train": {}, "validation": {}})
    rows: list[dict[str, Any]] = field(default_factory=list)  # the metrics table, one row per epoch

    def add(self, event: Any) -> None:
        names = plots.TASK_NAMES
        if isinstance(event, StartEvent):
            self.steps_per_epoch, self.total_steps = event.steps_per_epoch, event.total_steps
        elif isinstance(event, PrepareEvent):
            self.embedded = (event.done, event.total)
        elif isinstance(event, StepEvent):
            self.step, self.epoch = event.global_step, event.epoch
            x = event.epoch + event.step / self.steps_per_epoch
            for task, loss in event.losses.items():
                self.curves["train"].setdefault(task, []).append((x, loss))
        elif isinstance(event, EpochEvent):
            losses = {f"Train · {names[t]}": v for t, v in event.losses.items() if t in names and t != "total"}
            self.rows.append({"Epoch": event.epoch + 1} | losses)
        elif isinstance(event, ValidationEvent):
            for task, loss in event.losses.items():
                self.curves["validation"].setdefault(task, []).append((event.epoch + 1, loss))
            row = {f"Val · {names[t]}": v for t, v in event.losses.items() if t in names and t != "total"}
            for key, label in METRIC_COLUMNS.items():
                if key in event.metrics:
                    row[label] = event.metrics[key]
            if self.rows and self.rows[-1]["Epoch"] == event.epoch + 1:
                self.rows[-1] |= row

    def table(self) -> pd.DataFrame:
        return shown(pd.DataFrame(self.rows).round(4)) if self.rows else pd.DataFrame(columns=["Epoch"])

    def figure(self) -> Any:
        return plots.loss_curves(self.curves, total_epochs=self.total_epochs)

    def progress(self, seconds: float) -> str:
        width = 24
        if self.step == 0 and self.embedded is not None:  # the phase before the first step
            done, total = self.embedded
            bar = int(width * done / max(total, 1))
            return (f"**Embedding texts…** {done:,} of {total:,} (the encoder is frozen: each text is read once) · "
                    f"{seconds:.0f} s<br>`{'█' * bar}{'░' * (width - bar)}`")
        done = int(width * self.step / max(self.total_steps, 1))
        return (f"**Training…** epoch {self.epoch + 1} of {self.total_epochs} · step {self.step} of "
                f"{self.total_steps} · {seconds:.0f} s<br>`{'█' * done}{'░' * (width - done)}`")


def _scores(metrics: dict[str, float]) -> list[str]:
    scores = []
    if "accuracy" in metrics:
        scores.append(f"topic accuracy {plots.percent(metrics['accuracy'])}")
    if "mae" in metrics:
        scores.append(f"sentiment off by {metrics['mae']:.2f} on average")
    return scores


def barely_learned(metrics: dict[str, float], num_classes: int, measured_on: str = HELD_OUT) -> str:
    """A plain warning when the held-out figures are close to guessing; empty when they are not."""
    weak = []
    chance = 1 / max(num_classes, 1)
    if "accuracy" in metrics and num_classes > 1 and metrics["accuracy"] < chance + 0.1:
        weak.append(f"its topic accuracy is close to guessing ({100 * chance:.0f}% for {num_classes} topics); add rows "
                    "(8 or more per topic), make the topics more distinct, or check the labels")
    if "pearson" in metrics and not metrics["pearson"] >= 0.2:  # NaN too: constant predictions
        weak.append("its sentiment barely follows the values; add rows across the whole scale")
    return f"<br>**It barely learned:** on {measured_on} {'; and '.join(weak)}." if weak else ""


def baseline_words(result: TrainResult, rows: int) -> str:
    """What "Everything frozen" measured: the model in use, as it is, on the held-out rows."""
    return (f"**Baseline:** nothing was trained. The model in use scores {', '.join(_scores(result.best_metrics))} "
            f"on the {rows:,} held-out rows: the figures a run must beat. It stays in use.")


def result_words(result: TrainResult, seconds: float, timed_out: bool, limit_s: float, exact: bool = False) -> str:
    """How a run ended and what it reached, in words (``exact``: heads fitted exactly on a frozen encoder)."""
    scores = _scores(result.best_metrics)
    best = ""
    if scores and result.best_epoch is not None and result.measured_on != HELD_OUT:
        best = f" {', '.join(scores)} by {result.measured_on} (too few rows for a held-out split to say much)."
    elif scores and result.best_epoch is not None:
        best = f" Best epoch {result.best_epoch + 1}: {', '.join(scores)} on the held-out rows."
        held = int(result.best_metrics.get("n_classification") or result.best_metrics.get("n_sentiment") or 0)
        if held < ROUGH_BELOW:
            best += f" Only {held} rows were held out, so take these figures as rough."
    if timed_out:
        head = (f"**Stopped at this server's limit of {limit_s:g} s per run** after {result.steps} steps; "
                "the model keeps what it learned.")
    elif result.stopped:
        head = f"**Stopped** after {result.steps} steps; the model keeps what it learned so far."
    elif exact:
        head = (f"**Done in {seconds:.0f} s:** the heads were fitted exactly on the frozen encoder's embeddings "
                f"({result.steps} steps of L-BFGS), then once more on every row, the held-out ones included.")
    elif result.stopped_early:
        head = (f"**Done in {seconds:.0f} s.** Validation stopped improving, so the run ended early "
                "with the best epoch's weights.")
    else:
        head = f"**Done in {seconds:.0f} s:** {len(result.history)} epochs, {result.steps} steps."
    return (f"{head}{best}<br>It is now **your model in the Classify tab**; "
            "the **Download** button saves it as a zip: Sentence Lab, sentence-transformers or ONNX.")


def topic_table(breakdown: dict[str, Any] | None) -> pd.DataFrame:
    """Each topic's precision, recall, F1 and rows, weakest first; a topic with neither rows nor predictions
    says nothing and is left out, and a share of nothing is "—"."""
    if not breakdown:
        return pd.DataFrame(columns=TOPIC_COLUMNS)
    predicted = dict(zip(breakdown["confusion"]["classes"], map(sum, zip(*breakdown["confusion"]["matrix"]))))
    rows = []
    for name, f in sorted(breakdown["per_class"].items(), key=lambda item: item[1]["f1"]):  # stable: ties keep order
        if f["support"] or predicted[name]:
            rows.append([name, plots.percent(f["precision"]) if predicted[name] else "—",
                         plots.percent(f["recall"]) if f["support"] else "—", plots.percent(f["f1"]), f["support"]])
    return pd.DataFrame(rows, columns=TOPIC_COLUMNS)


def breakdown_outputs(breakdown: dict[str, Any] | None, where: str = "",
                      missing: str = NO_BREAKDOWN) -> tuple[Any, pd.DataFrame]:
    """The confusion figure and the per-topic table of a run's topic breakdown (core.training.topic_breakdown);
    ``where``: the figure's subtitle, ``missing``: its message when there is no breakdown."""
    if not breakdown:
        return plots.message_figure(missing, height=BREAKDOWN_HEIGHT), topic_table(None)
    confusion = breakdown["confusion"]
    return plots.confusion_figure(confusion["classes"], confusion["matrix"], note=where), topic_table(breakdown)


def _chosen_run(number: Any) -> int:
    """The run number picked in the Run list (a bad_input when none is)."""
    if number is None:
        raise bad_input("Choose a run first.", title="No run chosen")
    return whole("Run", number)


def _kept(session: Session) -> str:
    """The model a run that learned nothing leaves in use, in words."""
    return "your previous model" if session.model is not None else "the shipped model"


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def describe_data(data: Any, name: str) -> str:
    parts = [f"**{name}**"]
    if data.class_names:
        parts.append(f"{len(data.class_names)} topics ({', '.join(data.class_names)})")
    if "sentiment" in data.tasks:
        lo, hi = data.sentiment_range
        parts.append(f"sentiment on {lo:g} … {hi:g} for {sum(s is not None for s in data.sentiments):,} rows")
    else:
        parts.append("no sentiment")
    n_val = max(1, round(len(data) * VAL_FRACTION))
    small = (f" With the encoder frozen, the scores are cross-validated over all {len(data):,} rows instead: "
             "too few to judge on the held-out ones alone." if len(data) < CROSS_VALIDATE_BELOW else "")
    return (" · ".join(parts)
            + f"<br><small>{len(data) - n_val:,} rows to learn from, {n_val:,} held out to check.{small}</small>")


class TrainTab:
    """The tab's handlers: the setup preview, the streaming run, the download, Stop."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def describe_setup(self, **form: Any) -> tuple[str, str]:
        """The chosen data in words, and how many parameters the chosen freezing leaves trainable."""
        setup = TrainForm(**form)
        if setup.source == "csv" and not setup.csv_file:
            return ("Upload a CSV file: a header row, a `text` column, and a `label` and/or a `sentiment` column "
                    "(see the Guide).", "Trainable parameters: — (upload the data first)")
        try:
            with shown_in_page():
                data, name = setup.data(self.shared)
                base = self.shared.base_encoder(setup.base_model)
        except gr.Error as exc:
            return f"**Problem with the data:** {exc.message}", "Trainable parameters: — (choose the data first)"
        described = describe_data(data, name)
        gradual = bool(setup.gradual)
        freeze = setup.freeze
        try:  # TrainingConfig is where the rule lives (gradual unfreezing needs 'none' or 'encoder')
            TrainingConfig(freeze=freeze, gradual_unfreeze=gradual)
        except ConfigError:
            return described, ("**Check the settings:** gradual unfreezing starts from a frozen encoder and opens "
                               "it layer by layer: choose *Encoder frozen*, *Nothing frozen* or *Fine-tune* with it.")
        heads = MultiTaskModel.heads_for(data)
        report = preview(base, heads, "encoder" if gradual else freeze)
        text = (f"**Trainable parameters: {report.trainable:,} of {report.total:,} "
                f"({_percent(report.trainable, report.total)})**")
        if gradual:
            last = preview(base, heads, "encoder", open_layers=max(whole("Epochs", setup.epochs) - 1, 0))
            text += (f"<br>Starts with the heads only, then opens one more encoder layer each epoch: "
                     f"{last.trainable:,} trainable ({last.open_layers} of {last.num_layers} layers) "
                     "in the last epoch.")
        elif setup.preset == "all":
            text += ("<br>Nothing learns with this preset: **Start** measures the model in use on the held-out rows, "
                     "the baseline to compare other runs against.")
        elif setup.preset in STARTS_FROM_CURRENT:
            text += ("<br>Starts from the model in use (see the Classify tab) and keeps this head exactly as it is; "
                     "the data's topics must be among that model's.")
        elif setup.preset == "finetune":
            recipe = RECIPES["finetune"]
            text += (f"<br>The fine-tuning recipe: the topic head is first fitted on the frozen encoder, then everything "
                     f"learns (heads at {recipe['learning_rate']:g}, encoder at {recipe['encoder_learning_rate']:g}: "
                     "the learning-rate box is not used) while each sentence's vector is held near where the "
                     "encoder first put it, so it still compares sentences well. Epochs and batch size are yours.")
        elif setup.preset == "encoder":
            text += ("<br>Only the heads learn, on fixed sentence vectors: they are fitted exactly, in seconds, so "
                     "epochs, learning rate and batch size do not matter here.")
        (enc, enc_total), head, mood = (report.parts[k] for k in ("encoder", "classification_head", "sentiment_head"))
        detail = (f"encoder {_count(enc)} of {_count(enc_total)} · topic head {_count(head[0])} · "
                  f"sentiment head {_count(mood[0])} (heads: the small layers on the encoder that turn a sentence "
                  "vector into a topic or a sentiment)")
        return described, f"{text}<br><small>{detail}</small>"

    def train(self, session: Session, request: gr.Request = None, **form: Any) -> Iterator[tuple[Any, ...]]:
        """Train fresh heads (and the encoder, if chosen) on the chosen data, streaming curves and metrics.

        Yields (loss figure, metrics table, status, model zip (at the end), Classify tab note, session,
        confusion figure, per-topic table): the last two are placeholders until the run ends.
        The visitor's model changes only once a run has taken at least one step: a run refused, failed
        or stopped before that leaves their previous model in use.
        """
        self.shared.visitors.started(request)
        try:
            yield from self.run(TrainForm(**form), self.shared.seen(session, request))
        finally:  # the page may start another run (keyed as Admission recorded it: the request's own page)
            self.shared.visitors.run_ended(getattr(request, "session_hash", None))

    def run(self, form: TrainForm, session: Session, start: MultiTaskModel | None = None) -> Iterator[tuple[Any, ...]]:
        """``train`` with the form as one value (the /train endpoint's fields by name: see TrainForm);
        ``start``: the model a baseline or head-frozen run starts from, by default the model in use."""
        with shown_in_page():
            yield from self._run(form, session, start=start)

    def compare(self, session: Session, presets: list[str] | None, request: gr.Request = None,
                **form: Any) -> Iterator[tuple[Any, ...]]:
        """Run each ticked freezing strategy in turn on the same data, split and seed, all within one run's
        time limit; each becomes a run in the runs table. Stop ends the comparison."""
        self.shared.visitors.started(request)
        try:
            yield from self._compare(self.shared.seen(session, request), presets, form)
        finally:
            self.shared.visitors.run_ended(getattr(request, "session_hash", None))

    def _compare(self, session: Session, presets: list[str] | None, form: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        with shown_in_page():
            chosen = [p for p in COMPARE_ORDER if p in (presets or [])]
            if not chosen:
                raise bad_input("Tick at least one freezing strategy to compare.", title="Nothing to compare")
            deadline = Deadline(self.shared.limits.max_seconds, session.stop)
            # Every head-frozen run starts from the same model: this comparison's encoder-frozen run when
            # it has one, else the model in use when it began; not from the run just before it.
            start = session.model_in_use(self.shared)
            for preset in chosen:
                stopped = yield from self._run(replace(TrainForm(**form), preset=preset, gradual=False), session,
                                               deadline, start=start)
                if stopped:
                    break
                if preset == "encoder":
                    start = session.model

    def _run(self, form: TrainForm, session: Session, deadline: Deadline | None = None,
             start: MultiTaskModel | None = None) -> Iterator[tuple[Any, ...]]:
        """The run's stream; returns whether Stop or the time limit ended it (``deadline``: one shared by several;
        ``start``: the model a baseline or head-frozen run starts from, by default the model in use)."""
        if session.running:
            raise bad_input("A run is already going in this page: stop it first.", title="Busy")
        session.running = True  # from here on Stop is heard, while the data loads too
        try:
            return (yield from self._stream(form, session, deadline, start))
        finally:
            session.running = False
            session.stop.clear()
            release_memory()  # the run's optimizer state and gradients (3x the weights that learned) go back now

    def _stream(self, form: TrainForm, session: Session, deadline: Deadline | None,
                start: MultiTaskModel | None) -> Iterator[tuple[Any, ...]]:
        shared, limits = self.shared, self.shared.limits
        config = form.training_config(limits)
        base = shared.base_encoder(form.base_model)
        data, name = form.data(shared)
        # The baseline and the head-frozen presets start from the model in use (the shipped one, or the
        # visitor's): a head kept as it is must be a trained one, and a baseline measures that model.
        current = (start or session.model_in_use(shared)) if form.preset in STARTS_FROM_CURRENT else None
        if form.preset in STARTS_FROM_CURRENT:
            if current is None:
                raise bad_input("There is no model in use to start from yet: train one with the encoder frozen first.")
            current.check_covers(data, "the model in use")
            if "sentiment" in data.tasks and data.sentiment_range != current.heads_config.sentiment_range:
                data = data.rescale_sentiment(data.sentiment_range, current.heads_config.sentiment_range)
        train_set, val_set = data.split(VAL_FRACTION, seed=config.seed)
        encoder_learns = config.gradual_unfreeze or config.freeze != "encoder"
        log = RunLog(total_epochs=config.epochs)
        note = model_note(session, shared.default_model)
        blank, later = breakdown_outputs(None), (gr.skip(), gr.skip())  # the topic breakdown: none, or not yet
        if session.stop.is_set():  # pressed while the run waited in the queue or its data loaded
            yield (log.figure(), log.table(), f"**Stopped before it started**: nothing was learned, so "
                   f"{_kept(session)} stays in use.", gr.skip(), note, session, *blank)
            return True
        deadline = deadline or Deadline(limits.max_seconds, session.stop)  # the host's limit ends a run like Stop
        started, last_yield = time.monotonic(), 0.0
        preparing = ("…" if encoder_learns
                     else ": embedding every text once (the encoder is frozen, so this is the slow part)…")
        yield (log.figure(), log.table(), f"**Preparing** {len(data):,} rows{preparing}", gr.skip(), note, session,
               *blank)
        if current is not None:
            with shared.tokenizer_lock:
                model = copy.deepcopy(current)  # its own weights: the encoder may learn, the original stays
        else:
            encoder = shared.encoder_for_run(base, changes_weights=encoder_learns)
            model = MultiTaskModel.for_data(data, encoder, seed=config.seed)
        for event in train(model, train_set, val_set, config, stop=deadline):
            log.add(event)
            if isinstance(event, DoneEvent):
                result = event.result
                break
            if isinstance(event, StepEvent) and time.monotonic() - last_yield < STREAM_EVERY_S:
                continue
            last_yield = time.monotonic()
            yield (log.figure(), log.table(), log.progress(time.monotonic() - started), gr.skip(), note, session,
                   *later)
        seconds = time.monotonic() - started
        if form.preset == "all":
            yield (log.figure(), log.table(), baseline_words(result, len(val_set)), gr.skip(), note, session,
                   *self.breakdown(result, model, val_set, config))
            return False
        timed_out = result.stopped and not session.stop.is_set()  # stopped, but not by the visitor
        if result.steps == 0:  # stopped while preparing: nothing learned, so nothing replaces the old model
            why = f" at this server's limit of {limits.max_seconds:g} s" if timed_out else ""
            yield (log.figure(), log.table(), f"**Stopped{why} before the first step**: nothing was learned, so "
                   f"{_kept(session)} stays in use.", gr.skip(), note, session, *blank)
            return True
        strategy = "gradual unfreezing" if config.gradual_unfreeze else PRESET_LABELS[form.preset].split(":")[0].lower()
        on = "" if base is shared.encoder else f" with {base.config.model_name}"
        run = Run(number=session.runs[-1].number + 1 if session.runs else 1, data=name, strategy=strategy,
                  epochs=len(result.history), seconds=seconds, metrics=result.best_metrics,
                  curve=[(h["epoch"] + 1, h["validation"]["loss"]) for h in result.history if "validation" in h],
                  base=model.encoder.config.model_name, heads_config=model.heads_config,
                  heads=None if encoder_learns else folders.flatten(model.head_parts()),
                  confidence=None if encoder_learns else model.confidence)
        session.add_run(run, model, f"trained on {name}{on} ({len(result.history)} epochs, {strategy})")
        shared.used(session)  # past the host's bound, the least recently used trained encoder goes
        exact = bool(model.record.head_fit)
        words = (result_words(result, seconds, timed_out, limits.max_seconds, exact)
                 + barely_learned(result.best_metrics, len(model.class_names), result.measured_on)
                 + f"<br><small>Data: {name}.</small>")
        try:
            archive = str(self.download(model, session))
        except Exception as exc:  # noqa: BLE001 -- the trained model stays in use; only its zip is missing
            logger.exception("could not prepare the download")
            archive, words = None, words + f"<br>The download could not be prepared ({type(exc).__name__}: {exc})."
        yield (log.figure(), log.table(), words, archive, model_note(session, shared.default_model), session,
               *self.breakdown(result, model, val_set, config))
        return result.stopped

    @staticmethod
    def breakdown(result: TrainResult, model: MultiTaskModel, val_set: Any,
                  config: TrainingConfig) -> tuple[Any, pd.DataFrame]:
        """Where the run's topics go wrong, on the predictions its figures came from (the held-out rows, or a
        cross-validation over every row: the final heads of an exact fit learned from the held-out rows too);
        for a run stopped before its first figures, the kept model's on the held-out rows, which it never saw."""
        breakdown, where = result.breakdown, result.measured_on
        learned = model.classifier is not None and config.task_weights["classification"] > 0
        if breakdown is None and result.stopped and result.steps and learned and "classification" in val_set.tasks:
            try:
                figures = evaluate(model, val_set, batch_size=max(config.batch_size, 64), breakdown=True)
            except Exception as exc:  # noqa: BLE001 -- the run and its model stand; only this check is missing
                logger.exception("could not break the topics down")
                return breakdown_outputs(None, missing=f"Could not check the topics<br>({type(exc).__name__}: {exc}).")
            breakdown, where = (figures if "confusion" in figures else None), "as the run stopped"
        if breakdown is None:
            why = ("This data has no topics." if "classification" not in val_set.tasks else
                   "The topic weight was 0:<br>the topic head did not learn." if not learned else
                   "No held-out rows with a topic<br>were checked in this run.")
            return breakdown_outputs(None, missing=why)
        if where in (HELD_OUT, "as the run stopped"):
            rows = sum(map(sum, breakdown["confusion"]["matrix"]))
            where = f"{rows:,} held-out rows" + (f", {where}" if where != HELD_OUT else "")
        return breakdown_outputs(breakdown, where)

    def download(self, model: MultiTaskModel, session: Session, fmt: str = "sentence-lab") -> Path:
        """The model as a zip in one format, made once; it lives until this visitor's next model replaces it."""
        if fmt in session.downloads:
            return session.downloads[fmt]
        if session.export_dir is None:
            session.export_dir = Path(tempfile.mkdtemp(prefix="model-", dir=self.shared.exports))
        name = DOWNLOAD_NAMES[fmt]
        folder = session.export_dir / name
        export(model, folder, fmt)
        archive = zip_folder(folder)
        shutil.rmtree(folder, ignore_errors=True)
        session.downloads[fmt] = archive
        return archive

    def prepare_download(self, choice: str, session: Session) -> tuple[Any, str]:
        """Point the download button at the visitor's model in the chosen format; say what it holds."""
        if session.model is None or session.running:
            return self.clear_download()
        with shown_in_page():
            if choice not in DOWNLOAD_FORMATS:
                raise ConfigError(f"Unknown download format {choice!r}. Choose one of: {', '.join(DOWNLOAD_FORMATS)}")
            archive = self.download(session.model, session, DOWNLOAD_FORMATS[choice])
        return (gr.DownloadButton(value=str(archive), interactive=True),
                f"Ready: **{archive.name}** ({file_size(archive.stat().st_size)}), {DOWNLOAD_HELP[choice]}")

    @staticmethod
    def clear_download() -> tuple[Any, str]:
        """No download offered (no model of the visitor's, or it was just dropped)."""
        return gr.DownloadButton(value=None, interactive=False), NO_DOWNLOAD

    @staticmethod
    def show_runs(session: Session) -> tuple[pd.DataFrame, Any, Any]:
        """The visitor's runs: a table, their held-out curves on one plot, and the choice of one to use."""
        rows = [{"Run": f"#{r.number}", "Data": _shortened(r.data, DATA_SHOWN), "Freezing": r.strategy,
                 "Epochs": r.epochs, "Seconds": round(r.seconds, 1)}
                | {label: round(r.metrics[key], 4) for key, label in METRIC_COLUMNS.items() if key in r.metrics}
                | {"In use": " ".join(m for m, on in (("✓", r.number == session.active_run), ("pinned", r.pinned)) if on)}
                for r in session.runs]
        table = shown(pd.DataFrame(rows, columns=RUN_COLUMNS)) if rows else pd.DataFrame(columns=RUN_COLUMNS)
        active = next((r.name for r in session.runs if r.number == session.active_run), None)
        figure = plots.runs_figure({r.name: r.curve for r in session.runs}, active=active)
        choices = [(r.title, r.number) for r in reversed(session.runs)]
        return table, figure, gr.Dropdown(choices=choices, value=session.active_run if choices else None)

    def use_run(self, number: Any, session: Session, request: gr.Request = None) -> tuple[Any, ...]:
        """Make one of the visitor's runs the model in use again (the Classify tab answers with it)."""
        with shown_in_page():
            self.shared.seen(session, request).use_run(_chosen_run(number), self.shared)
            self.shared.used(session)
        return (model_note(session, self.shared.default_model), *self.clear_download(), *self.show_runs(session),
                session)

    def pin_run(self, number: Any, session: Session, request: gr.Request = None) -> tuple[Any, ...]:
        """Pin (or unpin) a run that trained the encoder, so that its weights stay when another is used."""
        with shown_in_page():
            gr.Info(self.shared.seen(session, request).pin(_chosen_run(number)))
            self.shared.used(session)
        return (*self.show_runs(session), session)

    def stop(self, session: Session, request: gr.Request = None) -> str:
        """Ask this visitor's run to end at its next step; the model keeps what it learned so far."""
        if session.running:
            session.stop.set()
            return "**Stopping** at the next step…"
        if self.shared.visitors.run_waiting(getattr(request, "session_hash", None)):  # it will end as it starts
            session.stop.set()
            return "**Stopped**: your run will not start."
        return "No run is going. Press **Start** to train."


def render(shared: Shared, session: gr.State, classify: ClassifyParts, demo: gr.Blocks) -> TrainTab:
    """Lay the tab out in the current ``gr.Tab`` and wire it: ``/train`` and ``/stop`` (the rest is private)."""
    tab, lim = TrainTab(shared), shared.limits
    private = dict(api_visibility="private")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### 1 · Data")
            source = gr.Radio(SOURCE_CHOICES, value="synthetic", label="Learn from", elem_id="source")
            size = gr.Slider(20, lim.max_rows, value=min(300, lim.max_rows), step=10, label="Rows to generate",
                             elem_id="size")
            csv_file = gr.File(label="CSV: text, and label and/or sentiment", file_types=[".csv"], type="filepath",
                               visible=False, elem_id="csv-file")
            seed = gr.Number(0, precision=0, label="Seed (same seed, same data split and same run)", elem_id="seed")
            data_md = gr.Markdown(elem_id="data-note")
        with gr.Column():
            gr.Markdown("### 2 · What learns")
            # Only names from the host's allow-list: a visitor can never point the server at a path.
            base_model = gr.Dropdown(list(shared.models), value=shared.models[0], label="Base encoder",
                                     allow_custom_value=False, visible=len(shared.models) > 1, elem_id="base-model")
            preset = gr.Radio([(label, key) for key, label in PRESET_LABELS.items()], value="encoder",
                              label="Freezing", elem_id="preset")
            gr.Markdown("\n".join(f"- **{PRESET_LABELS[k].split(':')[0]}**: {OPTION_HELP[k]}" for k in PRESET_LABELS),
                        elem_id="preset-help")
            gradual = gr.Checkbox(False, label="Gradual unfreezing: open one more encoder layer each epoch",
                                  elem_id="gradual")
            lr_decay = gr.Slider(0.5, 1.0, value=1.0, step=0.05, elem_id="lr-decay",
                                 label="Layer-wise learning-rate decay: lower layers learn slower (1.0 = off)")
            params_md = gr.Markdown(elem_id="param-count")
        with gr.Column():
            gr.Markdown("### 3 · How long, how fast")
            epochs = gr.Slider(1, lim.max_epochs, value=min(12, lim.max_epochs), step=1,
                               label="Epochs (passes over the data)", elem_id="epochs")
            learning_rate = gr.Number(0.02, label="Learning rate (heads; the encoder gets 0.00002)", elem_id="lr")
            batch_size = gr.Slider(4, 128, value=16, step=4, label="Batch size (rows per step)", elem_id="batch-size")
            topic_weight = gr.Slider(0, 3, value=1.0, step=0.1, label="Topic task weight", elem_id="topic-weight")
            sentiment_weight = gr.Slider(0, 3, value=1.0, step=0.1, label="Sentiment task weight",
                                         elem_id="sentiment-weight")
            gr.Markdown(f"<small>Limits on this server: {lim.max_rows:,} rows, {lim.max_epochs} epochs, "
                        f"{lim.max_seconds:g} s per run; CSV files up to {lim.max_upload_mb:g} MB.</small>")
    with gr.Row():
        start_btn = gr.Button("▶ Start training", variant="primary", elem_id="start-btn", scale=2)
        stop_btn = gr.Button("■ Stop", variant="stop", elem_id="stop-btn", scale=1)
        model_file = gr.DownloadButton("Download your model (.zip)", value=None, variant="secondary", scale=1,
                                       interactive=False, elem_id="model-file")
        download_format = gr.Radio(list(DOWNLOAD_FORMATS), value="Sentence Lab", label="Download as",
                                   elem_id="download-format", scale=2)
    download_note = gr.Markdown(NO_DOWNLOAD, elem_id="download-note")
    stop_reply = gr.Markdown(visible=False, label="Stop")
    train_status = gr.Markdown("Choose your settings, then press **Start**.", label="Status", elem_id="train-status")
    loss_plot = gr.Plot(plots.loss_curves({}), label="Loss curves", elem_id="loss-plot")
    metrics_table = gr.Dataframe(pd.DataFrame(columns=["Epoch"]), interactive=False, elem_id="metrics-table",
                                 label="Per epoch: losses on training and held-out (Val) rows; topic accuracy "
                                       "and macro-F1, sentiment MAE and Pearson on the held-out rows")
    gr.Markdown(METRIC_NOTE, elem_id="metric-note")
    with gr.Row(equal_height=False):
        confusion_plot = gr.Plot(plots.message_figure(NO_BREAKDOWN, height=BREAKDOWN_HEIGHT), scale=3, min_width=320,
                                 label="Where the topics go wrong", elem_id="confusion-plot")
        # On a phone the last columns scroll, the topic pinned: squeezed to fit, the headers broke mid-word.
        topic_table_ = gr.Dataframe(topic_table(None), interactive=False, scale=2, min_width=280, pinned_columns=1,
                                    elem_id="per-topic-table", label="Per topic, weakest first")
    gr.Markdown(BREAKDOWN_NOTE, elem_id="breakdown-note")
    with gr.Accordion("Your runs: compare them, use any one again", open=True):
        runs_plot = gr.Plot(plots.runs_figure({}), label="Held-out loss of each run", elem_id="runs-plot")
        runs_table = gr.Dataframe(pd.DataFrame(columns=RUN_COLUMNS), interactive=False, elem_id="runs-table",
                                  label=f"Each run's held-out figures (this page keeps your last {MAX_RUNS}); "
                                        "the words under the table above say what each one means")
        with gr.Row():
            run_choice = gr.Dropdown([], value=None, label="Run", elem_id="run-choice", scale=3)
            use_run_btn = gr.Button("Use this run", variant="secondary", elem_id="use-run-btn", scale=1)
            pin_run_btn = gr.Button("Pin / unpin", variant="secondary", elem_id="pin-run-btn", scale=1)
        with gr.Row():
            compare_presets = gr.CheckboxGroup(
                [(PRESET_LABELS[key].split(":")[0], key) for key in COMPARE_ORDER],
                value=["encoder", "none"], elem_id="compare-presets", scale=3,
                label="Compare strategies: the ticked ones run in turn on the same data, split and seed")
            compare_btn = gr.Button("Compare strategies", variant="secondary", elem_id="compare-strategies-btn", scale=1)

    # The form: one value, by field name; TrainForm's field order is the /train API's parameter order.
    components = dict(source=source, size=size, seed=seed, csv_file=csv_file, preset=preset, gradual=gradual,
                      lr_decay=lr_decay, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                      topic_weight=topic_weight, sentiment_weight=sentiment_weight, base_model=base_model)
    form = {f.name: components[f.name] for f in fields(TrainForm)}
    gr.on([source.change, size.release, seed.change, csv_file.change, preset.change, gradual.change, epochs.release,
           base_model.change, demo.load], tab.describe_setup, inputs_kwargs=form, outputs=[data_md, params_md], **private)
    source.change(show_source_fields, source, [size, csv_file], **private)

    # A second click while a run streams is ignored by the page (trigger_mode "once"); the API gets an error.
    trained = start_btn.click(tab.train, inputs=[session], inputs_kwargs=form,
                              outputs=[loss_plot, metrics_table, train_status, model_file, classify.model_note, session,
                                       confusion_plot, topic_table_],
                              api_name="train", concurrency_limit=lim.max_runs, concurrency_id="train",
                              show_progress_on=[train_status])
    trained.success(tab.prepare_download, [download_format, session], [model_file, download_note], **private)
    trained.success(tab.show_runs, session, [runs_table, runs_plot, run_choice], **private)
    use_run_btn.click(tab.use_run, [run_choice, session],
                      [classify.model_note, model_file, download_note, runs_table, runs_plot, run_choice, session],
                      **private)
    pin_run_btn.click(tab.pin_run, [run_choice, session], [runs_table, runs_plot, run_choice, session], **private)
    download_format.change(tab.prepare_download, [download_format, session], [model_file, download_note],
                           show_progress_on=[download_note], **private)
    # A model chosen in the Classify tab: the download offered was the previous model's; the runs table marks it.
    for picked in classify.picked:
        picked.success(tab.clear_download, None, [model_file, download_note], **private)
        picked.success(tab.show_runs, session, [runs_table, runs_plot, run_choice], **private)
    compared = compare_btn.click(tab.compare, inputs=[session, compare_presets], inputs_kwargs=form,
                                 outputs=[loss_plot, metrics_table, train_status, model_file, classify.model_note,
                                          session, confusion_plot, topic_table_],
                                 concurrency_limit=lim.max_runs, concurrency_id="train", show_progress_on=[train_status],
                                 api_name="compare_strategies", **private)
    compared.success(tab.prepare_download, [download_format, session], [model_file, download_note], **private)
    compared.success(tab.show_runs, session, [runs_table, runs_plot, run_choice], **private)
    # Stop's reply is for API callers; the page sees the run's own status turn to "Stopped" at the next
    # step (a visible reply could arrive after that final status and overwrite it).
    stop_btn.click(tab.stop, session, stop_reply, api_name="stop", concurrency_limit=None, show_progress="hidden")
    return tab


def file_size(size: int) -> str:
    """A size as people read it: "9 KB" for a heads-only model (it said "0.0 MB"), "87.3 MB" for a full one."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB"
    return f"{size / 1e6:.1f} MB"


def zip_folder(folder: Path) -> Path:
    """``folder`` as ``folder.zip`` (one top folder inside). Weights are stored as they are: float tensors
    hardly compress, and deflating 90 MB of them cost every encoder run seconds of CPU."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            packed = zipfile.ZIP_STORED if path.suffix in (".safetensors", ".onnx") else zipfile.ZIP_DEFLATED
            out.write(path, path.relative_to(folder.parent), compress_type=packed)
    return archive


def show_source_fields(source: str) -> tuple[Any, Any]:
    """The rows slider for synthetic data, the file box for a CSV."""
    return gr.update(visible=source == "synthetic"), gr.update(visible=source == "csv")

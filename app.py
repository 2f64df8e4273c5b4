"""Sentence Lab in the browser: embed & compare, classify + sentiment, live training, a guide.

    python app.py        # serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860)

The UI only wires: each handler takes UI values, makes one ``core`` call and returns UI values;
figures come from ``core.plots``. The base encoder and the shipped model are loaded once and
only read. Everything a visitor trains lives in that visitor's ``gr.State`` (a ``Session``),
so one visitor's run never changes what another sees. Public API (``gradio_client``):
``/embed``, ``/compare``, ``/classify``, ``/train``, ``/stop``; every other event is private.

A host bounds the work one run may do through environment variables (see ``Limits``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import numpy as np
import pandas as pd
from torch import nn

from core import (DoneEvent, EpochEvent, HeadsConfig, MultiTaskDataset, MultiTaskModel, SentenceEncoder, StartEvent,
                  StepEvent, TrainingConfig, TrainResult, ValidationEvent, apply_preset, read_csv, train,
                  unfreeze_top_layers)
from core import plots
from core.config import DEFAULT_HEADS_DIR, POOLING_MODES
from core.data import check_learnable, load_builtin
from core.encoder import is_blank, text_problem
from core.export import export
from core.freezing import PRESET_HELP
from core.training import seed_everything

logger = logging.getLogger("sentence_lab.app")

VAL_FRACTION = 0.2  # a fifth of the rows is held out for the validation curve and the metrics
# What the Train tab's download offers: the label shown -> the format, and the folder name inside the zip.
DOWNLOAD_FORMATS = {"Sentence Lab": "sentence-lab", "sentence-transformers": "sentence-transformers", "ONNX": "onnx"}
DOWNLOAD_NAMES = {"sentence-lab": "sentence-lab-model", "sentence-transformers": "sentence-lab-st", "onnx": "sentence-lab-onnx"}
DOWNLOAD_HELP = {
    "Sentence Lab": "a folder for `MultiTaskModel.load` and `python -m core predict --model`.",
    "sentence-transformers": "`SentenceTransformer(folder)` gives the same embeddings; the heads are in heads.safetensors.",
    "ONNX": "one graph for onnxruntime: token ids in; embedding, topic probabilities and sentiment out.",
}
NO_DOWNLOAD = "<small>Train a model to download it.</small>"
STREAM_EVERY_S = 0.25  # step events update the page at most ~4 times a second; epoch events always do

EXAMPLE_SENTENCES = """A man is playing a guitar.
Someone is playing a musical instrument.
The stock market fell sharply today.
Shares dropped after the central bank raised interest rates.
A cat is sleeping on the sofa.
The kitten naps on the couch."""

EXAMPLE_CLASSIFY = """The striker scored twice as United won the cup final.
Shares of the chip maker plunged after weak quarterly earnings.
NASA's new telescope captured stunning images of a distant galaxy.
Peace talks collapsed as the two governments traded bitter accusations."""

POOLING_HELP = {
    "mean": "average of all tokens (recommended)",
    "cls": "the first, special token only",
    "max": "strongest value of each feature",
    "mean_sqrt_len": "sum ÷ √length",
    "weighted_mean": "later tokens count more",
    "last_token": "the final token only",
}
PRESET_LABELS = {
    "encoder": "Encoder frozen: train the heads only (fast)",
    "none": "Nothing frozen: train everything",
    "all": "Everything frozen: no training (baseline)",
    "classification_head": "Topic head frozen",
    "sentiment_head": "Sentiment head frozen",
}
SOURCE_CHOICES = [("Synthetic sentences (generated, 4 topics + sentiment)", "synthetic"),
                  ("BBC News articles (real, 5 topics)", "bbc_news"),
                  ("My CSV file", "csv")]
PAIR_COLUMNS = ["Sentence A", "Sentence B", "Score"]
CLASSIFY_COLUMNS = ["Sentence", "Topic", "Confidence", "Sentiment", "Reading"]
METRIC_COLUMNS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "mae": "MAE", "pearson": "Pearson"}  # validation
# How TrainingConfig's field names read in the page.
FIELD_NAMES = {"learning_rate": "Learning rate", "batch_size": "Batch size", "epochs": "Epochs",
               "classification_weight": "Topic weight", "sentiment_weight": "Sentiment weight",
               "layer_lr_decay": "Layer-wise LR decay", "gradual_unfreeze": "Gradual unfreezing", "seed": "Seed"}


# -- settings, shared resources, per-visitor state ---------------------------------------------------


def _env_names(name: str) -> tuple[str, ...]:
    """A comma-separated list from the environment, blanks and repeats dropped."""
    names = [n.strip() for n in os.environ.get(name, "").split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


def _env_number(name: str, default: float, cast: type = int) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a {'whole ' if cast is int else ''}number") from None
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one visitor may ask of this server. Each has an environment variable a host can set."""

    max_rows: int = 1000  # SENTENCE_LAB_MAX_ROWS: bigger sets are sampled down (embedding 1,000 texts: ~10 s)
    max_epochs: int = 100  # SENTENCE_LAB_MAX_EPOCHS
    max_seconds: float = 180.0  # SENTENCE_LAB_MAX_SECONDS: a run is stopped (and kept) after this long
    # SENTENCE_LAB_MAX_RUNS: training runs at the same time, all visitors together. One: a run takes
    # both of a free Space's 2 vCPUs; the next visitor waits with their place in the queue shown.
    max_runs: int = 1
    max_sentences: int = 32  # SENTENCE_LAB_MAX_SENTENCES: per Embed or Classify request
    # SENTENCE_LAB_MAX_CHARS: longer sentences are cut here (and reported), before tokenising; the
    # encoder reads at most 256 tokens (~1,500 characters) anyway, so this only bounds the work.
    max_chars: int = 20_000
    max_upload_mb: float = 10.0  # SENTENCE_LAB_MAX_UPLOAD_MB: a CSV of 1,000 rows is ~0.1 MB
    max_queue: int = 64  # SENTENCE_LAB_MAX_QUEUE: requests waiting, all visitors; then "the queue is full"
    # SENTENCE_LAB_MODELS: comma-separated encoder names a visitor may train on, beside the default.
    # Only names from this list are ever loaded: a visitor never gives a path.
    models: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Limits:
        return cls(max_rows=_env_number("SENTENCE_LAB_MAX_ROWS", cls.max_rows),
                   max_epochs=_env_number("SENTENCE_LAB_MAX_EPOCHS", cls.max_epochs),
                   max_seconds=_env_number("SENTENCE_LAB_MAX_SECONDS", cls.max_seconds, float),
                   max_runs=_env_number("SENTENCE_LAB_MAX_RUNS", cls.max_runs),
                   max_sentences=_env_number("SENTENCE_LAB_MAX_SENTENCES", cls.max_sentences),
                   max_chars=_env_number("SENTENCE_LAB_MAX_CHARS", cls.max_chars),
                   max_upload_mb=_env_number("SENTENCE_LAB_MAX_UPLOAD_MB", cls.max_upload_mb, float),
                   max_queue=_env_number("SENTENCE_LAB_MAX_QUEUE", cls.max_queue),
                   models=_env_names("SENTENCE_LAB_MODELS"))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Session:
    """One visitor's things: the model they trained, its download, and the stop flag of their run.

    Gradio deep-copies a State's initial value for each new visitor; a copy gets its own model
    copy and its own (unset) stop flag.
    """

    def __init__(self) -> None:
        self.model: MultiTaskModel | None = None  # None: the shipped model
        self.about: str = ""  # how the visitor's model was trained, in words
        self.export_dir: Path | None = None  # holds the zips of the model, one per download format
        self.downloads: dict[str, Path] = {}  # format -> zip, made when first asked for
        self.stop = threading.Event()
        self.running = False

    def __deepcopy__(self, memo: dict[int, Any]) -> Session:
        new = Session()
        new.model, new.about = copy.deepcopy(self.model, memo), self.about
        return new

    def set_model(self, model: MultiTaskModel | None, about: str = "") -> None:
        """Make ``model`` this visitor's model (None: back to the shipped one); drops the old download."""
        if self.export_dir is not None:
            shutil.rmtree(self.export_dir, ignore_errors=True)
        self.model, self.about, self.export_dir, self.downloads = model, about, None, {}

    def close(self) -> None:
        """Gradio calls this when the visitor's session expires: stop their run, drop their model."""
        self.stop.set()
        self.set_model(None)


def share_weights(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are new objects over the same storage.

    Each copy has its own ``requires_grad`` flags and train/eval mode, so a run may freeze and
    unfreeze its copy while other visitors use the original; the weights are not duplicated.
    Only for runs that do not change encoder weights.
    """
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in module.parameters()}
    return copy.deepcopy(module, memo)


@functools.lru_cache(maxsize=1)
def _bbc_news() -> MultiTaskDataset:
    return load_builtin("bbc_news")  # 2,225 files: read once per process, never modified


# -- small helpers ------------------------------------------------------------------------------------


def _bad_input(message: str, title: str = "Please check the input") -> gr.Error:
    """A message for the page (a toast) and for API callers (AppError); not a server-side traceback."""
    return gr.Error(message, title=title, print_exception=False)


@contextlib.contextmanager
def _shown_in_page() -> Iterator[None]:
    """Any failure becomes a message in the page (a toast; AppError for API callers), never a dead tab.

    Bad input (ValueError, DataError, ModelFolderError) is shown as it is; anything else is logged
    with its traceback and shown as a server-side failure.
    """
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for name, label in FIELD_NAMES.items():
            message = message.replace(name, label)
        raise _bad_input(message) from None
    except Exception as exc:  # noqa: BLE001 -- reported to the visitor and logged, not swallowed
        logger.exception("handler failed")
        raise gr.Error(f"The server could not finish this ({type(exc).__name__}: {exc}). Nothing you had was "
                       "changed; please try again.", title="Something went wrong", print_exception=False) from None


@dataclass
class Sentences:
    """The lines a visitor typed, ready to embed: ``cut`` lists those shortened to the character limit."""

    lines: list[str]
    cut: list[int]


def _sentences(text: str | None, limits: Limits) -> Sentences:
    """One sentence per non-blank line, within the server's limits; a line that is not text is named."""
    lines = [line.strip() for line in str(text or "").splitlines()]
    lines = [line for line in lines if not is_blank(line)]  # empty, or only invisible characters: not a sentence
    if not lines:
        raise _bad_input("Type at least one sentence (one per line).", title="Nothing to read")
    if len(lines) > limits.max_sentences:
        raise _bad_input(f"At most {limits.max_sentences} sentences at a time here; you gave {len(lines)}.",
                         title="Too many")
    for n, line in enumerate(lines, 1):
        if text_problem(line):
            raise _bad_input(f"Sentence {n} {text_problem(line)}.")
    cut = [i for i, line in enumerate(lines) if len(line) > limits.max_chars]
    return Sentences([line[:limits.max_chars] for line in lines], cut)


def _number(name: str, value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _bad_input(f"{name} is empty: type a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad_input(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise _bad_input(f"{name} must be a finite number, got {value!r}.")
    return number


def _whole(name: str, value: Any) -> int:
    number = _number(name, value)
    if number != int(number):
        raise _bad_input(f"{name} must be a whole number, got {value}.")
    return int(number)


def _shorten(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1_000_000 else f"{n:,}"


def _percent(part: int, whole: int) -> str:
    share = 100 * part / max(whole, 1)
    return f"{share:.1f}%" if share >= 0.1 or part == 0 else f"{share:.3f}%"


def _model_note(session: Session, default_model: MultiTaskModel | None) -> str:
    model = session.model if session.model is not None else default_model
    if model is None:
        return ("**No model yet.** The shipped model is missing (`assets/default_model`); train one in the "
                "**Train** tab and it will be used here.")
    topics = ", ".join(model.class_names) or "none (this model has no topic head)"
    if model.sentiment_head is not None:
        lo, hi = model.heads_config.sentiment_range
        mood = f"sentiment scale {lo:g} … {hi:g}"
    else:
        mood = "no sentiment head"
    if session.model is not None:
        who = f"**your model**, {session.about}"
    else:
        who = "**the shipped model** (AG News topics, SST sentiment)"
    return f"Model in use: {who}.<br>Topics: {topics} · {mood}."


@dataclass
class RunLog:
    """What the Train tab shows of a run, built from the training events."""

    total_epochs: int
    steps_per_epoch: int = 1
    total_steps: int = 0
    step: int = 0
    epoch: int = 0
    # split -> task -> [(epoch, loss), ...]; training points are per step, at fractional epochs
    curves: dict[str, dict[str, list[tuple[float, float]]]] = field(
        default_factory=lambda: {"train": {}, "validation": {}})
    rows: list[dict[str, Any]] = field(default_factory=list)  # the metrics table, one row per epoch

    def add(self, event: Any) -> None:
        names = plots.TASK_NAMES
        if isinstance(event, StartEvent):
            self.steps_per_epoch, self.total_steps = event.steps_per_epoch, event.total_steps
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
        return pd.DataFrame(self.rows).round(4) if self.rows else pd.DataFrame(columns=["Epoch"])

    def figure(self) -> Any:
        return plots.loss_curves(self.curves, total_epochs=self.total_epochs)

    def progress(self, seconds: float) -> str:
        width = 24
        done = int(width * self.step / max(self.total_steps, 1))
        return (f"**Training…** epoch {self.epoch + 1} of {self.total_epochs} · step {self.step} of "
                f"{self.total_steps} · {seconds:.0f} s<br>`{'█' * done}{'░' * (width - done)}`")


def _result_words(result: TrainResult, seconds: float, timed_out: bool, limit_s: float) -> str:
    m, scores = result.best_metrics, []
    if "accuracy" in m:
        scores.append(f"topic accuracy {100 * m['accuracy']:.0f}%")
    if "mae" in m:
        scores.append(f"sentiment off by {m['mae']:.2f} on average")
    best = ""
    if scores and result.best_epoch is not None:
        best = f" Best epoch {result.best_epoch + 1}: {', '.join(scores)} on the held-out rows."
    if timed_out:
        head = (f"**Stopped at this server's limit of {limit_s:g} s per run** after {result.steps} steps; "
                "the model keeps what it learned.")
    elif result.stopped:
        head = f"**Stopped** after {result.steps} steps; the model keeps what it learned so far."
    elif result.stopped_early:
        head = (f"**Done in {seconds:.0f} s.** Validation stopped improving, so the run ended early "
                "with the best epoch's weights.")
    else:
        head = f"**Done in {seconds:.0f} s:** {len(result.history)} epochs, {result.steps} steps."
    return (f"{head}{best}<br>It is now **your model in the Classify tab**; "
            "the **Download** button saves it as a zip: Sentence Lab, sentence-transformers or ONNX.")


# -- the handlers ---------------------------------------------------------------------------------------


class SentenceLab:
    """The app's handlers over the shared, read-only encoder and shipped model.

    Args:
        encoder: the base encoder (mean pooling, normalised); views with other settings share its weights.
        default_model: the shipped heads, or None when they are not installed.
        limits: what one visitor may ask of this server.
    """

    def __init__(self, encoder: SentenceEncoder, default_model: MultiTaskModel | None, limits: Limits) -> None:
        self.encoder, self.default_model, self.limits = encoder, default_model, limits
        # Inference (not training) runs in the fastest precision that keeps cosine >= 0.999 to fp32 on
        # this hardware: bf16 on a CPU with native bf16, fp16 on CUDA, else fp32.
        self.precision = encoder.resolve_precision(os.environ.get("SENTENCE_LAB_PRECISION", "auto"))
        logger.info("inference precision: %s", self.precision)
        # A fast tokenizer changes its own truncation settings on each call: one user at a time.
        self._tokenizer_lock = threading.Lock()
        # The base encoders a visitor may train on: this one first, then the host's SENTENCE_LAB_MODELS.
        self.models = tuple(dict.fromkeys((encoder.config.model_name, *limits.models)))
        self._encoders: dict[str, SentenceEncoder] = {}  # the others, loaded on first use and shared
        self._models_lock = threading.Lock()
        # Every visitor's model download lives under one folder, removed when the server exits.
        self._exports = Path(tempfile.mkdtemp(prefix="sentence-lab-"))
        weakref.finalize(self, shutil.rmtree, self._exports, ignore_errors=True)

    # Embed & compare -------------------------------------------------------------------------------

    def embed(self, text: str, pooling: str, normalize: bool) -> tuple[Any, str, dict[str, Any]]:
        """Sentences -> a 2-D map, the embedding size and truncation notes, and the vectors."""
        with _shown_in_page():
            sentences = _sentences(text, self.limits)
            with self._tokenizer_lock:
                encoder = self.encoder.with_settings(pooling=pooling, normalize=bool(normalize))
                result = encoder.embed(sentences.lines, precision=self.precision)
            dim, limit = result.embeddings.shape[1], encoder.max_length
            truncated = sorted(set(result.truncated) | set(sentences.cut))
            info = [f"**Each sentence became {dim} numbers** ({pooling} pooling, "
                    f"{'normalised to length 1' if normalize else 'not normalised'}, computed in {self.precision})."]
            for i in truncated:
                if i in sentences.cut:
                    info.append(f"**Cut short:** sentence {i + 1} is longer than {self.limits.max_chars:,} characters; "
                                f"it was cut there, and only its first {limit} tokens were read.")
                else:
                    info.append(f"**Cut short:** sentence {i + 1} has {result.num_tokens[i]} tokens; "
                                f"only its first {limit} were read.")
            if not truncated:
                info.append(f"No sentence was cut short (the limit is {limit} tokens, roughly {limit * 3 // 4} words).")
            vectors = {"dimension": dim, "pooling": pooling, "normalize": bool(normalize), "precision": self.precision,
                       "max_tokens": limit,
                       "truncated": truncated, "num_tokens": result.num_tokens,
                       "embeddings": np.round(result.embeddings, 6).tolist()}
            return plots.sentence_map(sentences.lines, result.embeddings), "<br>".join(info), vectors

    def compare(self, text: str, pooling: str, normalize: bool) -> tuple[Any, str, pd.DataFrame]:
        """Sentences -> the similarity heat-map, the most and least similar pairs in words, all pairs ranked."""
        with _shown_in_page():
            sentences = _sentences(text, self.limits).lines
            with self._tokenizer_lock:
                encoder = self.encoder.with_settings(pooling=pooling, normalize=bool(normalize))
                vectors = encoder.encode(sentences, precision=self.precision)
            scores = vectors @ vectors.T  # (N, N) dot products; cosine similarity when normalised
            n = len(sentences)
            pairs = sorted(((float(scores[i, j]), i, j) for i in range(n) for j in range(i + 1, n)), reverse=True)
            table = pd.DataFrame([(sentences[i], sentences[j], round(s, 4)) for s, i, j in pairs],
                                 columns=PAIR_COLUMNS)
            heatmap = plots.similarity_heatmap(sentences, scores, normalized=bool(normalize))
            return heatmap, self._pairs_in_words(sentences, pairs, bool(normalize)), table

    @staticmethod
    def _pairs_in_words(sentences: list[str], pairs: list[tuple[float, int, int]], normalize: bool) -> str:
        if not pairs:
            return "Add a second line to compare sentences with each other."

        def pair(score: float, i: int, j: int) -> str:
            words = f", *{plots.similarity_word(score)}*" if normalize else ""
            return f"“{sentences[i]}” and “{sentences[j]}”: **{score:.2f}**{words}"

        if normalize:
            lines = [f"**Most alike:** {pair(*pairs[0])}.", f"**Least alike:** {pair(*pairs[-1])}.",
                     "Scores are cosine similarities: 1 means the same meaning, around 0 means unrelated."]
        else:
            lines = [f"**Highest score:** {pair(*pairs[0])}.", f"**Lowest score:** {pair(*pairs[-1])}.",
                     "Without normalisation a score mixes meaning with vector length, so it has no fixed scale. "
                     "Switch normalisation on to read scores as cosine similarity (1 = same meaning)."]
        return f"{lines[0]}<br>{lines[1]}<br><small>{lines[2]}</small>"

    # Classify + sentiment --------------------------------------------------------------------------

    def classify(self, text: str, session: Session) -> tuple[Any, pd.DataFrame, list[dict[str, Any]]]:
        """Sentences -> per sentence the topic probabilities and the sentiment, with this visitor's model."""
        with _shown_in_page():
            sentences = _sentences(text, self.limits)
            model = session.model if session.model is not None else self.default_model
            if model is None:
                raise _bad_input("There is no model yet: the shipped one is missing. Train one in the Train tab.",
                                 title="No model")
            predictions = model.predict(sentences.lines, precision=self.precision)
            for i in sentences.cut:
                predictions[i].truncated = True
            scale, limit = model.heads_config.sentiment_range, model.encoder.max_length
            rows = [(_shorten(p.text) + (f" ✂ (only its first {limit} tokens were read)" if p.truncated else ""),
                     p.label or "—",
                     f"{100 * p.probabilities[p.label]:.0f}%" if p.label else "—",
                     f"{plots.sentiment_position(p.sentiment, scale):+.2f}" if p.sentiment is not None else "—",
                     plots.sentiment_word(p.sentiment, scale) if p.sentiment is not None else "—")
                    for p in predictions]
            figure = plots.prediction_figure(predictions, model.class_names, scale)
            return figure, pd.DataFrame(rows, columns=CLASSIFY_COLUMNS), [p.to_dict() for p in predictions]

    def use_default_model(self, session: Session) -> tuple[str, Any, str, Session]:
        session.set_model(None)
        return (_model_note(session, self.default_model), gr.DownloadButton(value=None, interactive=False), NO_DOWNLOAD,
                session)

    # Train -----------------------------------------------------------------------------------------

    def _load_data(self, source: str, size: Any, seed: Any, csv_file: str | None) -> tuple[MultiTaskDataset, str]:
        """The chosen data set, sampled down to the row limit, and a phrase that names it."""
        limit = self.limits.max_rows
        if source == "synthetic":
            rows = _whole("Rows", size)
            if rows > limit:
                raise _bad_input(f"At most {limit:,} rows here (SENTENCE_LAB_MAX_ROWS); you asked for {rows:,}.")
            data = load_builtin("synthetic", size=rows, seed=_whole("Seed", seed))
            name = f"{len(data):,} synthetic sentences"
        elif source == "bbc_news":
            data, name = _bbc_news(), "BBC News articles"
        elif source == "csv":
            if not csv_file:
                raise _bad_input("Upload a CSV file first (columns: text, and label and/or sentiment).",
                                 title="No file")
            name, nbytes = Path(csv_file).name, Path(csv_file).stat().st_size
            if nbytes > self.limits.max_upload_bytes:
                raise _bad_input(f"{name} is {nbytes / 2**20:.1f} MB; this server takes CSV files up to "
                                 f"{self.limits.max_upload_mb:g} MB (SENTENCE_LAB_MAX_UPLOAD_MB).", title="File too big")
            data = read_csv(csv_file, name=name)
            check_learnable(data, name)
        else:
            raise _bad_input(f"Unknown data source {source!r}; choose synthetic, bbc_news or csv.")
        if len(data) > limit:  # the server's row limit: a seeded sample, and the name says so
            keep = random.Random(_whole("Seed", seed)).sample(range(len(data)), limit)
            data, name = (data.subset(sorted(keep)),
                          f"{limit:,} of {len(data):,} {name} (a sample: this server's limit is {limit:,} rows per run)")
        return data, name

    def _base_encoder(self, name: str | None) -> SentenceEncoder:
        """A base encoder from the allow-list (the default, plus SENTENCE_LAB_MODELS), loaded once and shared."""
        name = name or self.encoder.config.model_name
        if name == self.encoder.config.model_name:
            return self.encoder
        if name not in self.models:
            raise _bad_input(f"Unknown base encoder {name!r}. This server offers: {', '.join(self.models)} "
                             "(a host adds more with SENTENCE_LAB_MODELS).", title="Unknown model")
        with self._models_lock:
            if name not in self._encoders:
                logger.info("loading base encoder %s", name)
                self._encoders[name] = SentenceEncoder.from_pretrained(name, pooling="mean", normalize=True)
            return self._encoders[name]

    @staticmethod
    def _describe(data: MultiTaskDataset, name: str) -> str:
        parts = [f"**{name}**"]
        if data.class_names:
            parts.append(f"{len(data.class_names)} topics ({', '.join(data.class_names)})")
        if "sentiment" in data.tasks:
            lo, hi = data.sentiment_range
            parts.append(f"sentiment on {lo:g} … {hi:g} for {sum(s is not None for s in data.sentiments):,} rows")
        else:
            parts.append("no sentiment")
        n_val = max(1, round(len(data) * VAL_FRACTION))
        return (" · ".join(parts)
                + f"<br><small>{len(data) - n_val:,} rows to learn from, {n_val:,} held out to check.</small>")

    def _new_model(self, data: MultiTaskDataset, *, own_weights: bool, seed: int | None = None,
                   base: SentenceEncoder | None = None) -> MultiTaskModel:
        """Fresh heads for ``data`` on a base encoder; ``own_weights`` copies the encoder for runs that change it.

        ``seed`` seeds the heads' first weights (a run); None leaves the global generators alone (a count).
        """
        base = base or self.encoder
        with self._tokenizer_lock:
            tokenizer = copy.deepcopy(base.tokenizer)
        backbone = copy.deepcopy(base.backbone) if own_weights else share_weights(base.backbone)
        encoder = SentenceEncoder(base.config, backbone, tokenizer, base_checksum=base.base_checksum)
        if seed is not None:
            seed_everything(seed)
        heads = HeadsConfig(class_names=data.class_names, sentiment="sentiment" in data.tasks,
                            sentiment_range=data.sentiment_range)
        return MultiTaskModel(encoder, heads)

    def describe_setup(self, source: str, size: Any, seed: Any, csv_file: str | None, preset: str, gradual: bool,
                       epochs: Any, base_model: str | None = None) -> tuple[str, str]:
        """The chosen data in words, and how many parameters the chosen freezing leaves trainable."""
        if source == "csv" and not csv_file:
            return ("Upload a CSV file: a header row, a `text` column, and a `label` and/or a `sentiment` column "
                    "(see the Guide).", "Trainable parameters: — (upload the data first)")
        try:
            with _shown_in_page():
                data, name = self._load_data(source, size, seed, csv_file)
                base = self._base_encoder(base_model)
        except gr.Error as exc:
            return f"**Problem with the data:** {exc.message}", "Trainable parameters: — (choose the data first)"
        described = self._describe(data, name)
        try:
            TrainingConfig(freeze=preset, gradual_unfreeze=bool(gradual))
        except ValueError:
            return described, ("**Check the settings:** gradual unfreezing starts from a frozen encoder and opens "
                               "it layer by layer: choose *Encoder frozen* or *Nothing frozen* with it.")
        model = self._new_model(data, own_weights=False, base=base)
        report = apply_preset(model, "encoder" if gradual else preset)
        text = (f"**Trainable parameters: {report.trainable:,} of {report.total:,} "
                f"({_percent(report.trainable, report.total)})**")
        if gradual:
            last = unfreeze_top_layers(model, max(_whole("Epochs", epochs) - 1, 0))
            text += (f"<br>Starts with the heads only, then opens one more encoder layer each epoch: "
                     f"{last.trainable:,} trainable ({last.open_layers} of {last.num_layers} layers) "
                     "in the last epoch.")
        elif preset == "all":
            text += "<br>Nothing learns with this preset: it is the baseline to compare against, not a run to start."
        (enc, enc_total), head, mood = (report.parts[k] for k in ("encoder", "classification_head", "sentiment_head"))
        detail = (f"encoder {_count(enc)} of {_count(enc_total)} · topic head {_count(head[0])} · "
                  f"sentiment head {_count(mood[0])}")
        return described, f"{text}<br><small>{detail}</small>"

    def _training_config(self, preset: str, gradual: bool, lr_decay: Any, epochs: Any, learning_rate: Any,
                         batch_size: Any, topic_weight: Any, sentiment_weight: Any, seed: Any) -> TrainingConfig:
        """The Train tab's fields as a validated TrainingConfig, within this server's limits."""
        n_epochs, decay = _whole("Epochs", epochs), _number("Layer-wise LR decay", lr_decay)
        if n_epochs > self.limits.max_epochs:
            raise _bad_input(f"At most {self.limits.max_epochs} epochs here (SENTENCE_LAB_MAX_EPOCHS); "
                             f"you asked for {n_epochs}.")
        return TrainingConfig(
            epochs=n_epochs, learning_rate=_number("Learning rate", learning_rate),
            batch_size=_whole("Batch size", batch_size), freeze=preset, gradual_unfreeze=bool(gradual),
            layer_lr_decay=None if decay >= 1 else decay, classification_weight=_number("Topic weight", topic_weight),
            sentiment_weight=_number("Sentiment weight", sentiment_weight), seed=_whole("Seed", seed),
        )

    def train(self, source: str, size: Any, seed: Any, csv_file: str | None, preset: str, gradual: bool,
              lr_decay: Any, epochs: Any, learning_rate: Any, batch_size: Any, topic_weight: Any,
              sentiment_weight: Any, base_model: str | None, session: Session) -> Iterator[tuple[Any, ...]]:
        """Train fresh heads (and the encoder, if chosen) on the chosen data, streaming curves and metrics.

        Yields (loss figure, metrics table, status, model zip (at the end), Classify tab note, session).
        The visitor's model changes only once a run has taken at least one step: a run refused, failed
        or stopped before that leaves their previous model in use.
        """
        with _shown_in_page():
            yield from self._train(source, size, seed, csv_file, preset, gradual, lr_decay, epochs, learning_rate,
                                   batch_size, topic_weight, sentiment_weight, base_model, session)

    def _train(self, source: str, size: Any, seed: Any, csv_file: str | None, preset: str, gradual: bool,
               lr_decay: Any, epochs: Any, learning_rate: Any, batch_size: Any, topic_weight: Any,
               sentiment_weight: Any, base_model: str | None, session: Session) -> Iterator[tuple[Any, ...]]:
        if session.running:
            raise _bad_input("A run is already going in this page: stop it first.", title="Busy")
        if preset == "all":
            raise _bad_input("‘Everything frozen’ trains nothing: it is the baseline to compare against. "
                             "Pick another freezing preset to start a run.", title="Nothing to train")
        config = self._training_config(preset, gradual, lr_decay, epochs, learning_rate, batch_size, topic_weight,
                                       sentiment_weight, seed)
        base = self._base_encoder(base_model)
        data, name = self._load_data(source, size, seed, csv_file)
        train_set, val_set = data.split(VAL_FRACTION, seed=config.seed)
        encoder_learns = config.gradual_unfreeze or config.freeze != "encoder"
        log = RunLog(total_epochs=config.epochs)
        session.running = True
        session.stop.clear()
        started, last_yield, timed_out = time.monotonic(), 0.0, False
        try:
            note = _model_note(session, self.default_model)
            preparing = ("…" if encoder_learns
                         else ": embedding every text once (the encoder is frozen, so this is the slow part)…")
            yield log.figure(), log.table(), f"**Preparing** {len(data):,} rows{preparing}", gr.skip(), note, session
            model = self._new_model(data, own_weights=encoder_learns, seed=config.seed, base=base)
            for event in train(model, train_set, val_set, config, stop=session.stop):
                log.add(event)
                elapsed = time.monotonic() - started
                if elapsed > self.limits.max_seconds and not session.stop.is_set():
                    timed_out = True
                    session.stop.set()  # the loop ends at its next step and keeps the model
                if isinstance(event, DoneEvent):
                    result = event.result
                    break
                if isinstance(event, StepEvent) and time.monotonic() - last_yield < STREAM_EVERY_S:
                    continue
                last_yield = time.monotonic()
                yield log.figure(), log.table(), log.progress(elapsed), gr.skip(), note, session
            seconds = time.monotonic() - started
            if result.steps == 0:  # stopped while preparing: nothing learned, so nothing replaces the old model
                why = f" at this server's limit of {self.limits.max_seconds:g} s" if timed_out else ""
                kept = "your previous model" if session.model is not None else "the shipped model"
                yield (log.figure(), log.table(), f"**Stopped{why} before the first step**: nothing was learned, so "
                       f"{kept} stays in use.", gr.skip(), note, session)
                return
            strategy = "gradual unfreezing" if config.gradual_unfreeze else PRESET_LABELS[preset].split(":")[0].lower()
            on = "" if base is self.encoder else f" with {base.config.model_name}"
            session.set_model(model, f"trained on {name}{on} ({len(result.history)} epochs, {strategy})")
            words = _result_words(result, seconds, timed_out, self.limits.max_seconds) + f"<br><small>Data: {name}.</small>"
            try:
                archive = str(self._export(model, session))
            except Exception as exc:  # noqa: BLE001 -- the trained model stays in use; only its zip is missing
                logger.exception("could not prepare the download")
                archive, words = None, words + f"<br>The download could not be prepared ({type(exc).__name__}: {exc})."
            yield log.figure(), log.table(), words, archive, _model_note(session, self.default_model), session
        finally:
            session.running = False
            session.stop.clear()

    def _export(self, model: MultiTaskModel, session: Session, fmt: str = "sentence-lab") -> Path:
        """The model as a zip in one format, made once; it lives until this visitor's next model replaces it."""
        if fmt in session.downloads:
            return session.downloads[fmt]
        if session.export_dir is None:
            session.export_dir = Path(tempfile.mkdtemp(prefix="model-", dir=self._exports))
        name = DOWNLOAD_NAMES[fmt]
        folder = session.export_dir / name
        if fmt == "sentence-lab":
            model.save(folder)
        else:
            export(model, folder, fmt)
        archive = shutil.make_archive(str(folder), "zip", root_dir=session.export_dir, base_dir=name)
        shutil.rmtree(folder, ignore_errors=True)
        session.downloads[fmt] = Path(archive)
        return Path(archive)

    def prepare_download(self, choice: str, session: Session) -> tuple[Any, str]:
        """Point the download button at the visitor's model in the chosen format; say what it holds."""
        if session.model is None or session.running:
            return gr.DownloadButton(value=None, interactive=False), NO_DOWNLOAD
        if choice not in DOWNLOAD_FORMATS:
            raise _bad_input(f"Unknown download format {choice!r}. Choose one of: {', '.join(DOWNLOAD_FORMATS)}")
        with _shown_in_page():
            archive = self._export(session.model, session, DOWNLOAD_FORMATS[choice])
        size = archive.stat().st_size / 1e6
        return (gr.DownloadButton(value=str(archive), interactive=True),
                f"Ready: **{archive.name}** ({size:.1f} MB), {DOWNLOAD_HELP[choice]}")

    def stop(self, session: Session) -> str:
        """Ask this visitor's run to end at its next step; the model keeps what it learned so far."""
        if not session.running:
            return "No run is going. Press **Start** to train."
        session.stop.set()
        return "**Stopping** at the next step…"


# -- the page ----------------------------------------------------------------------------------------------

GUIDE = """
## What is an embedding?

A computer cannot compare meanings directly, so we turn each sentence into a list of numbers,
its **embedding** (here 384 numbers). The model that does this, the **encoder**, was trained on
millions of sentence pairs so that sentences that *mean* similar things get similar numbers,
even when they share no words: *“A cat is sleeping on the sofa”* lands next to *“The kitten
naps on the couch”*. Think of every sentence as a point on a huge map; nearby points are close
in meaning. The **Embed & compare** tab draws that map squashed to two dimensions.

## Pooling: from many word vectors to one sentence vector

The encoder first gives one vector per *token* (a word or a piece of a word). **Pooling** folds
them into one vector for the whole sentence:

- **mean**: the average of all tokens. What this model was trained with, and usually the best.
- **cls**: only the special first token. Good for models trained that way; weaker here.
- **max**: for each number, the largest value over the tokens: picks up strong single words.
- **mean_sqrt_len**: the sum divided by the square root of the length; long sentences weigh more.
- **weighted_mean**: later tokens count more than earlier ones.
- **last_token**: only the final token; meant for left-to-right (GPT-style) models.

## Normalisation

With **normalisation on**, every sentence vector is scaled to length 1, so only its direction
counts. The similarity score is then the **cosine similarity**: 1 for the same meaning, around
0 for unrelated sentences. With it **off**, the score is a plain dot product that also grows
with the vectors' lengths, so the numbers have no fixed scale. Turn it on when you compare.

## Topic and sentiment

On top of the shared encoder sit two small **heads**: a *topic* head that gives a probability
for each topic (they add up to 100%), and a *sentiment* head that gives one score from −1 (very
negative) through 0 (neutral) to +1 (very positive). The shipped model learned topics from AG
News headlines (World, Sports, Business, Sci/Tech) and sentiment from movie reviews (SST).

## Training: what to freeze, and when

Training nudges numbers (*parameters*) so that the model's answers match your examples. You
choose which parts may change:

| Preset | What learns | Pick it when |
|---|---|---|
| **Encoder frozen** | only the two heads | you start out, you have little data (tens to thousands of rows), or you want results in seconds. Each sentence is embedded once, so epochs are very fast. |
| **Nothing frozen** | everything | you have plenty of data (thousands of rows) and time, and your sentences differ from ordinary English (jargon, other domains). Slow on a CPU, and with little data it can forget what the encoder knew. |
| **Everything frozen** | nothing | you want a baseline: how good is the model before any training? |
| **Topic head frozen** | encoder + sentiment head | the topics already work and you only want to teach sentiment, without disturbing them. |
| **Sentiment head frozen** | encoder + topic head | the sentiment already works and you only want to teach new topics. |

Two refinements for runs that train the encoder:

- **Gradual unfreezing** starts with the encoder frozen and opens one more layer from the top
  each epoch. The top layers are the most task-specific, so they adapt first, and the general
  knowledge in the lower layers is disturbed less. Good for small data sets.
- **Layer-wise learning-rate decay** (e.g. 0.8) gives each lower layer a smaller step than
  the layer above it: lower layers hold general language knowledge, so they should move less.
  1.0 switches it off.

**Settings in plain words.** An *epoch* is one pass over your data. The *learning rate* is the
size of each correction: too small and nothing seems to happen, too large and the loss jumps
around (0.01–0.05 suits the heads; the encoder always gets a much smaller 0.00002). The *batch
size* is how many rows are looked at per correction. *Task weights* say how much each task
counts when both are learned together. The **loss** curve should go down; if the *validation*
curve (rows held out, never trained on) goes up while the *training* curve keeps falling, the
model is memorising instead of learning.

## Your own data

Upload a CSV with a header row: a `text` column, and a `label` column (the topic's name) and/or
a `sentiment` column (a number). Each row needs at least one of the two. For example:

```
text,label,sentiment
"The match ended in a draw.",Sports,0.1
"Profits soared this quarter.",Business,0.8
```

What you train stays in your browser session: other visitors keep seeing the shipped model, and
your model is gone when you close the page, so download it if you want to keep it.
"""

CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
#header h1 { margin-bottom: 0.1em; }
#header p { color: var(--body-text-color-subdued); margin-top: 0; }
#train-status, #pairs, #embed-info, #model-note { min-height: 2.6em; }
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate")


def load_shared() -> tuple[SentenceEncoder, MultiTaskModel | None]:
    """The base encoder (mean pooling, normalised) and the shipped model, each loaded once."""
    encoder = SentenceEncoder.from_pretrained(pooling="mean", normalize=True)
    if (DEFAULT_HEADS_DIR / "config.json").is_file():
        default_model = MultiTaskModel.load(DEFAULT_HEADS_DIR)
    else:
        logger.warning("%s is missing: Classify works only after a visitor trains a model", DEFAULT_HEADS_DIR)
        default_model = None
    return encoder, default_model


def build_app(encoder: SentenceEncoder | None = None, default_model: MultiTaskModel | None = None,
              limits: Limits | None = None) -> gr.Blocks:
    """The Sentence Lab page. Loads the encoder and the shipped model unless they are given."""
    if encoder is None:
        encoder, default_model = load_shared()
    lab = SentenceLab(encoder, default_model, limits or Limits.from_env())
    lim = lab.limits
    private = dict(api_visibility="private")

    with gr.Blocks(title="Sentence Lab", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        # Deep-copied for each visitor; Session.close runs when the session expires.
        session = gr.State(Session(), time_to_live=4 * 3600, delete_callback=Session.close)
        gr.Markdown("# Sentence Lab\nTurn sentences into vectors, see which ones mean the same thing, read their "
                    "topic and mood, and train your own model while the curves draw live. "
                    "New here? Start with the **Guide** tab.", elem_id="header")

        with gr.Tab("Embed & compare", id="embed"):
            with gr.Row():
                with gr.Column(scale=3):
                    embed_text = gr.Textbox(EXAMPLE_SENTENCES, lines=7, max_lines=20, label="Sentences, one per line",
                                            elem_id="embed-text")
                with gr.Column(scale=2):
                    pooling = gr.Radio([(f"{m}: {POOLING_HELP.get(m, '')}", m) for m in POOLING_MODES], value="mean",
                                       label="Pooling: how word vectors become one sentence vector", elem_id="pooling")
                    normalize = gr.Checkbox(True, label="Normalise (length 1: scores become cosine similarity)",
                                            elem_id="normalize")
                    compare_btn = gr.Button("Compare sentences", variant="primary", elem_id="compare-btn")
            pairs_md = gr.Markdown(label="Most and least similar", elem_id="pairs")
            with gr.Row():
                heatmap = gr.Plot(label="Similarity heat-map", elem_id="heatmap")
                sentence_map = gr.Plot(label="Map of the sentences", elem_id="sentence-map")
            embed_info = gr.Markdown(label="Embedding size and truncation", elem_id="embed-info")
            with gr.Accordion("All pairs, ranked", open=False):
                pairs_table = gr.Dataframe(pd.DataFrame(columns=PAIR_COLUMNS), label="Pairs", interactive=False,
                                           wrap=True)
            with gr.Accordion("The vectors (JSON)", open=False):
                vectors_json = gr.JSON(label="Embeddings")

        with gr.Tab("Classify + sentiment", id="classify"):
            with gr.Row(equal_height=True):
                model_note = gr.Markdown(_model_note(Session(), default_model), label="Model in use",
                                         elem_id="model-note")
                default_btn = gr.Button("Use the shipped model", size="sm", variant="secondary", scale=0,
                                        elem_id="default-btn")
            classify_text = gr.Textbox(EXAMPLE_CLASSIFY, lines=5, max_lines=20, label="Sentences, one per line",
                                       elem_id="classify-text")
            classify_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
            classify_table = gr.Dataframe(pd.DataFrame(columns=CLASSIFY_COLUMNS), label="At a glance",
                                          interactive=False, wrap=True, elem_id="classify-table")
            classify_plot = gr.Plot(label="Topic probabilities and sentiment", elem_id="classify-plot")
            with gr.Accordion("Raw predictions (JSON)", open=False):
                classify_json = gr.JSON(label="Predictions")

        with gr.Tab("Train", id="train"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### 1 · Data")
                    source = gr.Radio(SOURCE_CHOICES, value="synthetic", label="Learn from", elem_id="source")
                    size = gr.Slider(20, lim.max_rows, value=min(300, lim.max_rows), step=10, label="Rows to generate",
                                     elem_id="size")
                    csv_file = gr.File(label="CSV: text, and label and/or sentiment", file_types=[".csv"],
                                       type="filepath", visible=False, elem_id="csv-file")
                    seed = gr.Number(0, precision=0, label="Seed (same seed, same data split and same run)",
                                     elem_id="seed")
                    data_md = gr.Markdown(elem_id="data-note")
                with gr.Column():
                    gr.Markdown("### 2 · What learns")
                    # Only names from the host's allow-list: a visitor can never point the server at a path.
                    base_model = gr.Dropdown(list(lab.models), value=lab.models[0], label="Base encoder",
                                             allow_custom_value=False, visible=len(lab.models) > 1,
                                             elem_id="base-model")
                    preset = gr.Radio([(label, key) for key, label in PRESET_LABELS.items()], value="encoder",
                                      label="Freezing", elem_id="preset")
                    gr.Markdown("\n".join(f"- **{PRESET_LABELS[k].split(':')[0]}**: {PRESET_HELP[k]}"
                                          for k in PRESET_LABELS), elem_id="preset-help")
                    gradual = gr.Checkbox(False, label="Gradual unfreezing: open one more encoder layer each epoch",
                                          elem_id="gradual")
                    lr_decay = gr.Slider(0.5, 1.0, value=1.0, step=0.05, label="Layer-wise LR decay (1.0 = off)",
                                         elem_id="lr-decay")
                    params_md = gr.Markdown(elem_id="param-count")
                with gr.Column():
                    gr.Markdown("### 3 · How long, how fast")
                    epochs = gr.Slider(1, lim.max_epochs, value=min(12, lim.max_epochs), step=1,
                                       label="Epochs (passes over the data)", elem_id="epochs")
                    learning_rate = gr.Number(0.02, label="Learning rate (heads; the encoder gets 0.00002)",
                                              elem_id="lr")
                    batch_size = gr.Slider(4, 128, value=16, step=4, label="Batch size (rows per step)",
                                           elem_id="batch-size")
                    topic_weight = gr.Slider(0, 3, value=1.0, step=0.1, label="Topic task weight",
                                             elem_id="topic-weight")
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
            train_status = gr.Markdown("Choose your settings, then press **Start**.", label="Status",
                                       elem_id="train-status")
            loss_plot = gr.Plot(plots.loss_curves({}), label="Loss curves", elem_id="loss-plot")
            metrics_table = gr.Dataframe(pd.DataFrame(columns=["Epoch"]), interactive=False, elem_id="metrics-table",
                                         label="Per epoch: losses on training and held-out (Val) rows; topic accuracy "
                                               "and macro-F1, sentiment MAE and Pearson on the held-out rows")

        with gr.Tab("Guide", id="guide"):
            gr.Markdown(GUIDE, elem_id="guide")

        # -- wiring: five public endpoints, everything else private --
        # Embed runs after Compare succeeds: one click, one message for a bad input. Progress (and an error)
        # shows on the text beside the plots, so a bad input never blanks a figure already drawn.
        embed_inputs = [embed_text, pooling, normalize]
        compared = gr.on([compare_btn.click, pooling.change, normalize.change, demo.load], lab.compare, embed_inputs,
                         [heatmap, pairs_md, pairs_table], api_name="compare", show_progress_on=[pairs_md])
        compared.success(lab.embed, embed_inputs, [sentence_map, embed_info, vectors_json], api_name="embed",
                         show_progress_on=[embed_info])

        gr.on([classify_btn.click, classify_text.submit], lab.classify, [classify_text, session],
              [classify_plot, classify_table, classify_json], api_name="classify", show_progress_on=[classify_table])
        default_btn.click(lab.use_default_model, session, [model_note, model_file, download_note, session], **private)

        setup_inputs = [source, size, seed, csv_file, preset, gradual, epochs, base_model]
        gr.on([source.change, size.release, seed.change, csv_file.change, preset.change, gradual.change,
               epochs.release, base_model.change, demo.load], lab.describe_setup, setup_inputs, [data_md, params_md],
              **private)
        source.change(lambda s: (gr.update(visible=s == "synthetic"), gr.update(visible=s == "csv")), source,
                      [size, csv_file], **private)

        # A second click while a run streams is ignored by the page (trigger_mode "once"); the API gets an error.
        train_inputs = [source, size, seed, csv_file, preset, gradual, lr_decay, epochs, learning_rate, batch_size,
                        topic_weight, sentiment_weight, base_model, session]
        train_outputs = [loss_plot, metrics_table, train_status, model_file, model_note, session]
        trained = start_btn.click(lab.train, train_inputs, train_outputs, api_name="train",
                                  concurrency_limit=lim.max_runs, concurrency_id="train",
                                  show_progress_on=[train_status])
        trained.success(lab.prepare_download, [download_format, session], [model_file, download_note], **private)
        download_format.change(lab.prepare_download, [download_format, session], [model_file, download_note],
                               show_progress_on=[download_note], **private)
        # Stop's reply is for API callers; the page sees the run's own status turn to "Stopped" at the next
        # step (a visible reply could arrive after that final status and overwrite it).
        stop_btn.click(lab.stop, session, stop_reply, api_name="stop", concurrency_limit=None, show_progress="hidden")

    # Embed, compare and classify each answer one request at a time (2 vCPUs), beside at most max_runs
    # training runs; a full queue tells the next visitor so instead of growing without bound.
    demo.queue(default_concurrency_limit=1, max_size=lim.max_queue)
    return demo


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (docker stop) closes the server like Ctrl+C: downloads get cleaned up


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    limits = Limits.from_env()
    demo = build_app(limits=limits)
    logger.info("models loaded in %.1f s", time.perf_counter() - started)
    # Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them itself). Gradio
    # refuses bigger uploads itself (HTTP 413), before a handler sees them.
    demo.launch(theme=THEME, css=CSS, show_error=True, footer_links=["api"], max_file_size=limits.max_upload_bytes)


if __name__ == "__main__":
    main()

"""What the server holds: the host's limits, the resources every visitor shares, and each visitor's session.

The base encoder and the shipped model are loaded once and only read. Everything a visitor
trains lives in that visitor's ``Session`` (a ``gr.State``), so one visitor's run never
changes what another sees.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import gc
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from torch import Tensor

from core import MultiTaskDataset, MultiTaskModel, SentenceEncoder, folders
from core.config import DEFAULT_HEADS_DIR, NORMALIZE_FOR_TRAINING, HeadsConfig
from core.datasets import load_builtin
from core.encoder import host_encoders
from core.errors import ConfigError

from .fairness import Visitors

logger = logging.getLogger("sentence_lab.app")


# -- the host's limits ----------------------------------------------------------------------------------


def _env_number(name: str, default: float, cast: type = int) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole ' if cast is int else ''}number") from None
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {raw!r}")
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
    max_score_rows: int = 5000  # SENTENCE_LAB_MAX_SCORE_ROWS: rows of a CSV scored in Classify (~70 a second here)
    max_queue: int = 64  # SENTENCE_LAB_MAX_QUEUE: requests waiting, all visitors; then "the queue is full"
    # SENTENCE_LAB_MAX_TRAINED_ENCODERS: encoders trained by visitors that the server keeps, all sessions
    # together (each ~135 MB: fp32 weights and their bf16 copy); past it the least recently used is let go.
    max_trained_encoders: int = 4
    idle_minutes: float = 30.0  # SENTENCE_LAB_IDLE_MINUTES: a session's trained encoder is let go after this
    # Per visitor (address), so that one cannot crowd out the others (ui.fairness):
    requests_per_minute: int = 60  # SENTENCE_LAB_REQUESTS_PER_MINUTE: embed, compare, classify, train together
    max_waiting: int = 4  # SENTENCE_LAB_MAX_WAITING: requests of one visitor in the queue at once
    uploads_per_minute: int = 10  # SENTENCE_LAB_UPLOADS_PER_MINUTE: CSV files sent
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
                   max_score_rows=_env_number("SENTENCE_LAB_MAX_SCORE_ROWS", cls.max_score_rows),
                   max_queue=_env_number("SENTENCE_LAB_MAX_QUEUE", cls.max_queue),
                   max_trained_encoders=_env_number("SENTENCE_LAB_MAX_TRAINED_ENCODERS", cls.max_trained_encoders),
                   idle_minutes=_env_number("SENTENCE_LAB_IDLE_MINUTES", cls.idle_minutes, float),
                   requests_per_minute=_env_number("SENTENCE_LAB_REQUESTS_PER_MINUTE", cls.requests_per_minute),
                   max_waiting=_env_number("SENTENCE_LAB_MAX_WAITING", cls.max_waiting),
                   uploads_per_minute=_env_number("SENTENCE_LAB_UPLOADS_PER_MINUTE", cls.uploads_per_minute),
                   models=host_encoders())

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


# -- what every visitor shares ----------------------------------------------------------------------------


def load_shared_models() -> tuple[SentenceEncoder, MultiTaskModel | None]:
    """The base encoder (mean pooling, normalised) and the shipped model, each loaded once."""
    encoder = SentenceEncoder.from_pretrained(pooling="mean", normalize=NORMALIZE_FOR_TRAINING)
    if (DEFAULT_HEADS_DIR / "config.json").is_file():
        default_model = MultiTaskModel.load(DEFAULT_HEADS_DIR, base=encoder)  # one backbone for both
    else:
        logger.warning("%s is missing: Classify works only after a visitor trains a model", DEFAULT_HEADS_DIR)
        default_model = None
    return encoder, default_model


class Shared:
    """The server's read-only resources, shared by every visitor and every tab.

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
        self.tokenizer_lock = threading.Lock()
        # The base encoders a visitor may train on: this one first, then the host's SENTENCE_LAB_MODELS.
        self.models = tuple(dict.fromkeys((encoder.config.model_name, *limits.models)))
        self._encoders: dict[str, SentenceEncoder] = {}  # the others, loaded on first use and shared
        self._models_lock = threading.Lock()
        # Every visitor's model download lives under one folder, removed when the server exits.
        self.exports = Path(tempfile.mkdtemp(prefix="sentence-lab-"))
        weakref.finalize(self, shutil.rmtree, self.exports, ignore_errors=True)
        self.holders = Holders(limits.max_trained_encoders, limits.idle_minutes * 60)
        self.visitors = Visitors(limits.requests_per_minute, limits.max_waiting)

    def seen(self, session: Session, request: gr.Request | None) -> Session:
        """Note which Gradio session ``session`` is (so that it can be found when its visitor leaves) and tell
        the visitor, once, what the server let go of since their last request."""
        session.key = getattr(request, "session_hash", None) or session.key
        if session.notice:
            gr.Warning(session.take_notice(), duration=None)
        return session

    def used(self, session: Session) -> None:
        """``session`` just used or changed its models: the most recent for the host-wide bound."""
        self.holders.touch(session.key, session)

    def visitor_left(self, request: gr.Request) -> None:
        """Gradio's ``unload``: the visitor closed the page, so their trained encoders go now, not in hours."""
        self.holders.leave(getattr(request, "session_hash", None))

    def base_encoder(self, name: str | None) -> SentenceEncoder:
        """A base encoder from the allow-list (the default, plus SENTENCE_LAB_MODELS), loaded once and shared."""
        name = name or self.encoder.config.model_name
        if name == self.encoder.config.model_name:
            return self.encoder
        if name not in self.models:
            raise ConfigError(f"Unknown base encoder {name!r}. This server offers: {', '.join(self.models)} "
                              "(a host adds more with SENTENCE_LAB_MODELS).")
        with self._models_lock:
            if name not in self._encoders:
                logger.info("loading base encoder %s", name)
                self._encoders[name] = SentenceEncoder.from_pretrained(name, pooling="mean",
                                                                       normalize=NORMALIZE_FOR_TRAINING)
            return self._encoders[name]

    def encoder_for_run(self, base: SentenceEncoder, *, changes_weights: bool) -> SentenceEncoder:
        """An encoder of the run's own: a copy when the run trains encoder weights, else shared weights."""
        with self.tokenizer_lock:
            return base.copy(share_weights=not changes_weights)

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def builtin(name: str) -> MultiTaskDataset:
        """A real built-in set ("bbc_news", "reviews"), read once per process and never modified."""
        return load_builtin(name)


class Holders:
    """The sessions that hold encoder weights of their own, least recently used first: the host-wide bound.

    A run that trained the encoder keeps 90 MB of weights (135 MB once it has answered in bf16);
    heads-only runs share the base encoder and cost a few KB. Past ``cap`` such encoders on the whole
    server, the least recently used session lets its go; so does one idle for ``idle_seconds``, and
    one whose visitor closed the page. The session then says so to its visitor (Session.notice).
    """

    def __init__(self, cap: int, idle_seconds: float) -> None:
        self.cap, self.idle_seconds = cap, idle_seconds
        self._sessions: OrderedDict[str, tuple[weakref.ref[Session], float]] = OrderedDict()  # hash -> (session, last use)
        self._lock = threading.Lock()

    def touch(self, key: str | None, session: Session) -> None:
        """``session`` (Gradio's session hash ``key``) was just used: it becomes the most recent, and the
        others let their encoders go past the cap or their idle time. The session used is never the one let go."""
        if not key:
            return
        now, dropped = time.monotonic(), []
        with self._lock:
            self._sessions[key] = (weakref.ref(session), now)
            self._sessions.move_to_end(key)
            held = 0
            for other in reversed(list(self._sessions)):  # the most recent first
                ref, last = self._sessions[other]
                visitor = ref()
                count = visitor.own_encoders() if visitor is not None else 0
                if count == 0:
                    del self._sessions[other]
                elif other != key and not visitor.running and (held + count > self.cap or now - last > self.idle_seconds):
                    idle = now - last > self.idle_seconds
                    dropped.append((visitor, f"after {self.idle_seconds / 60:g} minutes without use" if idle else
                                    f"to make room for other visitors (this server keeps {self.cap} trained encoders "
                                    "at a time; the least recently used goes first)"))
                    del self._sessions[other]
                else:
                    held += count
        for visitor, why in dropped:
            visitor.let_go(why)
        if dropped:
            release_memory()
            logger.info("let go of %d session(s)' trained encoders (cap %d, idle %g min)", len(dropped), self.cap,
                        self.idle_seconds / 60)

    def leave(self, key: str | None) -> None:
        """The visitor of session ``key`` left: their trained encoders go (their heads-only runs stay)."""
        with self._lock:
            ref, _ = self._sessions.pop(key, (None, 0.0)) if key else (None, 0.0)
        visitor = ref() if ref is not None else None
        if visitor is not None and not visitor.running:
            count = visitor.own_encoders()
            visitor.let_go("when you left the page")
            release_memory()
            logger.info("a visitor left: let go of %d trained encoder(s)", count)

    def held(self) -> int:
        """Encoders of their own that the sessions known here hold now."""
        with self._lock:
            return sum(s.own_encoders() for s in (ref() for ref, _ in self._sessions.values()) if s is not None)


def release_memory() -> None:
    """Hand freed weights back to the system now: glibc keeps freed blocks for reuse unless trimmed."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    _LIBC.malloc_trim  # glibc only (not musl)
except (OSError, AttributeError):
    _LIBC = None


# -- one visitor ------------------------------------------------------------------------------------------

MAX_RUNS = 20  # runs a session remembers; the oldest is forgotten first
SHIPPED_CHOICE = "The shipped model (English news topics, movie-review sentiment)"
MAX_PINNED = 1  # encoder runs a session may pin (90 MB each), beside the one in use


@dataclass
class Run:
    """One of a visitor's runs: what it was, what it reached on held-out rows, and how to use it again.

    A heads-only run keeps its heads (a few KB) and is rebuilt on the shared encoder when used
    again; a run that changed the encoder keeps those weights (90 MB) only while it is in use or
    pinned, so a session never holds more than two encoders of its own.
    """

    number: int
    data: str
    strategy: str
    epochs: int
    seconds: float
    metrics: dict[str, float]
    curve: list[tuple[float, float]]  # (epoch, held-out loss)
    base: str  # the base encoder's name
    heads_config: HeadsConfig
    heads: dict[str, Tensor] | None = None  # heads-only runs: their tensors, on the CPU
    model: MultiTaskModel | None = field(default=None, repr=False)  # encoder runs, while in use or pinned
    pinned: bool = False  # an encoder run whose weights stay when another model comes into use
    confidence: Any = None  # heads-only runs: the topic head's unsure rule (core.confidence), restored with the heads

    @property
    def name(self) -> str:
        return f"#{self.number} {self.strategy}"

    @property
    def title(self) -> str:
        """How the run lists read it: number, strategy, data."""
        return f"#{self.number} · {self.strategy} · {self.data}"


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
        self.runs: list[Run] = []  # this visitor's runs, oldest first (at most MAX_RUNS)
        self.active_run: int | None = None  # the number of the run in use; None: the shipped model
        self.notice = ""  # what the server let go of, told to the visitor at their next request (take_notice)
        self.key: str | None = None  # Gradio's session hash, once a request has shown it (Holders, unload)
        self.scored_dir: Path | None = None  # the last CSV the visitor scored in Classify, until the next one

    def __deepcopy__(self, memo: dict[int, Any]) -> Session:
        new = Session()
        new.model, new.about = copy.deepcopy(self.model, memo), self.about
        return new

    def set_model(self, model: MultiTaskModel | None, about: str = "") -> None:
        """Make ``model`` this visitor's model (None: back to the shipped one); drops the old download."""
        if self.export_dir is not None:
            shutil.rmtree(self.export_dir, ignore_errors=True)
        self.model, self.about, self.export_dir, self.downloads = model, about, None, {}

    def add_run(self, run: Run, model: MultiTaskModel, about: str) -> None:
        """Keep ``run`` (forgetting the oldest past MAX_RUNS) and make its model the one in use."""
        if run.heads is None:
            run.model = model
        self.runs = (self.runs + [run])[-MAX_RUNS:]
        self.set_model(model, about)
        self._activate(run.number)

    def add_upload(self, model: MultiTaskModel, name: str) -> Run:
        """A model the visitor uploaded becomes one of their runs (kept like one) and the model in use."""
        own = not model.encoder_is_pretrained()
        run = Run(number=self.runs[-1].number + 1 if self.runs else 1, data=name, strategy="uploaded", epochs=0,
                  seconds=0.0, metrics={}, curve=[], base=model.encoder.config.model_name,
                  heads_config=model.heads_config, heads=None if own else folders.flatten(model.head_parts()),
                  confidence=None if own else model.confidence)
        self.add_run(run, model, f"uploaded as {name}")
        return run

    def use_run(self, number: int, shared: Shared) -> Run:
        """Make run ``number`` the model in use again (ConfigError when it cannot be any more)."""
        run = self._run(number)
        if run.model is None and run.heads is None:
            raise ConfigError(f"Run #{number} trained the encoder, and its weights were let go when another model "
                              "came into use (a session keeps only the one in use and a pinned one) or the server "
                              "needed the memory. Run it again to get it back, and pin it to keep it.")
        model = run.model
        if model is None:  # heads on the shared encoder: rebuilt in a moment
            encoder = shared.encoder_for_run(shared.base_encoder(run.base), changes_weights=False)
            model = MultiTaskModel(encoder, run.heads_config).eval()
            folders.load_parts(Path(f"run #{number}"), run.heads, model.head_parts(), "its settings")
            if run.confidence is not None:
                model.confidence = run.confidence
        self.set_model(model, f"run #{number}: {run.strategy} on {run.data}")
        self._activate(number)
        return run

    def pin(self, number: int) -> str:
        """Keep run ``number``'s encoder weights when another model comes into use (at most MAX_PINNED
        runs: pinning one more unpins the oldest pin); pinning it again unpins it. Says what happened."""
        run = self._run(number)
        if run.heads is not None:
            return f"Run #{number} trained only the heads: it is always kept, no pin needed."
        if run.model is None:
            raise ConfigError(f"Run #{number}'s encoder weights were already let go; run it again, then pin it.")
        run.pinned = not run.pinned
        others = [r for r in self.runs if r.pinned and r is not run] if run.pinned else []
        for old in others[:max(0, len(others) - (MAX_PINNED - 1))]:  # the oldest pins give way
            old.pinned = False
        self._activate(self.active_run)  # lets go of an unpinned run's weights unless it is in use
        return (f"Run #{number} is pinned: its weights stay when you use another run (one pinned run at a time)."
                if run.pinned else f"Run #{number} is unpinned.")

    def _run(self, number: int) -> Run:
        run = next((r for r in self.runs if r.number == number), None)
        if run is None:
            raise ConfigError(f"There is no run #{number} in this session (it keeps the last {MAX_RUNS}).")
        return run

    def _activate(self, number: int | None) -> None:
        """Mark the run in use; the other runs that changed the encoder let their weights go unless pinned."""
        self.active_run = number
        for run in self.runs:
            if run.number != number and run.heads is None and not run.pinned:
                run.model = None

    def own_encoders(self) -> int:
        """Encoders with weights of their own that this session holds (the run in use and a pinned one)."""
        return len({id(r.model) for r in self.runs if r.heads is None and r.model is not None})

    def let_go(self, why: str) -> None:
        """Drop the encoder weights this session's runs trained (the server needs the memory), and say so."""
        held = [r for r in self.runs if r.heads is None and r.model is not None]
        if not held:
            return
        for run in held:
            run.model, run.pinned = None, False
        if self.active_run in {r.number for r in held}:
            self.use_shipped()
        names = ", ".join(f"#{r.number}" for r in held)
        self.notice = (f"The encoder weights your run {names} trained were let go {why}; the shipped model is in use "
                       "unless you choose another run. Runs that trained only the heads are kept. Run it again to "
                       "get it back.")

    def take_notice(self) -> str:
        """The pending notice, once."""
        notice, self.notice = self.notice, ""
        return notice

    def model_in_use(self, shared: Shared) -> MultiTaskModel | None:
        return self.model if self.model is not None else shared.default_model

    def use_shipped(self) -> None:
        """Back to the shipped model: no run is in use. The run that was keeps its weights, so choosing it
        again gives its answers again; they go only when another run comes into use (or the server needs them)."""
        self.set_model(None)
        self.active_run = None

    def choices(self) -> list[tuple[str, str]]:
        """The models this visitor can choose, as (words, value): the shipped one, then their runs, newest first."""
        runs = [(r.title + ("" if r.heads is not None or r.model is not None else " (weights let go)"),
                 f"run:{r.number}")
                for r in reversed(self.runs)]
        return [(SHIPPED_CHOICE, "shipped"), *runs]

    def chosen(self) -> str:
        """The value of the model in use among ``choices``."""
        return f"run:{self.active_run}" if self.active_run is not None else "shipped"

    def scored_file(self, name: str) -> Path:
        """A fresh place for a scored CSV; the previous one goes."""
        if self.scored_dir is not None:
            shutil.rmtree(self.scored_dir, ignore_errors=True)
        self.scored_dir = Path(tempfile.mkdtemp(prefix="sentence-lab-scored-"))
        return self.scored_dir / name

    def close(self) -> None:
        """Gradio calls this when the visitor's session expires: stop their run, drop their models."""
        if self.scored_dir is not None:
            shutil.rmtree(self.scored_dir, ignore_errors=True)
        self.stop.set()
        self.use_shipped()
        self.runs = []


def model_note(session: Session, default_model: MultiTaskModel | None) -> str:
    """Which model the Classify tab answers with, in words (the Train tab updates it after a run)."""
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
        who = ("**the shipped model** (topics learnt from AG News, English news headlines; sentiment from SST, "
               "English movie-review sentences)")
    return f"Model in use: {who}.<br>Topics: {topics} · {mood}."

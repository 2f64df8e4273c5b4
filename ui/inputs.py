"""Page values -> checked core values, and core errors -> messages in the page.

Each form is one dataclass (``TrainForm``): a handler receives the page's values by name and
turns them into core settings here, within the host's limits. A bad value becomes a
``gr.Error`` that names the field as the page labels it; a ``SentenceLabError`` from ``core``
is shown as it is; anything else is a bug, logged with its traceback and shown as a short
"something went wrong" message.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from core import MultiTaskDataset, TrainingConfig, read_csv
from core.config import RECIPES
from core.data import check_learnable
from core.datasets import load_builtin
from core.errors import SentenceLabError
from core.text import is_blank, text_problem

from .state import Limits, Shared

logger = logging.getLogger("sentence_lab.app")

# How TrainingConfig's field names read in the page.
FIELD_NAMES = {"learning_rate": "Learning rate", "batch_size": "Batch size", "epochs": "Epochs",
               "classification_weight": "Topic weight", "sentiment_weight": "Sentiment weight",
               "layer_lr_decay": "Layer-wise LR decay", "gradual_unfreeze": "Gradual unfreezing", "seed": "Seed"}


def bad_input(message: str, title: str = "Please check the input") -> gr.Error:
    """A message for the page (a toast) and for API callers (AppError); not a server-side traceback."""
    return gr.Error(message, title=title, print_exception=False)


@contextlib.contextmanager
def shown_in_page() -> Iterator[None]:
    """Any failure becomes a message in the page (a toast; AppError for API callers), never a dead tab.

    The user's mistakes (``SentenceLabError``) are shown as they are, with the page's names for
    the settings; anything else is logged with its traceback and shown as a server-side failure.
    """
    try:
        yield
    except gr.Error:
        raise
    except SentenceLabError as exc:
        message = str(exc)
        for name, label in FIELD_NAMES.items():
            message = message.replace(name, label)
        raise bad_input(message) from None
    except Exception as exc:  # noqa: BLE001 -- reported to the visitor and logged, not swallowed
        logger.exception("handler failed")
        raise gr.Error(f"The server could not finish this ({type(exc).__name__}: {exc}). Nothing you had was "
                       "changed; please try again.", title="Something went wrong", print_exception=False) from None


# -- numbers and sentences ------------------------------------------------------------------------------


def number(name: str, value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise bad_input(f"{name} is empty: type a number.")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise bad_input(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(result):
        raise bad_input(f"{name} must be a finite number, got {value!r}.")
    return result


def whole(name: str, value: Any) -> int:
    result = number(name, value)
    if result != int(result):
        raise bad_input(f"{name} must be a whole number, got {value}.")
    return int(result)


@dataclass
class Sentences:
    """The lines a visitor typed, ready to embed: ``cut`` lists those shortened to the character limit."""

    lines: list[str]
    cut: list[int]


def sentences(text: str | None, limits: Limits) -> Sentences:
    """One sentence per non-blank line, within the server's limits; a line that is not text is named."""
    text = str(text or "")
    most = limits.max_sentences * (limits.max_chars + 1)  # checked before any splitting: a body may be huge
    if len(text) > most:
        raise bad_input(f"The text is {len(text):,} characters; this server reads at most {most:,} per request "
                        f"({limits.max_sentences} sentences of up to {limits.max_chars:,} characters).",
                        title="Too long")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if not is_blank(line)]  # empty, or only invisible characters: not a sentence
    if not lines:
        raise bad_input("Type at least one sentence (one per line).", title="Nothing to read")
    if len(lines) > limits.max_sentences:
        raise bad_input(f"At most {limits.max_sentences} sentences at a time here; you gave {len(lines)}.",
                        title="Too many")
    for n, line in enumerate(lines, 1):
        if text_problem(line):
            raise bad_input(f"Sentence {n} {text_problem(line)}.")
    cut = [i for i, line in enumerate(lines) if len(line) > limits.max_chars]
    return Sentences([line[:limits.max_chars] for line in lines], cut)


# -- the Train form -------------------------------------------------------------------------------------


REAL_BUILTINS = {"bbc_news": "BBC News articles", "reviews": "review sentences"}  # source -> how a status names it


@dataclass
class TrainForm:
    """The Train tab's fields as the page sends them; their order is the ``/train`` API's parameter order."""

    source: str = "synthetic"  # "synthetic", "bbc_news", "reviews" or "csv"
    size: Any = 300  # rows of synthetic data
    seed: Any = 0
    csv_file: str | None = None
    preset: str = "encoder"
    gradual: bool = False
    lr_decay: Any = 1.0  # 1.0: off
    epochs: Any = 12
    learning_rate: Any = 0.02
    batch_size: Any = 16
    topic_weight: Any = 1.0
    sentiment_weight: Any = 1.0
    base_model: str | None = None  # None: the server's default encoder

    def training_config(self, limits: Limits) -> TrainingConfig:
        """The run's settings, validated, within this server's limits."""
        n_epochs, decay = whole("Epochs", self.epochs), number("Layer-wise LR decay", self.lr_decay)
        if n_epochs > limits.max_epochs:
            raise bad_input(f"At most {limits.max_epochs} epochs here (SENTENCE_LAB_MAX_EPOCHS); "
                            f"you asked for {n_epochs}.")
        settings: dict[str, Any] = dict(
            epochs=n_epochs, learning_rate=number("Learning rate", self.learning_rate),
            batch_size=whole("Batch size", self.batch_size), freeze=self.freeze, gradual_unfreeze=bool(self.gradual),
            layer_lr_decay=None if decay >= 1 else decay, classification_weight=number("Topic weight", self.topic_weight),
            sentiment_weight=number("Sentiment weight", self.sentiment_weight), seed=whole("Seed", self.seed),
            precision="auto",  # bf16 where the hardware is fast at it: a step where the encoder learns takes 2/3 the time
        )
        if self.preset in RECIPES:  # the recipe's own settings, but the page's epochs
            settings |= {k: v for k, v in RECIPES[self.preset].items() if k != "epochs"}
        return TrainingConfig(**settings)

    @property
    def freeze(self) -> str:
        """The freezing preset of the chosen option (a recipe names its own)."""
        return RECIPES[self.preset]["freeze"] if self.preset in RECIPES else self.preset

    def data(self, shared: Shared) -> tuple[MultiTaskDataset, str]:
        """The chosen data set, sampled down to the row limit, and a phrase that names it."""
        limits = shared.limits
        limit = limits.max_rows
        if self.source == "synthetic":
            rows = whole("Rows", self.size)
            if rows > limit:
                raise bad_input(f"At most {limit:,} rows here (SENTENCE_LAB_MAX_ROWS); you asked for {rows:,}.")
            data = load_builtin("synthetic", size=rows, seed=whole("Seed", self.seed))
            name = f"{len(data):,} synthetic sentences"
        elif self.source in REAL_BUILTINS:
            data, name = shared.builtin(self.source), REAL_BUILTINS[self.source]
        elif self.source == "csv":
            if not self.csv_file:
                raise bad_input("Upload a CSV file first (columns: text, and label and/or sentiment).", title="No file")
            name, nbytes = Path(self.csv_file).name, Path(self.csv_file).stat().st_size
            if nbytes > limits.max_upload_bytes:
                raise bad_input(f"{name} is {nbytes / 2**20:.1f} MB; this server takes CSV files up to "
                                f"{limits.max_upload_mb:g} MB (SENTENCE_LAB_MAX_UPLOAD_MB).", title="File too big")
            data = read_csv(self.csv_file, name=name)
            check_learnable(data, name)
        else:
            raise bad_input(f"Unknown data source {self.source!r}; choose synthetic, {', '.join(REAL_BUILTINS)} or csv.")
        if len(data) > limit:  # the server's row limit: a seeded sample, and the name says so
            data, name = (data.sample(limit, seed=whole("Seed", self.seed)),
                          f"{limit:,} of {len(data):,} {name} (a sample: this server's limit is {limit:,} rows per run)")
        return data, name

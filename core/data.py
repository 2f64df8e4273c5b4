"""Data: MultiTaskDataset, and CSV loading with errors that name the row and column.

CSV format: a header row; ``text`` required; ``label`` (class name) and ``sentiment`` (number)
optional per row, but each row needs at least one of them.

``MultiTaskDataset`` is a torch Dataset: ``data[i]`` is an ``Example`` and ``collate`` batches
them for a DataLoader, with the masks the loss expects (IGNORE_LABEL, NaN) where a row has no target:

    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=collate)
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import random
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from .config import MAX_SENTIMENT
from .errors import ConfigError, DataError
from .losses import IGNORE_LABEL
from .record import DataSummary
from .text import text_problem

__all__ = ["DataError", "Example", "Batch", "MultiTaskDataset", "collate", "read_csv", "read_csvs", "check_learnable",
           "read_text_file"]

TEXT, LABEL, SENTIMENT = "text", "label", "sentiment"
MAX_ERRORS_SHOWN = DataError.MAX_SHOWN
# Files that are not CSV text although people name them .csv: their first bytes, and what they are.
NOT_CSV = {b"PK\x03\x04": "a zip archive or an Excel .xlsx workbook", b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook",
            b"%PDF": "a PDF document", b"\xff\xfe": "UTF-16 text", b"\xfe\xff": "UTF-16 text"}
# A last line put after the file's own: a cell that takes it in opened a quote that the file never closes.
END_OF_FILE = "\ufffe\uffffend of the file\uffff\ufffe"


@dataclass(frozen=True)
class Example:
    """One row of a MultiTaskDataset, as ``data[i]`` gives it.

    Attributes:
        text: the sentence.
        label: index of its class in the dataset's ``class_names``, or None (no topic for this row).
        sentiment: its sentiment value, or None (no sentiment for this row).
    """

    text: str
    label: int | None
    sentiment: float | None


@dataclass
class Batch:
    """Examples batched by ``collate``: (B,) label indices (IGNORE_LABEL where none), (B,) sentiments (NaN where none)."""

    texts: list[str]
    labels: torch.Tensor
    sentiments: torch.Tensor


def collate(examples: Sequence[Example]) -> Batch:
    """A DataLoader's ``collate_fn`` for MultiTaskDataset: missing targets become the loss's masks."""
    return Batch(texts=[e.text for e in examples],
                 labels=torch.tensor([IGNORE_LABEL if e.label is None else e.label for e in examples], dtype=torch.long),
                 sentiments=torch.tensor([math.nan if e.sentiment is None else e.sentiment for e in examples],
                                         dtype=torch.float32))


@dataclass
class MultiTaskDataset(Dataset):
    """Texts, each with a class label, a sentiment score, or both (None where absent).

    ``rows`` names where each text came from ("train.csv row 7"), for error messages.
    ``data[i]`` is the i-th ``Example`` (its label as an index into ``class_names``).
    """

    texts: list[str]
    labels: list[str | None]
    sentiments: list[float | None]
    rows: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.texts)
        if not (len(self.labels) == len(self.sentiments) == n):
            raise ConfigError(f"texts, labels and sentiments differ in length: {n}, {len(self.labels)}, {len(self.sentiments)}")
        self.rows = self.rows or [f"row {i + 1}" for i in range(n)]
        problems = []
        for i, (text, label, score) in enumerate(zip(self.texts, self.labels, self.sentiments)):
            if text_problem(text):
                problems.append(f"{self.rows[i]}, column 'text': the text {text_problem(text)}")
            if label is None and score is None:
                problems.append(f"{self.rows[i]}: needs a label, a sentiment, or both")
            if score is not None and not math.isfinite(score):
                problems.append(f"{self.rows[i]}, column 'sentiment': {score!r} is not a finite number")
        if problems:
            raise DataError("dataset", problems)
        self._label_index = {name: i for i, name in enumerate(self.class_names)}

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> Example:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"a MultiTaskDataset is indexed by an int, got {type(index).__name__}; use subset() for several rows")
        label = self.labels[index]  # IndexError past the end, as a list
        return Example(self.texts[index], None if label is None else self._label_index[label], self.sentiments[index])

    @property
    def class_names(self) -> list[str]:
        return sorted({label for label in self.labels if label is not None})

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks with at least one target in this dataset."""
        return tuple(t for t, has in (("classification", any(x is not None for x in self.labels)),
                                      ("sentiment", any(x is not None for x in self.sentiments))) if has)

    @property
    def sentiment_range(self) -> tuple[float, float]:
        """The scale of this data's sentiment values: (-1, 1), (0, 1), or the observed span."""
        values = [s for s in self.sentiments if s is not None]
        if not values:
            return (-1.0, 1.0)
        lo, hi = min(values), max(values)
        if lo >= 0 and hi <= 1:
            return (0.0, 1.0)
        if lo >= -1 and hi <= 1:
            return (-1.0, 1.0)
        return (float(math.floor(lo)), float(max(math.ceil(hi), math.floor(lo) + 1)))

    def rescale_sentiment(self, source: tuple[float, float], target: tuple[float, float]) -> MultiTaskDataset:
        """A copy with sentiment values mapped linearly from the ``source`` scale onto ``target``.

        SST's values in [0, 1] become the shipped model's [-1, 1] with ``((0, 1), (-1, 1))``.
        """
        (a, b), (c, d) = source, target
        if not (a < b and c < d):
            raise ConfigError(f"a sentiment scale is (low, high) with low < high; got {source} -> {target}")
        scale = (d - c) / (b - a)
        mapped = [c + (s - a) * scale if s is not None else None for s in self.sentiments]
        return MultiTaskDataset(list(self.texts), list(self.labels), mapped, list(self.rows))

    def label_ids(self, class_names: Sequence[str]) -> torch.Tensor:
        """(N,) class indices into ``class_names``, IGNORE_LABEL where a row has no label."""
        index = {name: i for i, name in enumerate(class_names)}
        unknown = [f"{self.rows[i]}, column 'label': {label!r} is not one of the model's classes ({', '.join(class_names)})"
                   for i, label in enumerate(self.labels) if label is not None and label not in index]
        if unknown:
            raise DataError("dataset", unknown)
        return torch.tensor([index[x] if x is not None else IGNORE_LABEL for x in self.labels], dtype=torch.long)

    def sentiment_targets(self) -> torch.Tensor:
        """(N,) float sentiment values, NaN where a row has none."""
        return torch.tensor([s if s is not None else math.nan for s in self.sentiments], dtype=torch.float32)

    def subset(self, indices: Iterable[int]) -> MultiTaskDataset:
        idx = list(indices)
        return MultiTaskDataset([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                                [self.sentiments[i] for i in idx], [self.rows[i] for i in idx])

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        """A seeded random (train, validation) split."""
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(len(order) * val_fraction))
        if n_val >= len(order):
            raise ConfigError(f"{len(self)} rows are too few to hold out a validation split")
        return self.subset(sorted(order[n_val:])), self.subset(sorted(order[:n_val]))

    def sample(self, n: int, seed: int = 0) -> MultiTaskDataset:
        """A seeded random ``n`` of the rows, in their original order (all of them when there are no more)."""
        if n >= len(self):
            return self
        return self.subset(sorted(random.Random(seed).sample(range(len(self)), n)))

    @staticmethod
    def concat(datasets: Sequence[MultiTaskDataset]) -> MultiTaskDataset:
        return MultiTaskDataset([t for d in datasets for t in d.texts], [x for d in datasets for x in d.labels],
                                [x for d in datasets for x in d.sentiments], [x for d in datasets for x in d.rows])

    def summary(self) -> DataSummary:
        return DataSummary(rows=len(self), labelled=sum(x is not None for x in self.labels),
                           with_sentiment=sum(x is not None for x in self.sentiments), class_names=self.class_names)


# -- CSV ------------------------------------------------------------------------------------


def read_csv(source: str | os.PathLike | io.TextIOBase, *, name: str | None = None,
             max_rows: int | None = None) -> MultiTaskDataset:
    """Load and validate a CSV (see the module docstring). Raises DataError naming each row and column.

    Rows are numbered as a spreadsheet shows them: the header is row 1, a multi-line cell is one row.
    Lines may end in \\n, \\r\\n or an old Mac's \\r. ``max_rows`` refuses a file with more data rows
    than that (a server's limit), before reading on.
    """
    if isinstance(source, (str, os.PathLike)):
        name = name or Path(source).name
        text = read_text_file(source, name, expected="a CSV in UTF-8", save_as="'CSV UTF-8 (comma delimited)'")
    else:
        text = source.read()
        name = name or "csv"
    if not text.strip("\ufeff \t\r\n"):
        raise DataError(name, ["the file is empty; expected a header row with a 'text' column"])
    lines = io.StringIO(text.lstrip("\ufeff"), newline="")  # newline="": the csv module sees every line ending as it is
    reader = csv.reader(itertools.chain(lines, [END_OF_FILE]))
    try:
        return _read_records(reader, name, max_rows)
    except csv.Error as exc:  # e.g. a cell longer than the csv module's field limit (131,072 characters)
        raise DataError(name, [f"row {reader.line_num}: cannot be read as CSV ({exc})"]) from None


def check_regular_file(path: Path, name: str) -> None:
    """Refuse, before any read, what is not a regular file: a folder, a pipe, a socket or a device
    (``/dev/zero`` would be read forever)."""
    if not path.is_file():
        if not path.exists():
            raise DataError(name, ["file not found"])
        mode = path.stat().st_mode
        kind = ("a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise DataError(name, [f"this is {kind}, not a regular file; give the path of a file"])


def not_text(head: bytes) -> str | None:
    """What a file's first bytes say it is when it is not UTF-8 text (a workbook, a PDF, UTF-16), else None."""
    kind = next((what for magic, what in NOT_CSV.items() if head.startswith(magic)), None)
    if kind is None and head.count(0) > len(head) // 4:  # "t\0e\0x\0t\0": UTF-16 saved without a byte-order mark
        kind = "UTF-16 text or binary data (it is full of NUL bytes)"
    return kind


def read_text_file(path: str | os.PathLike, name: str, *, unit: str = "row", expected: str = "UTF-8 text",
                   save_as: str = "UTF-8") -> str:
    """The text of a file in UTF-8 (without a byte-order mark), or a DataError that says why not.

    A folder, a device (``/dev/zero`` would be read forever) or a pipe is refused before reading;
    a workbook, a PDF or UTF-16 text by its bytes; other bytes that are not UTF-8 by the ``unit``
    ("row" or "line") they are on, counting \\n, \\r\\n and \\r as line ends.
    """
    path = Path(path)
    check_regular_file(path, name)
    raw = path.read_bytes()
    kind = not_text(raw[:4096])
    if kind:
        raise DataError(name, [f"this is {kind}, not {expected}: save it as {save_as}"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise DataError(name, [f"{unit} {line}: not UTF-8 text (byte {exc.start} cannot be decoded); "
                               "save the file as UTF-8"]) from None


def shown_header(header: list[str]) -> str:
    """The header as found, cut short: a binary file read as CSV has one enormous 'column'."""
    cells = [h if len(h) <= 40 else h[:40] + "…" for h in header[:12]]
    return repr(cells)[:-1] + (", …]" if len(header) > 12 else "]")


def _read_records(reader: Iterable[list[str]], name: str, max_rows: int | None) -> MultiTaskDataset:
    header = next(iter(reader), None)
    if header in (None, [END_OF_FILE]):
        raise DataError(name, ["the file is empty; expected a header row with a 'text' column"])
    if any(END_OF_FILE in h for h in header):
        raise DataError(name, [unclosed_quote("row 1")])
    if not any(h.strip() for h in header):
        raise DataError(name, ["row 1: the header row has no column names; expected a 'text' column"])
    columns = [h.strip().lower() for h in header]
    duplicated = sorted(c for c, n in Counter(columns).items() if n > 1 and c)  # linear: a header may be wide
    if duplicated:
        raise DataError(name, [f"row 1: column(s) {duplicated} appear more than once"])
    if TEXT not in columns:
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|:"):
            hint = " (the file seems to use another delimiter; use commas)"
        raise DataError(name, [f"row 1: no 'text' column{hint}; found {shown_header(header)}"])
    if LABEL not in columns and SENTIMENT not in columns:
        raise DataError(name, [f"row 1: needs a 'label' or a 'sentiment' column (or both); found {shown_header(header)}"])
    col = {c: columns.index(c) for c in (TEXT, LABEL, SENTIMENT) if c in columns}

    texts, labels, sentiments, rows, problems = [], [], [], [], []
    for number, record in enumerate(reader, start=2):  # counted in records: a quoted cell may span lines
        row = f"row {number}"
        if record == [END_OF_FILE]:
            break
        if any(END_OF_FILE in cell for cell in record):  # the file ended inside this row's quoted cell
            problems.append(unclosed_quote(row))
            break
        if max_rows is not None and len(texts) >= max_rows and any(cell.strip() for cell in record):
            raise DataError(name, [f"more than {max_rows:,} data rows; the limit here is {max_rows:,}"])
        if not any(cell.strip() for cell in record):
            continue  # blank lines are not rows
        if len(record) > len(header):
            problems.append(f"{row}: {len(record)} fields but the header has {len(header)} (a comma inside an unquoted text?)")
            continue
        cell = lambda c: record[col[c]].strip() if c in col and col[c] < len(record) else ""  # noqa: E731
        text, label, raw_score = cell(TEXT), cell(LABEL), cell(SENTIMENT)
        score = None
        if text_problem(text):
            problems.append(f"{row}, column 'text': empty text" if not text else
                            f"{row}, column 'text': the text {text_problem(text)}")
        if raw_score:
            try:
                score = float(raw_score)
            except ValueError:
                problems.append(f"{row}, column 'sentiment': {raw_score!r} is not a number")
            else:
                if not math.isfinite(score):
                    problems.append(f"{row}, column 'sentiment': {raw_score!r} is not a finite number")
                    score = None
                elif abs(score) > MAX_SENTIMENT:
                    problems.append(f"{row}, column 'sentiment': {raw_score} is beyond ±{MAX_SENTIMENT:,.0f}; use a "
                                    "scale such as -1 to 1, 0 to 1 or 1 to 5")
                    score = None
        elif not label:
            problems.append(f"{row}, columns 'label'/'sentiment': the row has neither a label nor a sentiment")
        texts.append(text)
        labels.append(label or None)
        sentiments.append(score)
        rows.append(f"{name} {row}")
    if problems:
        raise DataError(name, problems)
    if not texts:
        raise DataError(name, ["the file has a header but no data rows"])
    return MultiTaskDataset(texts, labels, sentiments, rows)


def unclosed_quote(row: str) -> str:
    return (f"{row} opens a quote (\") that is never closed, so the rest of the file was read as one cell; "
            "close the quote, or write a quote inside a text as two (\"\")")


def read_csvs(paths: Sequence[str | os.PathLike]) -> MultiTaskDataset:
    return MultiTaskDataset.concat([read_csv(p) for p in paths])


def check_learnable(data: MultiTaskDataset, name: str = "dataset") -> None:
    """Refuse training data that has a task with nothing to learn: a single topic, or one sentiment value.

    Such data is fine to evaluate on, but a topic head needs two classes to tell apart, and a
    sentiment head learns nothing from a constant.
    """
    problems = []
    if len(data.class_names) == 1:
        problems.append(f"column 'label': every row has the same topic ({data.class_names[0]!r}); a topic head needs "
                        "at least two (add rows of another topic, or leave the label column out)")
    scores = {s for s in data.sentiments if s is not None}
    if len(scores) == 1:
        problems.append(f"column 'sentiment': every row has the same value ({next(iter(scores)):g}); there is "
                        "nothing to learn (add other values, or leave the sentiment column out)")
    if problems:
        raise DataError(name, problems)

"""Score a whole corpus with a model, streamed: rows are read, predicted and written one batch at a time.

    summary = score_corpus(model, "reviews.csv", "scored.csv", progress=lambda done, total: ...)

The input is a CSV or a Parquet file, read and checked by core.corpus (the text column, the messages).
The output keeps every column of the input, in order, and adds the model's answers: ``topic``,
``topic_confidence``, ``topic_unsure`` (core.confidence: the topic is a guess) and one ``p_<class>``
per class (with a topic head), ``sentiment`` (with a sentiment head) and ``truncated``. An added name
that the input already uses gets ``predicted_`` in front. Rows with a blank text are kept with their
added cells empty. The output is a CSV (numbers with 4 decimals, true/false) or, for a ``.parquet``
name, Parquet (the answers typed: float64 and bool, null where the text is blank). It is written
beside ``out`` and renamed into place when complete, so a failure never leaves half a file.

The input is never held whole: a first pass checks the file and counts its rows, a second scores
them. Memory holds one batch, whatever the file's length.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa

# CsvScan, check_out, guess_text_column and scan_csv live in core.corpus; they are named here too for the
# callers that have always found them here (the app's scoring tab).
from .corpus import Chunk, CsvScan, Source, added_names, check_out, guess_text_column, open_sink, open_source, scan_csv
from .engines import Engine, LocalEngine
from .errors import ConfigError
from .outputs import Prediction
from .precision import check_precision
from .text import is_blank

if TYPE_CHECKING:
    from .model import MultiTaskModel

__all__ = ["CsvScan", "ScoreSummary", "check_out", "guess_text_column", "predict_texts", "scan_csv", "score_corpus",
           "score_csv"]


@dataclass
class ScoreSummary:
    """What ``score_corpus`` wrote.

    Attributes:
        rows: data rows read and written (blank lines are not rows).
        scored: rows the model scored.
        blank: rows whose text is blank: kept, with their added cells empty.
        truncated: scored rows longer than the encoder's max_length (only their start was read).
        columns_added: names of the added columns, in order.
        out: the file written.
        text_column: the column that was scored (named, or found as ``scan_csv`` finds it).
        seconds: wall-clock time of the whole run, the check of the input included.
    """

    rows: int
    scored: int
    blank: int
    truncated: int
    columns_added: list[str]
    out: Path
    text_column: str = ""
    seconds: float = field(default=0.0, compare=False)  # a measurement, not part of what was written


def score_corpus(model: MultiTaskModel, source: str | os.PathLike | Source, out: str | os.PathLike, *,
                 text_column: str | None = None, batch_size: int = 64, max_rows: int | None = None,
                 precision: str = "fp32", progress: Callable[[int, int | None], None] | None = None,
                 engine: Engine | None = None) -> ScoreSummary:
    """Score every row of ``source`` (CSV or Parquet) with ``model`` and write them, with the answers, to ``out``.

    Args:
        model: a MultiTaskModel; only the columns of the tasks it has are added.
        source: the file to read (see ``core.corpus.open_source`` for ``text_column`` and ``max_rows``), or
            a Source it already checked (then ``text_column`` and ``max_rows`` are its own).
        out: the file to write: Parquet for a ``.parquet``/``.pq`` name, else CSV; refused when it is ``source``.
        batch_size: rows read, predicted and written at a time.
        precision: the encoder's, as in ``MultiTaskModel.predict``.
        progress: called as ``progress(rows_done, rows_total)`` after each batch.
        engine: where batches are predicted (core.engines): by default this process, with ``model``; a Ray
            engine's actors load the same model and give the same answers.

    Returns:
        A ScoreSummary. Raises DataError (naming the row and column) before anything is scored.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_precision(precision, model.encoder.device)
    path = Path(source.path if isinstance(source, Source) else source)
    out = check_out(out, path)
    corpus = source if isinstance(source, Source) else open_source(path, text_column=text_column, max_rows=max_rows)
    classes = model.class_names if "classification" in model.tasks else []
    fields = _answer_fields(corpus.columns, classes, "sentiment" in model.tasks)
    names = [f.name for f in fields]
    summary = ScoreSummary(rows=0, scored=0, blank=0, truncated=0, columns_added=names, out=out,
                           text_column=corpus.text_column)
    formats = {f.name: "{:.4f}".format for f in fields if pa.types.is_floating(f.type)}  # as the CSV always had them
    engine = engine or LocalEngine(model)
    work = partial(predict_texts, batch_size=batch_size, precision=precision)
    with open_sink(out, pa.schema([*corpus.schema, *fields]), csv_formats=formats) as sink:
        for (chunk, wanted), predictions in engine.map(work, _wanted_texts(corpus.chunks(batch_size))):
            sink.write(_score_chunk(chunk, wanted, predictions or [], classes, fields, summary))
            if progress is not None:
                progress(summary.rows, corpus.rows)
    summary.seconds = time.perf_counter() - started
    return summary


score_csv = score_corpus  # the name the app and older callers use; it reads Parquet too


def _answer_fields(columns: Sequence[str], class_names: Sequence[str], sentiment: bool) -> list[pa.Field]:
    """The added columns, typed; a name that the input (or an earlier added one) uses gets 'predicted_' in front.

    Floats are float64: the Python values exactly, so the CSV's 4 decimals are those it always had.
    """
    wanted = ([("topic", pa.string()), ("topic_confidence", pa.float64()), ("topic_unsure", pa.bool_()),
               *((f"p_{c}", pa.float64()) for c in class_names)] if class_names else [])
    wanted += [("sentiment", pa.float64())] * sentiment + [("truncated", pa.bool_())]
    names = added_names(columns, [name for name, _ in wanted], prefix="predicted_")
    return [pa.field(name, kind) for name, (_, kind) in zip(names, wanted)]


def predict_texts(model: MultiTaskModel, texts: list[str], *, batch_size: int = 64,
                  precision: str = "fp32") -> list[Prediction]:
    """One batch's work, wherever an engine runs it: the model's Prediction per text."""
    return model.predict(texts, batch_size=batch_size, precision=precision)


def _wanted_texts(chunks: Iterable[Chunk]) -> Iterator[tuple[tuple[Chunk, list[int]], list[str]]]:
    """((chunk, positions of its non-blank texts), those texts) per chunk: what an engine's ``map`` takes."""
    for chunk in chunks:
        wanted = [i for i, t in enumerate(chunk.texts) if not is_blank(t)]
        yield (chunk, wanted), [chunk.texts[i] for i in wanted]


def _score_chunk(chunk: Chunk, wanted: list[int], answers: Sequence[Prediction], classes: Sequence[str],
                 fields: list[pa.Field], summary: ScoreSummary) -> pa.Table:
    """Every row of ``chunk`` with its answers: ``answers`` for the rows at ``wanted``, None for a blank text."""
    predictions = dict(zip(wanted, answers))
    none = [None] * len(fields)
    rows = [_answers(predictions[i], classes) if i in predictions else none for i in range(len(chunk.texts))]
    table = chunk.table
    for f, values in zip(fields, zip(*rows)):
        table = table.append_column(f, pa.array(values, f.type))
    summary.rows += len(chunk.texts)
    summary.scored += len(wanted)
    summary.blank += len(chunk.texts) - len(wanted)
    summary.truncated += sum(p.truncated for p in predictions.values())
    return table


def _answers(p: Prediction, classes: Sequence[str]) -> list[Any]:
    """One row's added values, in the order of ``_answer_fields``."""
    values: list[Any] = []
    if classes:
        values += [p.label, p.probabilities[p.label], p.unsure, *(p.probabilities[c] for c in classes)]
    if p.sentiment is not None:
        values.append(p.sentiment)
    return values + [p.truncated]


"""Score a whole CSV with a model, streamed: rows are read, predicted and written one batch at a time.

    summary = score_csv(model, "reviews.csv", "scored.csv", progress=lambda done, total: ...)

The output keeps every column of the input, in order, and adds the model's answers: ``topic``,
``topic_confidence``, ``topic_unsure`` (core.confidence: the topic is a guess) and one ``p_<class>``
per class (with a topic head), ``sentiment`` (with a sentiment head) and ``truncated``. An added name that the input already uses gets ``predicted_``
in front. Rows with a blank text are kept with their added cells empty. The file is written
beside ``out`` and renamed into place when complete, so a failure never leaves half a file.

The input is read as ``read_csv`` reads it (UTF-8 with or without a byte-order mark; lines ending
in \\n, \\r\\n or \\r; rows numbered as a spreadsheet shows them; blank lines are not rows), but
never whole: a first pass checks the file and counts its rows, a second scores them. Memory
holds one batch, whatever the file's length.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .data import END_OF_FILE, check_regular_file, not_text, shown_header, unclosed_quote
from .errors import ConfigError, DataError, FolderExistsError, NotWritableError
from .outputs import Prediction
from .precision import check_precision
from .text import is_blank

if TYPE_CHECKING:
    from .model import MultiTaskModel

__all__ = ["CsvScan", "ScoreSummary", "check_out", "guess_text_column", "scan_csv", "score_csv"]

TEXT_COLUMNS = ("text", "sentence")  # looked for, in this order, when no text column is named
MAX_PROBLEMS = 1000  # a broken file's report stops here: its first rows already say what to fix


@dataclass(frozen=True)
class CsvScan:
    """A CSV checked in one streaming pass: its header, which column holds the text, and its data rows."""

    name: str
    header: list[str]
    text_index: int
    rows: int

    @property
    def text_column(self) -> str:
        return self.header[self.text_index]


@dataclass
class ScoreSummary:
    """What ``score_csv`` wrote.

    Attributes:
        rows: data rows read and written (blank lines are not rows).
        scored: rows the model scored.
        blank: rows whose text is blank: kept, with their added cells empty.
        truncated: scored rows longer than the encoder's max_length (only their start was read).
        columns_added: names of the added columns, in order.
        text_column: the column that was scored (named, or found as ``scan_csv`` finds it).
        out: the file written.
    """

    rows: int
    scored: int
    blank: int
    truncated: int
    columns_added: list[str]
    out: Path
    text_column: str = ""


def scan_csv(source: str | os.PathLike, *, text_column: str | None = None, max_rows: int | None = None) -> CsvScan:
    """Check a CSV for scoring without keeping it in memory, and count its data rows.

    ``text_column`` names the column to score (case-insensitive); by default a column named
    ``text`` or ``sentence``, else the only column. Raises DataError naming the row and column:
    a file that is not UTF-8 CSV, no such column, a row with more fields than the header, a quote
    never closed, or more than ``max_rows`` data rows (a server's limit).
    """
    path = Path(source)
    name = path.name
    records = _records(path, name)
    number, header = next(records, (0, None))
    if header is None:
        raise DataError(name, ["the file is empty; expected a header row naming its columns"])
    if not any(h.strip() for h in header):
        raise DataError(name, ["row 1: the header row has no column names"])
    text_index = _text_index(name, header, text_column)
    rows, problems = 0, []
    for number, record in records:
        rows += 1
        if len(record) > len(header):
            problems.append(f"row {number}: {len(record)} fields but the header has {len(header)} "
                            "(a comma inside an unquoted text?)")
            if len(problems) >= MAX_PROBLEMS:
                problems.append(f"stopped reading at row {number}")
                break
    if max_rows is not None and rows > max_rows:
        raise DataError(name, [f"{rows:,} data rows; the limit here is {max_rows:,}"])
    if problems:
        raise DataError(name, problems)
    return CsvScan(name, header, text_index, rows)


def check_out(out: str | os.PathLike, source: str | os.PathLike) -> Path:
    """The file to write the scores to, checked before any work: named, not the input, not a folder,
    and in a place this process can write in. An existing file is replaced."""
    if not str(out).strip():
        raise ConfigError("the file to write the scores to is empty: name one, e.g. --out scored.csv")
    path = Path(out)
    if path.is_dir():
        raise FolderExistsError(f"{out} is a folder: name a file to write, e.g. {path / 'scored.csv'}")
    if path.exists() and not path.is_file():
        raise FolderExistsError(f"{out} exists and is not a regular file: choose another file to write")
    if path.resolve() == Path(source).resolve() or (path.exists() and _same_file(path, Path(source))):
        raise ConfigError(f"{out} is the input file: write the scores to another file")
    existing = next(p for p in path.resolve().parents if p.exists())  # the root always exists
    if not existing.is_dir():
        raise NotWritableError(f"cannot write {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NotWritableError(f"cannot write {out}: no permission to write in {existing}")
    return path


def score_csv(model: MultiTaskModel, source: str | os.PathLike, out: str | os.PathLike, *,
              text_column: str | None = None, batch_size: int = 64, max_rows: int | None = None,
              precision: str = "fp32", progress: Callable[[int, int | None], None] | None = None) -> ScoreSummary:
    """Score every row of the CSV ``source`` with ``model`` and write them, with the answers, to ``out``.

    Args:
        model: a MultiTaskModel; only the columns of the tasks it has are added.
        source: the CSV to read (see ``scan_csv`` for ``text_column`` and ``max_rows``).
        out: the CSV to write; refused when it is ``source``.
        batch_size: rows read, predicted and written at a time.
        precision: the encoder's, as in ``MultiTaskModel.predict``.
        progress: called as ``progress(rows_done, rows_total)`` after each batch.

    Returns:
        A ScoreSummary. Raises DataError (naming the row and column) before anything is scored.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_precision(precision, model.encoder.device)
    source, out = Path(source), check_out(out, source)
    scan = scan_csv(source, text_column=text_column, max_rows=max_rows)
    added = _added_columns(scan.header, model.class_names if "classification" in model.tasks else [],
                           "sentiment" in model.tasks)
    summary = ScoreSummary(rows=0, scored=0, blank=0, truncated=0, columns_added=added, out=out,
                           text_column=scan.text_column)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)  # lines end in \r\n (RFC 4180), so a cell holding a lone \r is quoted
            writer.writerow(scan.header + added)
            rows = (record for number, record in _records(source, scan.name) if number > 1)
            while batch := list(itertools.islice(rows, batch_size)):
                _score_batch(model, batch, scan, len(added), writer, summary, batch_size, precision)
                if progress is not None:
                    progress(summary.rows, scan.rows)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the scores are an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return summary


# -- reading ----------------------------------------------------------------------------------


def _records(path: Path, name: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of each record, the header first as row 1, read a line at a time.

    Rows are numbered as a spreadsheet shows them (a quoted cell may span lines); rows with nothing
    in them are skipped, as ``read_csv`` skips them. Raises DataError as ``read_csv`` does.
    """
    with _open_text(path, name) as f:
        reader = csv.reader(itertools.chain(f, [END_OF_FILE]))  # END_OF_FILE: a cell that takes it in opened a quote never closed
        try:
            for number, record in enumerate(reader, start=1):
                if record == [END_OF_FILE]:
                    return
                if any(END_OF_FILE in cell for cell in record):
                    raise DataError(name, [unclosed_quote(f"row {number}")])
                if number == 1 or any(cell.strip() for cell in record):
                    yield number, record
        except csv.Error as exc:  # e.g. a cell longer than the csv module's field limit (131,072 characters)
            raise DataError(name, [f"row {reader.line_num}: cannot be read as CSV ({exc})"]) from None
        except UnicodeDecodeError:
            raise _not_utf8(path, name) from None


def _open_text(path: Path, name: str) -> io.TextIOWrapper:
    """The file as UTF-8 text without its byte-order mark, every line ending kept (newline="": the
    csv module sees \\r-only lines as lines). Refused as ``read_text_file`` refuses: anything but a
    regular file, and a workbook, a PDF or UTF-16 text by its first bytes."""
    check_regular_file(path, name)
    raw = open(path, "rb")
    kind = not_text(raw.read(4096))
    raw.seek(0)
    if kind:
        raw.close()
        raise DataError(name, [f"this is {kind}, not a CSV in UTF-8: save it as 'CSV UTF-8 (comma delimited)'"])
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _not_utf8(path: Path, name: str) -> DataError:
    """``read_text_file``'s error for bytes that are not UTF-8, naming their row (line), found in blocks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, offset, last = 1, 0, b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            pending = len(decoder.getstate()[0])  # bytes of a character begun in the block before
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                start = max(exc.start - pending, 0)  # a character begun earlier holds no line end
                lines += _line_ends(last, block[:start])
                at = offset + exc.start - pending
                return DataError(name, [f"row {lines}: not UTF-8 text (byte {at} cannot be decoded); "
                                        "save the file as UTF-8"])
            lines += _line_ends(last, block)
            offset, last = offset + len(block), block[-1:]
    return DataError(name, ["not UTF-8 text; save the file as UTF-8"])  # changed while it was read


def _line_ends(before: bytes, block: bytes) -> int:
    """Line ends (\\n, \\r\\n or \\r) in ``block``, whose preceding byte was ``before``."""
    ends = block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
    return ends - (before == b"\r" and block.startswith(b"\n"))  # a \r\n split between two blocks


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _text_index(name: str, header: list[str], text_column: str | None) -> int:
    """Index of the column to score: ``text_column``, else 'text' or 'sentence', else the only column."""
    columns = [h.strip().lower() for h in header]
    if text_column is not None:
        matches = [i for i, c in enumerate(columns) if c == text_column.strip().lower()]
        if not matches:
            raise DataError(name, [f"row 1: no column {text_column!r}; the columns are {shown_header(header)}"])
    else:
        matches = next(([i for i, c in enumerate(columns) if c == wanted] for wanted in TEXT_COLUMNS
                        if wanted in columns), [0] if len(header) == 1 else [])
        if matches == [0] and len(header) == 1 and any(sep in header[0] for sep in ";\t"):
            raise DataError(name, [f"row 1: one column named {header[0][:40]!r}: the file seems to use another "
                                   "delimiter; use commas (or name that column as the text column)"])
        if not matches:
            raise DataError(name, [f"row 1: no 'text' or 'sentence' column; name the column that holds the text, "
                                   f"one of {shown_header(header)}"])
    if len(matches) > 1:
        raise DataError(name, [f"row 1: column {header[matches[0]].strip()!r} appears {len(matches)} times; "
                               "rename one, or name another column as the text column"])
    return matches[0]


def guess_text_column(source: str | os.PathLike, sample: int = 20) -> str | None:
    """For a page's column picker when no column is named 'text' or 'sentence': the column whose first
    ``sample`` cells are longest on average (texts are longer than ids, labels and numbers). None for an
    unreadable file, which ``scan_csv`` then reports."""
    try:
        with _open_text(Path(source), Path(source).name) as f:
            rows = list(itertools.islice(csv.reader(f), sample + 1))
    except (DataError, OSError, UnicodeDecodeError, csv.Error):
        return None
    if len(rows) < 2:
        return None
    header, body = rows[0], rows[1:]
    width = [sum(len(r[i]) for r in body if i < len(r)) for i in range(len(header))]
    return header[max(range(len(header)), key=width.__getitem__)]


# -- writing ----------------------------------------------------------------------------------


def _added_columns(header: Sequence[str], class_names: Sequence[str], sentiment: bool) -> list[str]:
    """The added columns' names; one that the header (or an earlier added one) uses gets 'predicted_' in front."""
    wanted = (["topic", "topic_confidence", "topic_unsure", *(f"p_{c}" for c in class_names)] if class_names else [])
    wanted += ["sentiment"] * sentiment + ["truncated"]
    taken, names = {h.strip().lower() for h in header}, []
    for name in wanted:
        while name.lower() in taken:
            name = f"predicted_{name}"
        taken.add(name.lower())
        names.append(name)
    return names


def _score_batch(model: MultiTaskModel, batch: list[list[str]], scan: CsvScan, n_added: int, writer: Any,
                 summary: ScoreSummary, batch_size: int, precision: str) -> None:
    """Predict the non-blank texts of ``batch`` and write every row of it, blank ones with empty added cells."""
    texts = [record[scan.text_index].strip() if scan.text_index < len(record) else "" for record in batch]
    wanted = [i for i, t in enumerate(texts) if not is_blank(t)]
    predictions = dict(zip(wanted, model.predict([texts[i] for i in wanted], batch_size=batch_size,
                                                 precision=precision)))
    classes = model.class_names if "classification" in model.tasks else []
    for i, record in enumerate(batch):
        cells = record + [""] * (len(scan.header) - len(record))  # a short row: the missing cells are empty
        p = predictions.get(i)
        writer.writerow(cells + (_answers(p, classes) if p is not None else [""] * n_added))
    summary.rows += len(batch)
    summary.scored += len(wanted)
    summary.blank += len(batch) - len(wanted)
    summary.truncated += sum(p.truncated for p in predictions.values())


def _answers(p: Prediction, classes: Sequence[str]) -> list[str]:
    """One row's added cells, in the order of ``_added_columns``."""
    cells = []
    if classes:
        cells += [p.label, f"{p.probabilities[p.label]:.4f}", "true" if p.unsure else "false",
                  *(f"{p.probabilities[c]:.4f}" for c in classes)]
    if p.sentiment is not None:
        cells.append(f"{p.sentiment:.4f}")
    return cells + ["true" if p.truncated else "false"]

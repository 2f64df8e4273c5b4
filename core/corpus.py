"""A corpus on disk: CSV or Parquet read in chunks, and CSV or Parquet written whole or not at all.

    source = open_source("reviews.parquet", text_column="body")   # the whole file checked, its rows counted
    with open_sink("out.parquet", schema) as sink:                 # written beside out, renamed when complete
        for chunk in source.chunks(4096):                           # chunk.table, chunk.texts, chunk.ids
            sink.write(...)

Both ``predict --input`` (core.scoring) and ``embed --input`` (core.index) read and write through here,
so the rules live once: which column holds the text (``text``, else ``sentence``, else the only column),
what a row's id is (the ``id`` column's value, else the data row's number: 1 for the first row under the
header), what is refused and in which words. A CSV is read as ``read_csv`` reads it (UTF-8 with or without
a byte-order mark; lines ending in \\n, \\r\\n or \\r; rows numbered as a spreadsheet shows them; blank lines
are not rows). Every source is checked in one streaming pass before any work, so a bad row is told before
anything is written; memory holds one chunk, whatever the file's length.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .data import END_OF_FILE, check_regular_file, not_text, shown_header, unclosed_quote
from .errors import ConfigError, DataError, FolderExistsError, NotWritableError

__all__ = ["Chunk", "CsvScan", "Source", "added_names", "atomic_file", "check_out", "csv_records", "guess_text_column",
           "is_parquet", "open_parquet", "open_sink", "open_source", "scan_csv", "text_column_index"]

TEXT_COLUMNS = ("text", "sentence")  # looked for, in this order, when no text column is named
ID_COLUMN = "id"  # a column of this name (any case) is the rows' id; otherwise their number is
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MAGIC = b"PAR1"  # the first (and last) four bytes of every Parquet file
MAX_PROBLEMS = 1000  # a broken file's report stops here: its first rows already say what to fix


def is_parquet(path: str | os.PathLike) -> bool:
    """Whether a file is (or is to be written as) Parquet: by its name, or, for one that exists, its first bytes."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    if not path.is_file():  # never open a pipe or a device to look (a pipe would wait for a writer)
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4) == PARQUET_MAGIC
    except OSError:
        return False


# -- CSV --------------------------------------------------------------------------------------


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


def scan_csv(source: str | os.PathLike, *, text_column: str | None = None, max_rows: int | None = None) -> CsvScan:
    """Check a CSV for scoring without keeping it in memory, and count its data rows.

    ``text_column`` names the column to score (case-insensitive); by default a column named
    ``text`` or ``sentence``, else the only column. Raises DataError naming the row and column:
    a file that is not UTF-8 CSV, no such column, a row with more fields than the header, a quote
    never closed, or more than ``max_rows`` data rows (a server's limit).
    """
    path = Path(source)
    name = path.name
    records = csv_records(path, name)
    number, header = next(records, (0, None))
    if header is None:
        raise DataError(name, ["the file is empty; expected a header row naming its columns"])
    if not any(h.strip() for h in header):
        raise DataError(name, ["row 1: the header row has no column names"])
    text_index = text_column_index(name, header, text_column)
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


def csv_records(path: Path, name: str) -> Iterator[tuple[int, list[str]]]:
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


def text_column_index(name: str, header: Sequence[str], text_column: str | None, *, where: str = "row 1: ") -> int:
    """Index of the column to read: ``text_column``, else 'text' or 'sentence', else the only column.

    ``where`` starts each message: a CSV's header is its row 1; a Parquet file's columns are its schema.
    """
    header = list(header)
    columns = [h.strip().lower() for h in header]
    if text_column is not None:
        matches = [i for i, c in enumerate(columns) if c == text_column.strip().lower()]
        if not matches:
            raise DataError(name, [f"{where}no column {text_column!r}; the columns are {shown_header(header)}"])
    else:
        matches = next(([i for i, c in enumerate(columns) if c == wanted] for wanted in TEXT_COLUMNS
                        if wanted in columns), [0] if len(header) == 1 else [])
        if matches == [0] and len(header) == 1 and any(sep in header[0] for sep in ";\t"):
            raise DataError(name, [f"{where}one column named {header[0][:40]!r}: the file seems to use another "
                                   "delimiter; use commas (or name that column as the text column)"])
        if not matches:
            raise DataError(name, [f"{where}no 'text' or 'sentence' column; name the column that holds the text, "
                                   f"one of {shown_header(header)}"])
    if len(matches) > 1:
        raise DataError(name, [f"{where}column {header[matches[0]].strip()!r} appears {len(matches)} times; "
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


# -- Parquet ----------------------------------------------------------------------------------


def open_parquet(path: Path, name: str, *,
                 hint: str = "write it with pandas.DataFrame.to_parquet or pyarrow, or give a CSV") -> pq.ParquetFile:
    """The file opened as Parquet (only its footer is read), or a DataError saying what it is instead, and ``hint``."""
    check_regular_file(path, name)
    if path.stat().st_size == 0:
        raise DataError(name, ["the file is empty (0 bytes); expected a Parquet file"])
    try:
        # pre_buffer reads every row group a read asks for before the first batch: the whole file, for
        # iter_batches (measured: 527 MB of Arrow memory to scan a 466 MB index; 67 MB without it)
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:  # no PAR1 magic, a cut footer, ...
        raise DataError(name, [f"cannot be read as Parquet ({' '.join(str(exc).split())[:200]}); {hint}"]) from None


def _is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _scan_parquet(path: Path, name: str, text_column: str | None, max_rows: int | None,
                  rows_at_a_time: int) -> tuple[pq.ParquetFile, int]:
    """Check a Parquet source in one pass over its text column only: the column is there, holds strings,
    and every one of them is UTF-8 (a foreign writer may not have checked). Returns the file and the
    text column's index."""
    file = open_parquet(path, name)
    schema = file.schema_arrow
    where = "in its schema: "
    index = text_column_index(name, schema.names, text_column, where=where)
    field = schema.field(index)
    if not _is_text_type(field.type):
        raise DataError(name, [f"{where}column {field.name!r} holds {field.type} values, not text; name the column "
                               f"that holds the text with --text-column, one of {shown_header(schema.names)}"])
    rows = file.metadata.num_rows
    if max_rows is not None and rows > max_rows:
        raise DataError(name, [f"{rows:,} data rows; the limit here is {max_rows:,}"])
    done = 0
    for batch in file.iter_batches(batch_size=rows_at_a_time, columns=[field.name], use_threads=False):
        column = batch.column(field.name)
        try:
            column.validate(full=True)  # checks UTF-8, which reading alone does not
        except pa.ArrowInvalid:
            raise DataError(name, [f"row {done + _first_bad_utf8(column) + 1}, column {field.name!r}: not UTF-8 "
                                   "text; write the column as UTF-8 strings"]) from None
        done += len(batch)
    return file, index


def _first_bad_utf8(column: pa.Array) -> int:
    """Index of the first value of a string array whose bytes are not UTF-8 (only called when there is one)."""
    for i, value in enumerate(column.view(pa.binary() if pa.types.is_string(column.type) else pa.large_binary())
                              .to_pylist()):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return i
    return 0


# -- a source, read in chunks -------------------------------------------------------------------


@dataclass
class Chunk:
    """Consecutive rows of a source.

    Attributes:
        table: the source's columns for these rows, as read (a CSV's are strings, a short row's missing
            cells empty; a Parquet file's keep their types).
        texts: the text cells, stripped; "" where the cell is empty or missing (null).
        ids: per row, the id column's value, or else the data row's number (1 for the first row under
            the header; blank lines in a CSV are not rows).
    """

    table: pa.Table
    texts: list[str]
    ids: list[Any]


@dataclass(frozen=True)
class Source:
    """A CSV or Parquet file, checked whole (``open_source``) and then read ``chunks(n)`` rows at a time.

    Attributes:
        path, name: the file, and its name as messages show it.
        kind: "csv" or "parquet".
        schema: the columns chunks carry, in order, with their types (a CSV's are all strings).
        text_index: the column holding the text.
        id_index: the ``id`` column, or None (rows are then known by their number).
        rows: data rows (a Parquet file's row count; a CSV's records under the header, where a line with
            nothing in any cell is not a row).
    """

    path: Path
    name: str
    kind: Literal["csv", "parquet"]
    schema: pa.Schema
    text_index: int
    id_index: int | None
    rows: int

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    @property
    def text_column(self) -> str:
        return self.columns[self.text_index]

    @property
    def id_column(self) -> str | None:
        return self.columns[self.id_index] if self.id_index is not None else None

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows, ``size`` at a time, in file order; only one chunk is held at a time."""
        if size < 1:
            raise ConfigError(f"chunk size must be >= 1, got {size}")
        batches = self._csv_batches(size) if self.kind == "csv" else self._parquet_batches(size)
        first = 1
        for table in batches:
            texts = [(t or "").strip() for t in table.column(self.text_index).to_pylist()]
            ids = (table.column(self.id_index).to_pylist() if self.id_index is not None
                   else list(range(first, first + table.num_rows)))
            first += table.num_rows
            yield Chunk(table, texts, ids)

    def _csv_batches(self, size: int) -> Iterator[pa.Table]:
        width = len(self.schema)
        rows = (record for number, record in csv_records(self.path, self.name) if number > 1)
        while batch := list(itertools.islice(rows, size)):
            # a short row: its missing cells are empty
            cells = [record + [""] * (width - len(record)) for record in batch]
            columns = [pa.array(column, pa.string()) for column in zip(*cells)]
            yield pa.Table.from_arrays(columns, schema=self.schema)

    def _parquet_batches(self, size: int) -> Iterator[pa.Table]:
        file = open_parquet(self.path, self.name)
        for batch in file.iter_batches(batch_size=size, use_threads=False):
            yield pa.Table.from_batches([batch], schema=self.schema)


def open_source(source: str | os.PathLike, *, text_column: str | None = None, max_rows: int | None = None,
                rows_at_a_time: int = 65_536) -> Source:
    """Check a CSV or Parquet file whole, without holding it, and say how to read it.

    A file named ``.parquet``/``.pq``, or starting with Parquet's magic bytes, is Parquet; anything else is
    a CSV (``scan_csv`` checks it). ``text_column`` names the column of texts (case-insensitive); by default
    ``text``, else ``sentence``, else the only column. A Parquet text column must hold strings, all UTF-8.
    Raises DataError naming the row and column before any work.
    """
    path = Path(source)
    name = path.name
    if is_parquet(path):
        file, index = _scan_parquet(path, name, text_column, max_rows, rows_at_a_time)
        schema = file.schema_arrow.remove_metadata()  # pandas' or another writer's: not ours to carry over
        return Source(path, name, "parquet", schema, index, _id_index(schema.names, index), file.metadata.num_rows)
    scan = scan_csv(path, text_column=text_column, max_rows=max_rows)
    schema = pa.schema([pa.field(h, pa.string()) for h in scan.header])
    return Source(path, name, "csv", schema, scan.text_index, _id_index(scan.header, scan.text_index), scan.rows)


def _id_index(columns: Sequence[str], text_index: int) -> int | None:
    """The one column named 'id' (any case, spaces around ignored) that is not the text; else None."""
    found = [i for i, c in enumerate(columns) if c.strip().lower() == ID_COLUMN and i != text_index]
    return found[0] if len(found) == 1 else None


def added_names(columns: Sequence[str], wanted: Sequence[str], prefix: str) -> list[str]:
    """Names for the columns a run adds: one that ``columns`` (or an earlier added one) already uses gets
    ``prefix`` in front, as often as needed (case-insensitive), so nothing of the input is overwritten."""
    taken, names = {c.strip().lower() for c in columns}, []
    for name in wanted:
        while name.lower() in taken:
            name = f"{prefix}{name}"
        taken.add(name.lower())
        names.append(name)
    return names


# -- writing --------------------------------------------------------------------------------------


def check_out(out: str | os.PathLike, source: str | os.PathLike, *, what: str = "the scores",
              example: str = "scored.csv") -> Path:
    """The file to write ``what`` to, checked before any work: named, not the input, not a folder,
    and in a place this process can write in. An existing file is replaced."""
    if not str(out).strip():
        raise ConfigError(f"the file to write {what} to is empty: name one, e.g. --out {example}")
    path = Path(out)
    if path.is_dir():
        raise FolderExistsError(f"{out} is a folder: name a file to write, e.g. {path / example}")
    if path.exists() and not path.is_file():
        raise FolderExistsError(f"{out} exists and is not a regular file: choose another file to write")
    if path.resolve() == Path(source).resolve() or (path.exists() and _same_file(path, Path(source))):
        raise ConfigError(f"{out} is the input file: write {what} to another file")
    existing = next(p for p in path.resolve().parents if p.exists())  # the root always exists
    if not existing.is_dir():
        raise NotWritableError(f"cannot write {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NotWritableError(f"cannot write {out}: no permission to write in {existing}")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out`` to write; renamed onto ``out`` when the block ends, deleted when it
    raises (Ctrl-C included), so ``out`` is either what it was or complete, never half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the output is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CsvSink:
    """Writes tables as CSV rows: None as an empty cell, booleans as true/false, ``formats`` per column."""

    def __init__(self, f: io.TextIOBase, names: Sequence[str], formats: dict[str, Callable[[Any], str]]) -> None:
        self.writer = csv.writer(f)  # lines end in \r\n (RFC 4180), so a cell holding a lone \r is quoted
        self.writer.writerow(names)
        self.cells = [formats.get(n, _cell) for n in names]

    def write(self, table: pa.Table) -> None:
        columns = [[("" if v is None else fmt(v)) for v in column.to_pylist()]
                   for fmt, column in zip(self.cells, table.columns)]
        self.writer.writerows(zip(*columns))


def _cell(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class ParquetSink:
    """Writes tables as Parquet row groups (one per ``write``), all with the schema the file was opened with."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema) -> None:
        self.writer, self.schema = writer, schema

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table.replace_schema_metadata(self.schema.metadata))


def _is_vector(kind: pa.DataType) -> bool:
    return (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind)) and pa.types.is_floating(kind.value_type)


@contextmanager
def open_sink(out: Path, schema: pa.Schema, *,
              csv_formats: dict[str, Callable[[Any], str]] | None = None) -> Iterator[CsvSink | ParquetSink]:
    """Write ``out`` as Parquet (a ``.parquet``/``.pq`` name) or CSV (any other), through ``atomic_file``.

    ``schema`` names the columns (and, for Parquet, their types and the file's metadata); ``csv_formats``
    turns the values of named columns into CSV cells (e.g. 4 decimals). A Parquet file needs distinct
    column names: repeated ones are refused before anything is written.
    """
    parquet = Path(out).suffix.lower() in PARQUET_SUFFIXES
    if parquet:
        repeated = sorted(n for n, count in Counter(schema.names).items() if count > 1)
        if repeated:
            raise ConfigError(f"columns {repeated} appear more than once, which Parquet cannot store: rename them, "
                              "or write a CSV")
    with atomic_file(out) as tmp:
        if parquet:
            # Vectors (lists of floats) are written plain: a float rarely repeats, so trying a dictionary and
            # snappy on them triples the time to write and to search 100,000 rows of 384 floats, for no space.
            vectors = {f.name for f in schema if _is_vector(f.type)}
            dictionary = [n for n in schema.names if n not in vectors]
            compression = {n: "none" if n in vectors else "snappy" for n in schema.names}
            with pq.ParquetWriter(tmp, schema, use_dictionary=dictionary, compression=compression) as writer:
                yield ParquetSink(writer, schema)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                yield CsvSink(f, schema.names, csv_formats or {})

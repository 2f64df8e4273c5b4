"""An embedding index: a corpus embedded into one Parquet file, and exact cosine search over it.

    summary = embed_corpus(encoder, "reviews.csv", "reviews.parquet")   # streamed, a chunk at a time
    hits = search_index("reviews.parquet", "a film with a sad ending", k=5)

The index keeps the input's columns (the text among them) for every row whose text is not blank,
adds the row's number (``row``) when the input has no ``id`` column, the ``embedding`` (a fixed-size
list of float32) and ``truncated`` (the text was longer than the encoder reads). Its schema metadata
(``sentence_lab.index``) records the encoder's settings and a checksum of its weights, so
``search_index`` embeds the query the same way (and refuses other weights), and which column holds what. Blank rows are skipped and counted: nothing to embed.

Memory is bounded on both sides: ``embed_corpus`` holds one chunk of rows and their embeddings
(4,096 x 384 float32 = 6 MB with all-MiniLM-L6-v2) and writes it as a Parquet row group at once;
``search_index`` reads the index in record batches and keeps a running top-k, never the whole matrix.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from .config import CHUNK_ROWS, EncoderConfig
from .corpus import PARQUET_SUFFIXES, Chunk, Source, added_names, check_out, open_parquet, open_sink, open_source
from .encoder import SentenceEncoder, load_backbone, offered_encoders, state_checksum
from .engines import Engine, LocalEngine
from .errors import ConfigError, DataError, TextError
from .text import is_blank, text_problem
from .version import __version__

__all__ = ["CHUNK_ROWS", "INDEX_KEY", "EmbedSummary", "Hit", "IndexInfo", "check_index_out", "embed_corpus",
           "embed_texts", "read_index", "search_index"]

INDEX_KEY = b"sentence_lab.index"  # the schema metadata entry that makes a Parquet file one of our indexes
SEARCH_ROWS = 16_384  # index rows scored per record batch: 24 MB of 384-wide float32, one matrix product


@dataclass
class EmbedSummary:
    """What ``embed_corpus`` wrote.

    Attributes:
        rows: data rows read.
        embedded: rows embedded and written to the index.
        blank: rows whose text is blank: skipped, not in the index.
        truncated: embedded rows longer than the encoder's max_length (only their start was read).
        dim: the embeddings' width.
        out: the index written.
        text_column: the column that was embedded.
        id_column: the column that identifies a row in the index (the input's ``id``, or the added ``row``).
        seconds: wall-clock time of the whole run, the check of the input included.
    """

    rows: int
    embedded: int
    blank: int
    truncated: int
    dim: int
    out: Path
    text_column: str
    id_column: str
    seconds: float = 0.0


@dataclass(frozen=True)
class IndexInfo:
    """An index's metadata: the encoder that made it and where its parts are.

    Attributes:
        encoder: the EncoderConfig's fields (model_name, pooling, normalize, projection_dim, max_length, ...).
        checksum: ``state_checksum`` of the backbone whose weights made the vectors.
        dim: the embeddings' width.
        rows: rows in the index.
        text_column, id_column, embedding_column, truncated_column: the columns holding each.
        normalized: whether the stored embeddings are L2-normalised (search normalises anyway).
    """

    encoder: dict[str, Any]
    checksum: str
    dim: int
    rows: int
    text_column: str
    id_column: str
    embedding_column: str
    truncated_column: str
    normalized: bool


@dataclass
class Hit:
    """One search result: the ``rank``-th nearest row (1 = nearest) and its cosine ``score``."""

    rank: int
    score: float
    id: Any
    text: str
    id_column: str = "row"

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": self.score, self.id_column: self.id, "text": self.text}


def embed_corpus(encoder: SentenceEncoder, source: str | os.PathLike | Source, out: str | os.PathLike, *,
                 text_column: str | None = None, chunk_rows: int = CHUNK_ROWS, batch_size: int = 32,
                 precision: str = "fp32", max_rows: int | None = None,
                 progress: Callable[[int, int], None] | None = None, engine: Engine | None = None) -> EmbedSummary:
    """Embed every non-blank row of ``source`` (CSV or Parquet) into the Parquet index ``out``.

    Args:
        encoder: the SentenceEncoder; its settings are recorded in the index for ``search_index``.
        source: the file to read, or a Source already checked by ``core.corpus.open_source`` (then
            ``text_column`` and ``max_rows`` are its own).
        out: the index to write, a ``.parquet`` name; written beside it and renamed when complete.
        chunk_rows: rows read, embedded and written at a time (memory holds one chunk).
        batch_size, precision: as in ``SentenceEncoder.embed``, per chunk.
        progress: called as ``progress(rows_done, rows_total)`` after each chunk.
        engine: where chunks are embedded (core.engines): by default this process, with ``encoder``; a Ray
            engine's actors load the same encoder and give the same vectors.

    Returns:
        An EmbedSummary. Raises DataError (naming the row and column) before anything is embedded, and
        when every text is blank (an index of nothing).
    """
    started = time.perf_counter()
    if chunk_rows < 1 or batch_size < 1:
        raise ConfigError(f"chunk_rows and batch_size must be >= 1, got {chunk_rows} and {batch_size}")
    path = Path(source.path if isinstance(source, Source) else source)
    out = check_index_out(out, path)
    corpus = source if isinstance(source, Source) else open_source(path, text_column=text_column, max_rows=max_rows)
    dim = encoder.embedding_dim
    wanted = (["row"] if corpus.id_index is None else []) + ["embedding", "truncated"]
    names = added_names(corpus.columns, wanted, prefix="index_")
    row_column = names.pop(0) if corpus.id_index is None else None
    embedding_column, truncated_column = names
    info = {"format": 1, "made_by": f"sentence-lab {__version__}", "encoder": encoder.config.to_dict(), "dim": dim,
            "checksum": state_checksum(encoder.backbone),  # the weights that made the vectors, as search finds them
            "text_column": corpus.text_column, "id_column": row_column or corpus.id_column,
            "embedding_column": embedding_column, "truncated_column": truncated_column,
            "normalized": encoder.config.normalize}
    added = ([pa.field(row_column, pa.int64())] if row_column else []) + [
        pa.field(embedding_column, pa.list_(pa.float32(), dim)), pa.field(truncated_column, pa.bool_())]
    schema = pa.schema([*corpus.schema, *added], metadata={INDEX_KEY: json.dumps(info)})
    summary = EmbedSummary(rows=0, embedded=0, blank=0, truncated=0, dim=dim, out=out,
                           text_column=corpus.text_column, id_column=info["id_column"])
    engine = engine or LocalEngine(encoder)
    work = partial(embed_texts, batch_size=batch_size, precision=precision)
    with open_sink(out, schema) as sink:
        for (chunk, keep), embedded in engine.map(work, _kept_texts(corpus.chunks(chunk_rows))):
            summary.rows += len(chunk.texts)
            summary.blank += len(chunk.texts) - len(keep)
            if keep:
                vectors, truncated = embedded  # (n, dim) float32, positions in keep
                cut = set(truncated)
                table = chunk.table.take(pa.array(keep, pa.int64()))
                columns = ([pa.array([chunk.ids[i] for i in keep], pa.int64())] if row_column else []) + [
                    pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
                    pa.array([j in cut for j in range(len(keep))], pa.bool_())]
                for f, column in zip(added, columns):
                    table = table.append_column(f, column)
                sink.write(table)
                summary.embedded += len(keep)
                summary.truncated += len(cut)
            if progress is not None:
                progress(summary.rows, corpus.rows)
        if summary.embedded == 0:  # raised inside the sink: the empty index is not kept
            raise DataError(corpus.name, [f"column {corpus.text_column!r}: every text is blank ({summary.rows:,} "
                                          "rows), so there is nothing to embed"])
    summary.seconds = time.perf_counter() - started
    return summary


def embed_texts(encoder: SentenceEncoder, texts: list[str], *, batch_size: int = 32,
                precision: str = "fp32") -> tuple[np.ndarray, list[int]]:
    """One chunk's work, wherever an engine runs it: the (n, dim) float32 embeddings and the truncated positions."""
    result = encoder.embed(texts, batch_size=batch_size, precision=precision)
    return np.ascontiguousarray(result.embeddings, dtype=np.float32), list(result.truncated)


def _kept_texts(chunks: Iterable[Chunk]) -> Iterator[tuple[tuple[Chunk, list[int]], list[str]]]:
    """((chunk, positions of its non-blank texts), those texts) per chunk: what an engine's ``map`` takes."""
    for chunk in chunks:
        keep = [i for i, t in enumerate(chunk.texts) if not is_blank(t)]
        yield (chunk, keep), [chunk.texts[i] for i in keep]


def check_index_out(out: str | os.PathLike, source: str | os.PathLike) -> Path:
    """The index file to write, checked before any work as ``core.corpus.check_out`` checks, and named .parquet."""
    path = check_out(out, source, what="the index", example="index.parquet")
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        raise ConfigError(f"{out}: an index is a Parquet file: name it {path.with_suffix('.parquet').name}")
    return path


def read_index(index: str | os.PathLike) -> IndexInfo:
    """An index's metadata, checked: a Parquet file that ``embed_corpus`` wrote, its columns all there."""
    path = Path(index)
    make = f"make an index with: python -m core embed --input FILE --out {path.stem}.parquet"
    file = open_parquet(path, path.name, hint=make)
    schema = file.schema_arrow
    raw = (schema.metadata or {}).get(INDEX_KEY)
    if raw is None:
        raise DataError(path.name, ["not an index made by `python -m core embed` (its schema has no "
                                    f"{INDEX_KEY.decode()} entry); {make}"])
    try:
        meta = json.loads(raw)
        info = IndexInfo(encoder=dict(meta["encoder"]), checksum=str(meta["checksum"]), dim=int(meta["dim"]),
                         rows=file.metadata.num_rows, text_column=meta["text_column"], id_column=meta["id_column"],
                         embedding_column=meta["embedding_column"], truncated_column=meta["truncated_column"],
                         normalized=bool(meta["normalized"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(path.name, [f"its {INDEX_KEY.decode()} metadata cannot be read ({type(exc).__name__}: {exc}); "
                                    "embed the corpus again"]) from None
    missing = [c for c in (info.text_column, info.id_column, info.embedding_column) if c not in schema.names]
    if missing:
        raise DataError(path.name, [f"the index has no column {missing[0]!r} (its metadata names it); embed the "
                                    "corpus again"])
    kind = schema.field(info.embedding_column).type
    if not (pa.types.is_fixed_size_list(kind) and kind.list_size == info.dim and pa.types.is_floating(kind.value_type)):
        raise DataError(path.name, [f"column {info.embedding_column!r} holds {kind}, not {info.dim} floats per row; "
                                    "embed the corpus again"])
    return info


def search_index(index: str | os.PathLike, query: str, k: int = 10, *, encoder: SentenceEncoder | None = None,
                 trust_base_path: bool = False, batch_rows: int = SEARCH_ROWS,
                 progress: Callable[[int, int], None] | None = None) -> list[Hit]:
    """The ``k`` rows of ``index`` whose embeddings are nearest to ``query``'s by cosine, nearest first.

    Exact: every row is scored. The index is read ``batch_rows`` rows at a time (only the id, text and
    embedding columns) and a running top-k is kept, so memory does not grow with the index. Each batch's
    rows are normalised here, so an index embedded without normalisation is searched by cosine too.
    Equal scores keep the index's order.

    Args:
        index: a Parquet file written by ``embed_corpus``.
        query: the text to look for.
        k: how many rows to return (fewer when the index is smaller).
        encoder: the encoder to embed the query with; by default the one the index names is loaded (from
            this machine, never downloaded, and checked to have the same weights). It must be that encoder
            (same model and pooling): other vectors are not comparable.
        trust_base_path: load the encoder the index names even when it is not one this machine offers
            (``offered_encoders``): a file never makes Sentence Lab read another folder unless trusted,
            as with a saved model's base encoder.
        progress: called as ``progress(rows_done, rows_total)`` after each batch.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a whole number >= 1, got {k!r}")
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be >= 1, got {batch_rows}")
    problem = text_problem(query)
    if problem:
        raise TextError(f"the query {problem}")
    info = read_index(index)
    encoder = _query_encoder(info, encoder, Path(index).name, trust_base_path)
    q = np.asarray(encoder.embed([query], batch_size=1).embeddings[0], dtype=np.float32)  # (dim,)
    q /= max(float(np.linalg.norm(q)), 1e-12)

    best = np.empty(0, np.float32)  # scores of the running top-k
    where = np.empty(0, np.int64)  # their rows' positions in the index, to break ties by order
    found: list[tuple[Any, str]] = []  # their (id, text)
    done = 0
    columns = [info.id_column, info.text_column, info.embedding_column]
    for batch in open_parquet(Path(index), Path(index).name).iter_batches(batch_size=batch_rows, columns=columns):
        n = batch.num_rows
        values = batch.column(info.embedding_column).flatten()  # the batch's floats, row after row
        vectors = values.to_numpy(zero_copy_only=False).reshape(n, info.dim)  # (n, dim)
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # (n,), without an (n, dim) temporary
        scores = (vectors @ q) / np.maximum(norms, 1e-12)  # (n,) cosines
        top = _top_k(scores, np.arange(n), k)
        take = pa.array(top, pa.int64())
        found += list(zip(batch.column(info.id_column).take(take).to_pylist(),
                          batch.column(info.text_column).take(take).to_pylist()))
        best, where = np.concatenate([best, scores[top]]), np.concatenate([where, done + top])
        keep = _top_k(best, where, k)
        best, where, found = best[keep], where[keep], [found[i] for i in keep]
        done += n
        if progress is not None:
            progress(done, info.rows)
    return [Hit(rank, float(score), id_, text or "", info.id_column)
            for rank, (score, (id_, text)) in enumerate(zip(best, found), start=1)]


def _top_k(scores: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores``, highest first; equal scores by ascending ``order``."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th highest score
        candidates = np.flatnonzero(scores >= kth)  # k of them, or more where scores tie at kth
    else:
        candidates = np.arange(len(scores))
    ranked = np.lexsort((order[candidates], -scores[candidates]))
    return candidates[ranked[:k]]


def _query_encoder(info: IndexInfo, encoder: SentenceEncoder | None, name: str, trust: bool) -> SentenceEncoder:
    """The encoder to embed the query with: the one given, checked against the index, or the one it names."""
    made = info.encoder
    if encoder is None:
        model = made.get("model_name")
        if made.get("projection_dim"):
            raise ConfigError(f"{name} was embedded through a projection whose weights are not in the index: pass the "
                              "encoder that made it (search_index(..., encoder=...))")
        if model not in offered_encoders() and not trust:
            raise ConfigError(f"{name} names the encoder {model!r}, which is not one this machine offers "
                              f"({', '.join(offered_encoders())}); an index never makes Sentence Lab read another "
                              "folder. Add the name to SENTENCE_LAB_MODELS, or if you trust this index, pass "
                              "--trust-base-path (in Python: search_index(..., trust_base_path=True))")
        backbone, tokenizer = load_backbone(model, local_only=True)  # an index never makes us download
        encoder = SentenceEncoder(EncoderConfig.from_dict(made), backbone, tokenizer)
        if encoder.base_checksum != info.checksum:
            raise DataError(name, [f"the encoder {model!r} found here has other weights (checksum "
                                   f"{encoder.base_checksum[:12]}…) than the one that embedded the index "
                                   f"({info.checksum[:12]}…): search with that encoder, or embed the corpus again"])
        return encoder
    ours = encoder.config
    if (ours.model_name, ours.pooling, encoder.embedding_dim) != (made.get("model_name"), made.get("pooling"),
                                                                  info.dim):
        raise ConfigError(f"{name} was embedded with {made.get('model_name')} ({made.get('pooling')} pooling, "
                          f"{info.dim} dimensions), not {ours.model_name} ({ours.pooling} pooling, "
                          f"{encoder.embedding_dim} dimensions): search it with the encoder that made it")
    return encoder

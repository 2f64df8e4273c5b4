"""A corpus from disk: CSV and Parquet read in chunks, embedded into a Parquet index, searched; bad input refused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core.corpus import open_source
from core.errors import ConfigError, DataError, TextError
from core.index import INDEX_KEY, embed_corpus, read_index, search_index
from core.scoring import score_corpus
from tests.helpers import streaming_peak


def _write(tmp_path, content: str | bytes, name: str = "in.csv"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def _parquet(tmp_path, table: pa.Table, name: str = "in.parquet", **kwargs):
    path = tmp_path / name
    pq.write_table(table, path, **kwargs)
    return path


def _files(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model gains nothing from more, and loses much on a busy machine
    yield
    torch.set_num_threads(threads)


# The same five rows as a CSV and as a Parquet file: two blank texts (spaces; empty or null), a quoted comma
# and line break.
CSV_ROWS = ('id,text,label\n'
            '7,The striker scored twice,Sports\n'
            '8,   ,Business\n'
            '\n'                                   # a blank line is not a row
            '9,Shares fell sharply,Business\n'
            '10,"Rain, then\nsun",Weather\n'
            '11,,Other\n')
KEPT = ["The striker scored twice", "Shares fell sharply", "Rain, then\nsun"]


def _parquet_rows(tmp_path):
    table = pa.table({"id": pa.array([7, 8, 9, 10, 11], pa.int64()),
                      "text": ["The striker scored twice", "   ", "Shares fell sharply", "Rain, then\nsun", None],
                      "label": ["Sports", "Business", "Business", "Weather", "Other"],
                      "stars": pa.array([5.0, 1.5, 2.0, None, 3.0], pa.float64())})
    return _parquet(tmp_path, table)


# -- embed: what is written ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_each_kept_row_has_the_embedding_encoder_embed_gives_its_text(kind, tiny_encoder, tmp_path):
    src = _write(tmp_path, CSV_ROWS) if kind == "csv" else _parquet_rows(tmp_path)
    out = tmp_path / "index.parquet"
    summary = embed_corpus(tiny_encoder, src, out, chunk_rows=2)

    assert (summary.rows, summary.embedded, summary.blank, summary.truncated, summary.dim) == (5, 3, 2, 0, 32)
    assert (summary.text_column, summary.id_column, summary.out) == ("text", "id", out)
    table = pq.read_table(out)
    columns = ["id", "text", "label"] + (["stars"] if kind == "parquet" else []) + ["embedding", "truncated"]
    assert table.column_names == columns  # an id column: no row number is added
    ids = ["7", "9", "10"] if kind == "csv" else [7, 9, 10]  # a CSV's cells are text; Parquet keeps its types
    assert table.column("id").to_pylist() == ids
    assert table.column("text").to_pylist() == KEPT
    assert table.column("label").to_pylist() == ["Sports", "Business", "Weather"]
    if kind == "parquet":
        assert table.column("stars").to_pylist() == [5.0, 2.0, None]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert table.column("truncated").to_pylist() == [False, False, False]
    stored = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    expected = tiny_encoder.embed(KEPT).embeddings
    assert stored.shape == (3, 32) and np.abs(stored - expected).max() <= 1e-6


def test_without_an_id_column_rows_are_known_by_their_number(tiny_encoder, tmp_path):
    # Data rows: A is 1, B 2, the blank one 3 (skipped), C 4; a blank line is not a row.
    src = _write(tmp_path, "text,row\nA cat sat.,x\nA dog ran.,y\n\n  ,z\nA bird sang.,w\n")
    embed_corpus(tiny_encoder, src, tmp_path / "index.parquet")
    table = pq.read_table(tmp_path / "index.parquet")
    # 'row' is the input's own column: the added one gets a prefix instead of replacing it
    assert table.column_names == ["text", "row", "index_row", "embedding", "truncated"]
    assert table.column("index_row").to_pylist() == [1, 2, 4]
    assert table.column("row").to_pylist() == ["x", "y", "w"]
    info = read_index(tmp_path / "index.parquet")
    assert (info.id_column, info.text_column, info.embedding_column, info.rows) == ("index_row", "text", "embedding", 3)


def test_the_index_records_the_encoder_that_made_it(tiny_encoder, tmp_path):
    encoder = tiny_encoder.with_settings(normalize=True, pooling="cls")
    embed_corpus(encoder, _write(tmp_path, "text\nOne sentence.\n"), tmp_path / "index.parquet")
    meta = json.loads(pq.read_schema(tmp_path / "index.parquet").metadata[INDEX_KEY])
    assert meta["encoder"] == encoder.config.to_dict()
    assert (meta["encoder"]["model_name"], meta["encoder"]["pooling"], meta["normalized"], meta["dim"]) == (
        "tiny-bert", "cls", True, 32)
    vector = np.array(pq.read_table(tmp_path / "index.parquet").column("embedding").to_pylist()[0])
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_chunk_size_changes_nothing_in_the_index(tiny_encoder, tmp_path):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" for i in range(10)]
    lines = [f"{t},{i}" for i, t in enumerate(texts)]
    src = _write(tmp_path, "text,n\n" + "\n".join(lines[:4] + ["  ,blank"] + lines[4:]) + "\n")
    seen = []
    embed_corpus(tiny_encoder, src, tmp_path / "small.parquet", chunk_rows=3, batch_size=1,
                 progress=lambda done, total: seen.append((done, total)))
    embed_corpus(tiny_encoder, src, tmp_path / "large.parquet", chunk_rows=1000, batch_size=1)
    small, large = pq.read_table(tmp_path / "small.parquet"), pq.read_table(tmp_path / "large.parquet")
    # batch_size=1: every text is its own forward pass, so the numbers are identical, not merely close
    assert small.equals(large, check_metadata=True) and small.num_rows == 10
    assert pq.ParquetFile(tmp_path / "small.parquet").num_row_groups == 4  # written a chunk at a time
    assert seen == [(3, 11), (6, 11), (9, 11), (11, 11)]


def test_long_texts_are_flagged_truncated(tiny_encoder, tmp_path):
    src = _write(tmp_path, "text\nshort one\n" + "word " * 100 + "\n")  # 100 words: past the tiny encoder's 64 tokens
    summary = embed_corpus(tiny_encoder, src, tmp_path / "index.parquet")
    assert summary.truncated == 1
    assert pq.read_table(tmp_path / "index.parquet").column("truncated").to_pylist() == [False, True]


def test_memory_stays_the_same_for_ten_times_the_rows(tiny_encoder, tmp_path, one_thread):
    """Streaming, as behaviour: the Python memory peak while embedding 10,000 rows is about that of 1,000."""
    def peak(rows: int) -> int:
        return streaming_peak(tmp_path, rows, lambda src: embed_corpus(
            tiny_encoder, src, tmp_path / "index.parquet", chunk_rows=500, batch_size=100))

    peak(500)  # warm up: lazy imports and the tokenizer's first calls
    small, large = peak(1_000), peak(10_000)
    assert pq.ParquetFile(tmp_path / "index.parquet").metadata.num_rows == 10_000
    assert large < 1.5 * small, (small, large)


# -- bad input: told before any work, nothing left behind ---------------------------------------------


def _not_utf8_parquet(tmp_path):
    """A Parquet string column whose second value is not UTF-8, as a careless writer can leave it."""
    data = b"fine" + b"bad \xff"
    bad = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 4, 9], np.int32).tobytes()),
                                                 pa.py_buffer(data)])
    return _parquet(tmp_path, pa.table({"text": bad}))


@pytest.mark.parametrize("make, message", [
    (lambda p: _write(p, "id,body\n1,A goal.\n"),
     "in.csv: row 1: no 'text' or 'sentence' column; name the column that holds the text, one of ['id', 'body']"),
    (lambda p: _write(p, ""), "in.csv: the file is empty; expected a header row naming its columns"),
    (lambda p: _write(p, b"text\nfine\nbad \xff byte\n"), "in.csv: row 3: not UTF-8 text (byte 14 cannot be decoded)"),
    (lambda p: _write(p, b"", "in.parquet"), "in.parquet: the file is empty (0 bytes); expected a Parquet file"),
    (lambda p: _write(p, "text\nnot parquet\n", "in.parquet"), "in.parquet: cannot be read as Parquet ("),
    (lambda p: _parquet(p, pa.table({"id": [1, 2], "text": [3, 4]})),
     "in.parquet: in its schema: column 'text' holds int64 values, not text; name the column that holds the text"),
    (lambda p: _parquet(p, pa.table({"id": [1], "body": ["x"]})),
     "in.parquet: in its schema: no 'text' or 'sentence' column"),
    (_not_utf8_parquet, "in.parquet: row 2, column 'text': not UTF-8 text"),
    (lambda p: _write(p, "id,text\n1,\n2,   \n"), "in.csv: column 'text': every text is blank (2 rows)"),
])
def test_bad_input_is_one_clear_error_and_leaves_no_file(make, message, tiny_encoder, tmp_path):
    src = make(tmp_path)
    with pytest.raises(DataError) as error:
        embed_corpus(tiny_encoder, src, tmp_path / "index.parquet")
    assert str(error.value).startswith(message), str(error.value)
    assert _files(tmp_path) == [src.name]


def test_a_parquet_column_named_for_the_text_is_found_case_insensitively(tiny_encoder, tmp_path):
    src = _parquet(tmp_path, pa.table({"Body": ["A goal."], "n": [1]}))
    assert open_source(src, text_column="body").text_column == "Body"
    message = r"^in\.parquet: in its schema: no column 'review'; the columns are \['Body', 'n'\]"
    with pytest.raises(DataError, match=message):
        open_source(src, text_column="review")


@pytest.mark.parametrize("out, message", [
    ("index.csv", "index.csv: an index is a Parquet file: name it index.parquet"),
    ("in.csv", "in.csv is the input file: write the index to another file"),
    ("", "the file to write the index to is empty: name one, e.g. --out index.parquet"),
])
def test_the_index_file_is_checked_before_any_work(out, message, tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "text\nA goal.\n")
    monkeypatch.setattr(tiny_encoder, "embed", lambda *a, **k: pytest.fail("embedded before checking --out"))
    with pytest.raises(ConfigError, match=message):
        embed_corpus(tiny_encoder, "in.csv", out)
    assert _files(tmp_path) == ["in.csv"]


def test_repeated_column_names_are_refused_for_parquet_before_anything_is_written(tiny_encoder, tmp_path):
    src = _write(tmp_path, "note,note,text\na,b,A goal.\n")  # fine in a CSV, impossible in Parquet
    with pytest.raises(ConfigError, match=r"^columns \['note'\] appear more than once, which Parquet cannot store"):
        embed_corpus(tiny_encoder, src, tmp_path / "index.parquet")
    assert _files(tmp_path) == ["in.csv"]


@pytest.mark.parametrize("failure", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_a_failure_midway_leaves_the_old_index_as_it_was_and_no_temporary_file(failure, tiny_encoder, tmp_path,
                                                                                monkeypatch):
    src = _write(tmp_path, "text\n" + "a sentence\n" * 5)
    out = _write(tmp_path, "the old index\n", "index.parquet")
    embed, calls = tiny_encoder.embed, []

    def fails_on_the_second_chunk(texts, **kwargs):
        calls.append(texts)
        if len(calls) == 2:
            raise failure
        return embed(texts, **kwargs)

    monkeypatch.setattr(tiny_encoder, "embed", fails_on_the_second_chunk)
    with pytest.raises(type(failure)):
        embed_corpus(tiny_encoder, src, out, chunk_rows=2)
    assert len(calls) == 2
    assert out.read_text() == "the old index\n"
    assert _files(tmp_path) == ["in.csv", "index.parquet"]


# -- search ---------------------------------------------------------------------------------------------


def test_search_ranks_every_row_by_cosine_across_batches(tiny_encoder, tmp_path):
    texts = [f"text {i} {word}" for i, word in enumerate("apple river stone cloud piano tiger lemon glass".split())]
    src = _write(tmp_path, "text\n" + "\n".join(texts) + "\n")
    embed_corpus(tiny_encoder, src, tmp_path / "index.parquet", chunk_rows=3)
    vectors = tiny_encoder.embed(texts).embeddings
    query = "text 2 stone and a cloud"
    q = tiny_encoder.embed([query]).embeddings[0]
    cosines = vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    expected = list(np.argsort(-cosines, kind="stable")[:5])

    for batch_rows in (1, 2, 1000):  # a running top-k merged batch after batch gives the one full sort
        hits = search_index(tmp_path / "index.parquet", query, k=5, encoder=tiny_encoder, batch_rows=batch_rows)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert [h.id for h in hits] == [i + 1 for i in expected]
        assert [h.text for h in hits] == [texts[i] for i in expected]
        assert [h.score for h in hits] == pytest.approx([float(cosines[i]) for i in expected], abs=1e-5)
    assert hits[0].to_dict() == {"rank": 1, "score": hits[0].score, "row": expected[0] + 1, "text": texts[expected[0]]}
    assert len(search_index(tmp_path / "index.parquet", query, k=50, encoder=tiny_encoder)) == 8  # k past the rows


def test_a_repeated_text_is_found_twice_with_the_same_score(tiny_encoder, tmp_path):
    src = _write(tmp_path, "text\nthe same words\nsomething else entirely\nthe same words\n")
    embed_corpus(tiny_encoder, src, tmp_path / "index.parquet", batch_size=1)  # alone in its batch: no padding
    first, second, third = search_index(tmp_path / "index.parquet", "the same words", k=3, encoder=tiny_encoder)
    assert {first.id, second.id} == {1, 3} and third.id == 2
    assert first.score == pytest.approx(1.0, abs=1e-5) and second.score == pytest.approx(first.score, abs=1e-6)


@pytest.mark.parametrize("index, query, k, error, message", [
    ("missing.parquet", "q", 3, DataError, r"^missing\.parquet: file not found"),
    ("plain.parquet", "q", 3, DataError, r"^plain\.parquet: not an index made by `python -m core embed`"),
    ("index.parquet", "q", 0, ConfigError, r"^k must be a whole number >= 1, got 0"),
    ("index.parquet", "  ", 3, TextError, r"^the query is empty"),
])
def test_search_errors_say_what_to_change(index, query, k, error, message, tiny_encoder, tmp_path):
    embed_corpus(tiny_encoder, _write(tmp_path, "text\nA goal.\n"), tmp_path / "index.parquet")
    _parquet(tmp_path, pa.table({"text": ["x"]}), "plain.parquet")
    with pytest.raises(error, match=message):
        search_index(tmp_path / index, query, k, encoder=tiny_encoder)


def test_search_refuses_an_encoder_other_than_the_one_that_made_the_index(tiny_encoder, tmp_path):
    embed_corpus(tiny_encoder, _write(tmp_path, "text\nA goal.\n"), tmp_path / "index.parquet")
    message = r"was embedded with tiny-bert \(mean pooling, 32 dimensions\), not tiny-bert \(cls pooling"
    with pytest.raises(ConfigError, match=message):
        search_index(tmp_path / "index.parquet", "goal", encoder=tiny_encoder.with_settings(pooling="cls"))


def test_search_loads_only_an_encoder_this_machine_offers_with_the_weights_that_made_the_index(tiny_encoder_dir,
                                                                                              tmp_path, monkeypatch):
    from core.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    index = tmp_path / "index.parquet"
    embed_corpus(encoder, _write(tmp_path, "text\nA goal in the final.\nShares fell.\n"), index)
    assert [h.id for h in search_index(index, "Shares fell.", k=1)] == [2]  # offered (conftest lists the folder)

    monkeypatch.delenv("SENTENCE_LAB_MODELS")  # a file never makes us read a folder this machine does not offer
    with pytest.raises(ConfigError, match=f"index.parquet names the encoder '{tiny_encoder_dir}', which is not one "
                                          "this machine offers .*pass --trust-base-path"):
        search_index(index, "Shares fell.", k=1)
    assert [h.id for h in search_index(index, "Shares fell.", k=1, trust_base_path=True)] == [2]

    table = pq.read_table(index)  # the same name, other weights: told, not searched with wrong vectors
    meta = json.loads(table.schema.metadata[INDEX_KEY]) | {"checksum": "0" * 64}
    pq.write_table(table.replace_schema_metadata({INDEX_KEY: json.dumps(meta)}), index)
    with pytest.raises(DataError, match=r"^index\.parquet: the encoder '.*' found here has other weights \(checksum "):
        search_index(index, "Shares fell.", k=1, trust_base_path=True)


TOPICS = [
    "The striker scored a late goal to win the football match.",
    "The central bank raised interest rates to fight inflation.",
    "Bake the bread at 220 degrees until the crust is golden brown.",
    "The new smartphone has a faster processor and a better camera.",
    "Heavy rain and strong winds are expected along the coast tomorrow.",
    "The patient was given antibiotics for a bacterial infection.",
    "The orchestra played Beethoven's ninth symphony last night.",
    "Astronomers discovered a planet orbiting a distant star.",
]


@pytest.mark.parametrize("query, nearest", [
    ("Who won the soccer game?", [0]),
    ("weather forecast: a storm is coming", [4]),
    ("how to make a loaf in the oven", [2]),
])
def test_search_finds_the_sentence_on_the_querys_topic(query, nearest, real_encoder, tmp_path):
    encoder = real_encoder.with_settings(normalize=True)  # as embed --input makes an index
    src = _write(tmp_path, "id,text\n" + "".join(f"t{i},{t}\n" for i, t in enumerate(TOPICS)))
    embed_corpus(encoder, src, tmp_path / "index.parquet", chunk_rows=3)
    hits = search_index(tmp_path / "index.parquet", query, k=3, encoder=encoder, batch_rows=3)
    assert [h.text for h in hits[:len(nearest)]] == [TOPICS[i] for i in nearest]
    assert hits[0].id == f"t{nearest[0]}" and hits[0].to_dict()["id"] == f"t{nearest[0]}"
    q, first = encoder.encode(query), encoder.encode(TOPICS[nearest[0]])
    assert hits[0].score == pytest.approx(float(q @ first), abs=1e-5)  # unit vectors: the dot product is the cosine
    assert hits[0].score > hits[1].score + 0.1  # clearly nearer than the next


# -- predict through the same reading and writing --------------------------------------------------------


def test_predict_reads_parquet_and_writes_typed_parquet(tiny_model, tmp_path):
    out = tmp_path / "scored.parquet"
    summary = score_corpus(tiny_model, _parquet_rows(tmp_path), out, batch_size=2)
    assert (summary.rows, summary.scored, summary.blank) == (5, 3, 2)
    table = pq.read_table(out)
    classes = tiny_model.class_names
    assert table.column_names == ["id", "text", "label", "stars", "topic", "topic_confidence", "topic_unsure",
                                  *(f"p_{c}" for c in classes), "sentiment", "truncated"]
    types = {name: str(table.schema.field(name).type) for name in table.column_names}
    assert types == {"id": "int64", "text": "string", "label": "string", "stars": "double", "topic": "string",
                     "topic_confidence": "double", "topic_unsure": "bool", **{f"p_{c}": "double" for c in classes},
                     "sentiment": "double", "truncated": "bool"}
    expected = tiny_model.predict(KEPT)
    rows = table.to_pylist()
    assert [r["topic"] for r in rows] == [expected[0].label, None, expected[1].label, expected[2].label, None]
    for row, p in zip([rows[0], rows[2], rows[3]], expected):
        # scored two rows at a time, predicted three at once: the same numbers to float32's last digits
        assert row["topic_confidence"] == pytest.approx(p.probabilities[p.label], abs=1e-6)
        assert row["sentiment"] == pytest.approx(p.sentiment, abs=1e-6)
        assert row["topic_unsure"] is p.unsure and row["truncated"] is False
    assert all(rows[1][name] is None for name in table.column_names[4:])  # a blank text: its answers are null


def test_predict_writes_the_same_csv_from_a_parquet_file_as_from_the_csv(tiny_model, tmp_path):
    """The CSV output does not depend on the input's format: one path reads both."""
    parquet = _parquet(tmp_path, pa.table({"id": pa.array([7, 8, 9], pa.int64()),
                                           "text": ["The striker scored twice", None, "Shares fell sharply"]}))
    csv_in = _write(tmp_path, "id,text\n7,The striker scored twice\n8,\n9,Shares fell sharply\n")
    score_corpus(tiny_model, parquet, tmp_path / "a.csv")
    score_corpus(tiny_model, csv_in, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    with open(tmp_path / "a.csv", encoding="utf-8", newline="") as f:
        assert [r[:2] for r in csv.reader(f)][1:] == [["7", "The striker scored twice"], ["8", ""],
                                                     ["9", "Shares fell sharply"]]


# -- the command line ---------------------------------------------------------------------------------


def test_cli_embeds_a_file_and_searches_the_index(tiny_encoder_dir, tmp_path, capsys):
    from core.__main__ import main

    src = _write(tmp_path, "text,topic\nThe striker scored twice.,Sports\n,none\nShares fell sharply.,Business\n"
                           "A new phone was launched.,Tech\n")
    index = tmp_path / "index.parquet"
    assert main(["embed", "--input", str(src), "--out", str(index), "--model", str(tiny_encoder_dir),
                 "--chunk-rows", "2", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {k: summary[k] for k in ("input", "out", "rows", "embedded", "blank", "truncated", "dim", "id_column")} == {
        "input": str(src), "out": str(index), "rows": 4, "embedded": 3, "blank": 1, "truncated": 0, "dim": 32,
        "id_column": "row"}
    assert summary["seconds"] >= 0 and summary["rows_per_second"] >= 0

    # the encoder is the one the index names (the tiny BERT's folder), loaded by search itself
    assert main(["search", "--index", str(index), "Shares fell sharply.", "--k", "2", "--json", "--quiet"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [(h["rank"], h["row"], h["text"]) for h in hits][0] == (1, 3, "Shares fell sharply.")
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5) and len(hits) == 2 and hits[1]["score"] < hits[0]["score"]

    assert main(["search", "--index", str(index), "Shares fell sharply.", "--k", "1", "--quiet"]) == 0
    assert capsys.readouterr().out == "  1. 1.0000  row 3: 'Shares fell sharply.'\n"


@pytest.mark.parametrize("args, message", [
    (["embed", "--input", "in.csv", "--out", "index.csv"],
     "index.csv: an index is a Parquet file: name it index.parquet"),
    (["embed", "--input", "in.csv"], "--input needs --out FILE.parquet, the index to write"),
    (["embed", "--out", "index.parquet"], "--out and --text-column go with --input FILE"),
    (["embed", "hello", "--input", "in.csv", "--out", "index.parquet"], "or a CSV or Parquet file to embed as --input, "
                                                                        "not both"),
    (["embed", "--input", "in.csv", "--out", "index.parquet", "--text-column", "body"],
     "in.csv: row 1: no column 'body'; the columns are ['id', 'text']"),
    (["predict", "--input", "in.csv", "--csv", "in.csv", "--out", "o.csv"], "--csv is the old name of --input"),
    (["predict", "--input", "in.csv"], "--input needs --out FILE.csv, the file to write the scored rows to"),
    (["search", "--index", "missing.parquet", "query"], "missing.parquet: file not found"),
    (["search", "--index", "in.csv", "query"], "in.csv: cannot be read as Parquet ("),
    (["search", "--index", "in.csv", "query"], "make an index with: python -m core embed --input FILE --out in.parquet"),
    (["search", "--index", "index.parquet", "query", "--k", "0"], "k must be a whole number >= 1, got 0"),
])
def test_cli_bad_input_is_one_line_before_any_model_loads(args, message, tmp_path, monkeypatch, capsys):
    from core.__main__ import main
    from core.encoder import SentenceEncoder
    from core.model import MultiTaskModel

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("id,text\n1,A goal in the final.\n")
    monkeypatch.setattr(SentenceEncoder, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model first"))
    monkeypatch.setattr(MultiTaskModel, "load", lambda *a, **k: pytest.fail("loaded a model first"))
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]

"""Scoring a whole CSV: the columns written, blank rows, errors that name the row, bounded memory."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from core.config import HeadsConfig
from core.data import DataError, read_csv
from core.errors import SentenceLabError
from core.model import MultiTaskModel
from core.scoring import ScoreSummary, scan_csv, score_csv
from tests.helpers import streaming_peak, make_tiny_encoder


def _write(tmp_path, content: str | bytes, name: str = "in.csv"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def _rows(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model gains nothing from more, and loses much on a busy machine
    yield
    torch.set_num_threads(threads)


# -- what is written ------------------------------------------------------------------------


def test_every_row_is_written_with_the_models_answers_and_blank_texts_are_kept(tiny_model, tmp_path):
    src = _write(tmp_path, 'id,Text,label\n'
                           '1,The striker scored twice,Sports\n'
                           '2,  ,Business\n'                   # blank text: kept, nothing added
                           '\n'                                # a blank line is not a row
                           '3,"Rain, then\nsun",\n'            # a quoted comma and line break
                           '4,Shares fell\n')                  # a short row: its missing cell is empty
    out = tmp_path / "out.csv"
    summary = score_csv(tiny_model, src, out, batch_size=2)

    classes = tiny_model.class_names
    added = ["topic", "topic_confidence", "topic_unsure", *(f"p_{c}" for c in classes), "sentiment", "truncated"]
    assert summary == ScoreSummary(rows=4, scored=3, blank=1, truncated=0, columns_added=added, out=out,
                                   text_column="Text")
    header, *rows = _rows(out)
    assert header == ["id", "Text", "label", *added]
    assert [r[:3] for r in rows] == [["1", "The striker scored twice", "Sports"], ["2", "  ", "Business"],
                                     ["3", "Rain, then\nsun", ""], ["4", "Shares fell", ""]]
    assert rows[1][3:] == [""] * len(added)
    expected = tiny_model.predict(["The striker scored twice", "Rain, then\nsun", "Shares fell"])
    for row, p in zip([rows[0], rows[2], rows[3]], expected):
        cells = dict(zip(added, row[3:]))
        assert cells["topic"] == p.label and cells["truncated"] == "false"
        assert float(cells["topic_confidence"]) == pytest.approx(p.probabilities[p.label], abs=1e-4)
        assert cells["topic_unsure"] == ("true" if p.unsure else "false")
        for c in classes:
            assert float(cells[f"p_{c}"]) == pytest.approx(p.probabilities[c], abs=1e-4)
            assert len(cells[f"p_{c}"].split(".")[1]) == 4  # 4 decimals
        assert float(cells["sentiment"]) == pytest.approx(p.sentiment, abs=1e-4)


def test_only_the_models_tasks_are_added_and_a_name_in_use_is_not_reused(tokenizer, tmp_path):
    torch.manual_seed(0)
    sentiment_only = MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=[], sentiment=True))
    src = _write(tmp_path, "text,Sentiment,topic\nWhat a dreadful film,-0.8,Film\n" + "word " * 100 + ",,\n")
    summary = score_csv(sentiment_only, src, tmp_path / "out.csv")
    header, first, long = _rows(tmp_path / "out.csv")
    assert header == ["text", "Sentiment", "topic", "predicted_sentiment", "truncated"]
    assert summary.columns_added == ["predicted_sentiment", "truncated"]
    assert first[:3] == ["What a dreadful film", "-0.8", "Film"] and first[4] == "false"
    assert long[4] == "true" and summary.truncated == 1  # 100 words are more than the encoder's 64 tokens


@pytest.mark.parametrize("header, text_column, expected", [
    ("id,Sentence", None, 1),
    ("review", None, 0),                  # the only column
    ("sentence,TEXT,id", None, 1),        # 'text' before 'sentence'
    ("id,Body", "body", 1),               # named, case-insensitive
])
def test_the_text_column(header, text_column, expected, tmp_path):
    scan = scan_csv(_write(tmp_path, header + "\n" + ",".join(["x"] * len(header.split(","))) + "\n"),
                    text_column=text_column)
    assert scan.text_index == expected and scan.rows == 1


@pytest.mark.parametrize("header, text_column, message", [
    ("id,review", None, "in.csv: row 1: no 'text' or 'sentence' column; name the column that holds the text, "
                        "one of ['id', 'review']"),
    ("id,review", "body", "in.csv: row 1: no column 'body'; the columns are ['id', 'review']"),
    ("text,id,Text", None, "in.csv: row 1: column 'text' appears 2 times"),
    ("text;label", None, "in.csv: row 1: one column named 'text;label': the file seems to use another delimiter"),
    ("", None, "in.csv: the file is empty; expected a header row naming its columns"),
    (",,", None, "in.csv: row 1: the header row has no column names"),
])
def test_a_text_column_that_cannot_be_told_is_a_clear_error(header, text_column, message, tmp_path):
    with pytest.raises(DataError) as error:
        scan_csv(_write(tmp_path, header + ("\nx\n" if header else "")), text_column=text_column)
    assert str(error.value).startswith(message), str(error.value)


# -- read as read_csv reads ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    pytest.param(b"text,label\r\nfine,a\r\n\"two\r\nlines\",b\r\n", id="CRLF"),
    pytest.param(b"text,label\rfine,a\r\"two\rlines\",b\r", id="CR only (old Mac)"),
    pytest.param("\ufefftext,label\nfine,a\n\"two\nlines\",b\n".encode(), id="UTF-8 with a byte-order mark"),
])
def test_line_endings_and_a_byte_order_mark_are_read_as_read_csv_reads_them(content, tiny_model, tmp_path):
    src = _write(tmp_path, content)
    score_csv(tiny_model, src, tmp_path / "out.csv")
    header, *rows = _rows(tmp_path / "out.csv")
    assert header[:2] == ["text", "label"]
    assert [r[0] for r in rows] == read_csv(src).texts


LINE = b"x" * 21 + b",a\r\n"  # 25 bytes: 12 + 2621 * 25 = 65537, so a \r\n straddles the first 64 KiB block


@pytest.mark.parametrize("content", [
    pytest.param("text,label\nfine,a\n".encode("utf-16"), id="UTF-16"),
    pytest.param("text,label\nfine,a\n".encode("utf-16-le"), id="UTF-16 without a byte-order mark"),
    pytest.param(b"PK\x03\x04 workbook", id="xlsx"),
    pytest.param(b"\xd0\xcf\x11\xe0 workbook", id="xls"),
    pytest.param(b"%PDF-1.7", id="PDF"),
    pytest.param("text,label\nfine,a\n".encode("utf-16-be"), id="UTF-16 big-endian"),
    pytest.param(b"text,label\nfine,a\nbad \xff byte,b\n", id="not UTF-8 on row 3"),
    pytest.param(b"text,label\r\n" + LINE * 3000 + b"bad \xe9,b\r\n", id="not UTF-8 after a CRLF split between blocks"),
    pytest.param(b"text,label\r" + b"x" * 65524 + b"\xc3,a\rok,b\r", id="a character cut at the end of the first block"),
    pytest.param(b'text,label\nfine,a\n"never closed,b\nmore,c\n', id="unclosed quote"),
    pytest.param(b"text,label\nfine,a\nRain, then sun,b\n", id="a row with more fields than the header"),
])
def test_a_file_read_csv_refuses_is_refused_in_the_same_words(content, tmp_path):
    src = _write(tmp_path, content)
    with pytest.raises(DataError) as expected:
        read_csv(src)
    with pytest.raises(DataError) as error:
        scan_csv(src)
    assert error.value.problems == expected.value.problems


def test_a_folder_or_a_missing_file_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"^folder: this is a folder, not a regular file"):
        scan_csv(tmp_path / "folder")
    with pytest.raises(DataError, match=r"^missing\.csv: file not found"):
        scan_csv(tmp_path / "missing.csv")


# -- limits, the output file, progress --------------------------------------------------------


def test_more_rows_than_the_limit_are_refused_before_anything_is_scored(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_model, "predict", lambda *a, **k: pytest.fail("scored before checking max_rows"))
    src = _write(tmp_path, "text\n" + "a sentence\n" * 5)
    with pytest.raises(DataError, match=r"^in\.csv: 5 data rows; the limit here is 4$"):
        score_csv(tiny_model, src, tmp_path / "out.csv", max_rows=4)
    assert not (tmp_path / "out.csv").exists()
    monkeypatch.undo()
    assert score_csv(tiny_model, src, tmp_path / "out.csv", max_rows=5).rows == 5


def test_the_input_itself_or_a_folder_is_refused_as_the_output(tiny_model, tmp_path):
    src = _write(tmp_path, "text\na sentence\n")
    os.link(src, tmp_path / "same.csv")
    for out, message in [(src, "is the input file"), (tmp_path / "same.csv", "is the input file"),
                         (tmp_path, "is a folder: name a file to write"),
                         ("", "the file to write the scores to is empty")]:
        with pytest.raises(SentenceLabError, match=message):
            score_csv(tiny_model, src, out)
    assert src.read_text() == "text\na sentence\n"


def test_a_failure_midway_leaves_the_old_output_as_it_was_and_no_half_file(tiny_model, tmp_path, monkeypatch):
    src = _write(tmp_path, "text\n" + "a sentence\n" * 5)
    out = _write(tmp_path, "the old scores\n", "out.csv")
    predict, calls = tiny_model.predict, []

    def fails_on_the_second_batch(texts, **kwargs):
        calls.append(texts)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return predict(texts, **kwargs)

    monkeypatch.setattr(tiny_model, "predict", fails_on_the_second_batch)
    with pytest.raises(RuntimeError, match="out of memory"):
        score_csv(tiny_model, src, out, batch_size=2)
    assert out.read_text() == "the old scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_progress_is_told_after_each_batch(tiny_model, tmp_path):
    src = _write(tmp_path, "text\n" + "a sentence\n" * 5)
    seen = []
    score_csv(tiny_model, src, tmp_path / "sub" / "out.csv", batch_size=2,
              progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert len(_rows(tmp_path / "sub" / "out.csv")) == 6


def test_memory_stays_the_same_for_ten_times_the_rows(tiny_model, tmp_path, one_thread):
    """Streaming, as behaviour: the peak of Python memory while scoring 20,000 rows is about that of 2,000."""
    def peak(rows: int) -> int:
        return streaming_peak(tmp_path, rows, lambda src: score_csv(
            tiny_model, src, tmp_path / "out.csv", batch_size=500))

    peak(1_000)  # warm up: lazy imports and the tokenizer's first calls
    small, large = peak(2_000), peak(20_000)
    assert len(_rows(tmp_path / "out.csv")) == 20_001
    # Holding the rows would take ten times the memory; a batch at a time takes the same.
    assert large < 1.5 * small, (small, large)


def test_the_page_guesses_the_text_column_by_its_longest_cells(tmp_path):
    from core.scoring import guess_text_column

    path = tmp_path / "reviews.csv"
    path.write_text("id,comment,stars\n1,A fine film with a moving end.,5\n2,Dull.,1\n", encoding="utf-8")
    assert guess_text_column(path) == "comment"
    (tmp_path / "empty.csv").write_text("id,comment\n", encoding="utf-8")
    assert guess_text_column(tmp_path / "empty.csv") is None and guess_text_column(tmp_path / "missing.csv") is None

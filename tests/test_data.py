"""Data: CSV loading and its errors, MultiTaskDataset, the synthetic generator, the real-set readers."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pytest
import torch

from core.data import MAX_ERRORS_SHOWN, DataError, MultiTaskDataset, read_csv
from core.datasets import load_ag_news, load_sst, make_synthetic, read_sts
from core.losses import IGNORE_LABEL


def _write(tmp_path, content: str | bytes, name: str = "data.csv"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# -- read_csv: valid files ------------------------------------------------------------------


def test_read_csv_loads_label_only_sentiment_only_and_both(tmp_path):
    path = _write(tmp_path, "text,label,sentiment\n"
                            "The striker scored twice,Sports,\n"        # label only
                            "What a dreadful film,,-0.8\n"              # sentiment only
                            "Shares rallied strongly,Business,0.6\n"    # both
                            '"Rain, then sun",World, 0.25 \n')          # quoted comma, padded number
    data = read_csv(path)
    assert data.texts == ["The striker scored twice", "What a dreadful film", "Shares rallied strongly",
                          "Rain, then sun"]
    assert data.labels == ["Sports", None, "Business", "World"]
    assert data.sentiments == [None, -0.8, 0.6, 0.25]
    assert all(s is None or isinstance(s, float) for s in data.sentiments)
    assert data.class_names == ["Business", "Sports", "World"]
    assert data.tasks == ("classification", "sentiment")
    assert data.rows == ["data.csv row 2", "data.csv row 3", "data.csv row 4", "data.csv row 5"]


def test_read_csv_label_only_file_and_header_case(tmp_path):
    data = read_csv(_write(tmp_path, "Text,LABEL\nhello,b\nworld,a\n"))
    assert data.labels == ["b", "a"]
    assert data.sentiments == [None, None]
    assert data.class_names == ["a", "b"]
    assert data.tasks == ("classification",)


def test_read_csv_sentiment_only_file(tmp_path):
    data = read_csv(_write(tmp_path, "sentiment,text\n0.1,good enough\n1,great\n"))
    assert data.texts == ["good enough", "great"]
    assert data.sentiments == [0.1, 1.0]
    assert data.labels == [None, None]
    assert data.class_names == []
    assert data.tasks == ("sentiment",)


def test_read_csv_accepts_a_byte_order_mark(tmp_path):
    path = _write(tmp_path, "\ufefftext,label\nhello,A\n".encode("utf-8"))
    data = read_csv(path)
    assert data.texts == ["hello"]
    assert data.labels == ["A"]


def test_read_csv_accepts_a_file_object_and_skips_blank_lines():
    data = read_csv(io.StringIO("text,label\none,A\n\ntwo,B\n"), name="upload.csv")
    assert data.texts == ["one", "two"]
    assert data.rows == ["upload.csv row 2", "upload.csv row 4"]  # the blank line is spreadsheet row 3


def test_read_csv_reads_old_mac_line_endings(tmp_path):
    # \r alone ends a line in files from classic Mac OS (and some exporters); a quoted cell may still span lines.
    data = read_csv(_write(tmp_path, b'text,label\rA cat.,pets\r"A dog,\ron two lines.",dogs\r\rA cow.,farm'))
    assert data.texts == ["A cat.", "A dog,\ron two lines.", "A cow."]
    assert data.rows == ["data.csv row 2", "data.csv row 3", "data.csv row 5"]


# -- read_csv: errors name the row and column -----------------------------------------------


def test_missing_text_column(tmp_path):
    with pytest.raises(DataError, match=r"row 1: no 'text' column"):
        read_csv(_write(tmp_path, "sentence,label\nhi,A\n"))


def test_neither_label_nor_sentiment_column(tmp_path):
    with pytest.raises(DataError, match=r"row 1: needs a 'label' or a 'sentiment' column"):
        read_csv(_write(tmp_path, "text,score\nhi,0.5\n"))


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"data\.csv: the file is empty"):
        read_csv(_write(tmp_path, ""))


def test_header_only(tmp_path):
    with pytest.raises(DataError, match=r"header but no data rows"):
        read_csv(_write(tmp_path, "text,label\n"))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_csv(tmp_path / "nope.csv")


def test_empty_text_names_the_spreadsheet_row(tmp_path):
    # the header is row 1, so the first data row is row 2
    with pytest.raises(DataError, match=r"row 2, column 'text': empty text") as info:
        read_csv(_write(tmp_path, "text,label\n   ,A\nfine,B\n"))
    assert info.value.problems == ["row 2, column 'text': empty text"]


def test_empty_text_in_a_later_row(tmp_path):
    with pytest.raises(DataError, match=r"row 4, column 'text'"):
        read_csv(_write(tmp_path, "text,label\na,A\nb,B\n,C\n"))


def test_row_numbers_count_a_multiline_cell_as_one_row(tmp_path):
    # A quoted text spanning two lines is one spreadsheet row (row 2); the empty text below it is row 3.
    path = _write(tmp_path, 'text,label\n"first line\nsecond line",A\n,B\n')
    with pytest.raises(DataError, match=r"row 3, column 'text': empty text"):
        read_csv(path)


def test_row_with_neither_label_nor_sentiment(tmp_path):
    with pytest.raises(DataError, match=r"row 3, columns 'label'/'sentiment': the row has neither"):
        read_csv(_write(tmp_path, "text,label,sentiment\na,A,\nb,,\n"))


def test_non_numeric_sentiment(tmp_path):
    with pytest.raises(DataError, match=r"row 2, column 'sentiment': 'abc' is not a number"):
        read_csv(_write(tmp_path, "text,sentiment\na,abc\n"))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_sentiment(tmp_path, value):
    with pytest.raises(DataError, match=rf"row 3, column 'sentiment': '{value}' is not a finite number"):
        read_csv(_write(tmp_path, f"text,label,sentiment\na,A,0.5\nb,B,{value}\n"))


def test_a_very_wide_header_is_read_in_linear_time(tmp_path):
    import time

    # 50,000 columns: comparing every column with every other took minutes; a linear check takes milliseconds.
    header = ",".join(["text", "label"] + [f"extra{i}" for i in range(50_000)])
    path = _write(tmp_path, header + "\n" + ",".join(["A cat.", "pets"] + [""] * 50_000) + "\n")
    started = time.perf_counter()
    assert read_csv(path).texts == ["A cat."]
    assert time.perf_counter() - started < 5  # quadratic: ~30 s here; linear: ~0.03 s
    with pytest.raises(DataError, match=r"row 1: column\(s\) \['extra7'\] appear more than once"):
        read_csv(_write(tmp_path, header + ",extra7\nA cat.,pets\n"))


def test_row_with_too_many_fields(tmp_path):
    with pytest.raises(DataError, match=r"row 3: 4 fields but the header has 3"):
        read_csv(_write(tmp_path, "text,label,sentiment\na,A,0.1\nhello, world,B,0.2\n"))


def test_non_utf8_bytes(tmp_path):
    path = _write(tmp_path, b"text,label\nfine,A\ncaf\xe9 au lait,B\n")  # latin-1 byte in row 3
    with pytest.raises(DataError, match=r"data\.csv: row 3: not UTF-8"):
        read_csv(path)


def test_non_utf8_error_names_the_row(tmp_path):
    path = _write(tmp_path, b"text,label\nfine,A\ncaf\xe9 au lait,B\n")  # latin-1 byte in row 3
    with pytest.raises(DataError, match=r"UTF-8") as info:
        read_csv(path)
    assert "row 3" in str(info.value)


def test_non_utf8_error_counts_old_mac_line_endings(tmp_path):
    path = _write(tmp_path, b"text,label\rfine,A\rcaf\xe9 au lait,B\r")
    with pytest.raises(DataError, match=r"data\.csv: row 3: not UTF-8"):
        read_csv(path)


@pytest.mark.parametrize("content, row", [
    pytest.param(b'text,label\n"A cat.,pets\nA dog.,pets\n', 2, id="first data row"),
    pytest.param(b'text,label\nA bird.,birds\n"A cat.,pets\nA dog.,pets\n', 3, id="a later row"),
    pytest.param(b'text,label\nA bird.,birds\n"A cat.,pets', 3, id="the last line, no line end"),
    pytest.param(b'"text,label\nA cat.,pets\n', 1, id="the header"),
])
def test_an_unclosed_quote_names_the_row_that_opens_it(tmp_path, content, row):
    with pytest.raises(DataError, match=rf'data\.csv: row {row} opens a quote \(\"\) that is never closed, so the rest '
                                        r"of the file was read as one cell") as info:
        read_csv(_write(tmp_path, content))
    assert len(info.value.problems) == 1  # not also "neither a label nor a sentiment" for the swallowed rows


def test_quotes_that_close_are_read_as_before(tmp_path):
    data = read_csv(_write(tmp_path, b'text,label\n"A cat, ""the"" cat.",pets\n"two\nlines",pets\n"last",dogs'))
    assert data.texts == ['A cat, "the" cat.', "two\nlines", "last"]


@pytest.mark.parametrize("make, message", [
    pytest.param(lambda p: p.mkdir(), r"data\.csv: this is a folder, not a regular file", id="a folder"),
    pytest.param(lambda p: os.mkfifo(p), r"data\.csv: this is a pipe, not a regular file", id="a named pipe"),
])
def test_a_path_that_is_not_a_regular_file_is_named_before_reading(tmp_path, make, message):
    make(tmp_path / "data.csv")  # a pipe would block a read until something writes to it
    with pytest.raises(DataError, match=message):
        read_csv(tmp_path / "data.csv")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_is_refused_not_read_forever():
    with pytest.raises(DataError, match=r"zero: this is a device, not a regular file; give the path of a file"):
        read_csv("/dev/zero")
    with pytest.raises(DataError, match=r"zero: this is a device, not a regular file"):
        read_sts("/dev/zero")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_named(tmp_path, encoding):
    path = _write(tmp_path, "text,label\nA cat.,pets\nA dog.,dogs\n".encode(encoding))
    with pytest.raises(DataError, match=r"data\.csv: this is UTF-16 text or binary data \(it is full of NUL bytes\), "
                                        r"not a CSV in UTF-8: save it as 'CSV UTF-8"):
        read_csv(path)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_other_delimiter_is_named(tmp_path, delimiter):
    path = _write(tmp_path, f"text{delimiter}label\nhello{delimiter}A\n")
    with pytest.raises(DataError, match=r"row 1: no 'text' column \(the file seems to use another delimiter"):
        read_csv(path)


def test_duplicate_columns(tmp_path):
    with pytest.raises(DataError, match=r"row 1: column\(s\) \['label'\] appear more than once"):
        read_csv(_write(tmp_path, "text,label,Label\nhi,A,B\n"))


def test_every_problem_in_a_file_is_reported(tmp_path):
    path = _write(tmp_path, "text,label,sentiment\n"
                            ",A,\n"          # row 2: empty text
                            "ok,,\n"         # row 3: neither
                            "ok,B,0.5\n"     # row 4: fine
                            "ok,,abc\n"      # row 5: not a number
                            "ok,A,nan\n"     # row 6: not finite
                            "a,b,c,d\n")     # row 7: too many fields
    with pytest.raises(DataError) as info:
        read_csv(path)
    problems = info.value.problems
    assert len(problems) == 5
    assert problems[0].startswith("row 2, column 'text'")
    assert problems[1].startswith("row 3, columns 'label'/'sentiment'")
    assert problems[2].startswith("row 5, column 'sentiment': 'abc'")
    assert problems[3].startswith("row 6, column 'sentiment': 'nan'")
    assert problems[4].startswith("row 7: 4 fields")
    for p in problems:
        assert p in str(info.value)


def test_many_problems_are_all_kept_but_the_message_is_capped(tmp_path):
    n = MAX_ERRORS_SHOWN + 3
    path = _write(tmp_path, "text,label\n" + ",A\n" * n)
    with pytest.raises(DataError, match=r"\(and 3 more\)") as info:
        read_csv(path)
    assert [p.split(",")[0] for p in info.value.problems] == [f"row {i}" for i in range(2, n + 2)]
    assert f"row {n + 1}," not in str(info.value)  # the 13th problem is counted, not shown


# -- MultiTaskDataset -------------------------------------------------------------------------


def test_dataset_rejects_rows_without_any_target_and_names_them():
    with pytest.raises(DataError, match=r"row 2: needs a label, a sentiment, or both"):
        MultiTaskDataset(["a", "b"], ["A", None], [None, None])


def test_label_ids_maps_to_indices_with_ignore_for_missing():
    data = MultiTaskDataset(["a", "b", "c", "d"], ["B", None, "A", "C"], [None, 0.1, None, 0.2])
    ids = data.label_ids(["A", "B", "C"])
    assert ids.dtype == torch.long
    assert ids.tolist() == [1, IGNORE_LABEL, 0, 2]


def test_label_ids_unknown_label_names_the_row(tmp_path):
    data = read_csv(_write(tmp_path, "text,label\na,Sports\nb,Cooking\n"))
    with pytest.raises(DataError, match=r"data\.csv row 3, column 'label': 'Cooking' is not one of the model's classes"):
        data.label_ids(["Business", "Sports"])


def test_sentiment_targets_have_nan_for_missing():
    data = MultiTaskDataset(["a", "b", "c"], ["A", "B", None], [0.5, None, -1.0])
    targets = data.sentiment_targets()
    assert targets.dtype == torch.float32
    assert torch.isnan(targets).tolist() == [False, True, False]
    assert targets[0].item() == 0.5 and targets[2].item() == -1.0


def _indexed(n: int) -> MultiTaskDataset:
    return MultiTaskDataset([f"text {i}" for i in range(n)], [f"c{i % 3}" for i in range(n)],
                            [i / n for i in range(n)])


def test_split_is_seeded_disjoint_and_complete():
    data = _indexed(50)
    train, val = data.split(0.2, seed=1)
    train_again, val_again = data.split(0.2, seed=1)
    assert (train.texts, val.texts) == (train_again.texts, val_again.texts)
    assert (len(train), len(val)) == (40, 10)
    assert not set(train.texts) & set(val.texts)
    assert sorted(train.texts + val.texts) == sorted(data.texts)
    # labels and sentiments travel with their texts
    for part in (train, val):
        for text, label, score in zip(part.texts, part.labels, part.sentiments):
            i = int(text.split()[1])
            assert (label, score) == (data.labels[i], data.sentiments[i])
    other_train, other_val = data.split(0.2, seed=2)
    assert set(other_val.texts) != set(val.texts)


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="val_fraction"):
        _indexed(10).split(1.0)
    with pytest.raises(ValueError, match="too few"):
        _indexed(1).split(0.5)


def test_concat_keeps_order_and_rows():
    a = MultiTaskDataset(["a1", "a2"], ["A", None], [None, 0.3], ["a.csv row 2", "a.csv row 3"])
    b = MultiTaskDataset(["b1"], ["B"], [0.9], ["b.csv row 2"])
    both = MultiTaskDataset.concat([a, b])
    assert both.texts == ["a1", "a2", "b1"]
    assert both.labels == ["A", None, "B"]
    assert both.sentiments == [None, 0.3, 0.9]
    assert both.rows == ["a.csv row 2", "a.csv row 3", "b.csv row 2"]
    assert both.class_names == ["A", "B"]


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.3, 1.0], (0.0, 1.0)),
    ([0.2, 0.7], (0.0, 1.0)),
    ([-0.5, 0.2, 1.0], (-1.0, 1.0)),
    ([-1.0, 0.0], (-1.0, 1.0)),
    ([0.0, 2.5, 5.0], (0.0, 5.0)),
])
def test_sentiment_range(values, expected):
    data = MultiTaskDataset([f"t{i}" for i in range(len(values))], [None] * len(values), values)
    assert data.sentiment_range == expected


# -- make_synthetic ---------------------------------------------------------------------------


def test_make_synthetic_is_deterministic_for_a_seed_and_differs_across_seeds():
    a, b, c = make_synthetic(60, seed=3), make_synthetic(60, seed=3), make_synthetic(60, seed=4)
    assert (a.texts, a.labels, a.sentiments) == (b.texts, b.labels, b.sentiments)
    assert a.texts != c.texts
    assert a.sentiments != c.sentiments


def test_make_synthetic_content():
    data = make_synthetic(40, seed=0)
    assert len(data) == 40
    assert data.class_names == ["Business", "Sci/Tech", "Sports", "World"]
    assert set(make_synthetic(4, seed=9).labels) == {"Business", "Sci/Tech", "Sports", "World"}
    assert all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in data.sentiments)
    assert min(data.sentiments) < -0.3 and max(data.sentiments) > 0.3  # both signs occur
    assert all(t.strip() for t in data.texts)
    assert len(set(data.texts)) > 30


def test_make_synthetic_rejects_n_below_one():
    with pytest.raises(ValueError, match="n must be >= 1"):
        make_synthetic(0)


# -- read_sts ---------------------------------------------------------------------------------


def test_read_sts_keeps_the_first_seven_fields(tmp_path):
    lines = [
        "main-captions\tMSRvid\t2012test\t0001\t2.500\tA girl is styling her hair.\tA girl is brushing her hair.",
        "main-news\theadlines\t2015\t0002\t0.000\tStocks fall.\tA cat sleeps.\tsource-a\tsource-b",
        "",
        "main-forums\tanswers\t2016\t0003\t5\tSame thing.\tSame thing.\textra",
    ]
    pairs = read_sts(_write(tmp_path, "\n".join(lines) + "\n", name="sts.csv"))
    assert len(pairs) == 3
    assert pairs.scores == [2.5, 0.0, 5.0]
    assert pairs.sentences1 == ["A girl is styling her hair.", "Stocks fall.", "Same thing."]
    assert pairs.sentences2 == ["A girl is brushing her hair.", "A cat sleeps.", "Same thing."]


def test_read_sts_short_line_names_the_row(tmp_path):
    path = _write(tmp_path, "g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\t3.0\tonly one sentence\n", name="sts.csv")
    with pytest.raises(DataError, match=r"sts\.csv: row 2: 6 tab-separated fields, expected at least 7"):
        read_sts(path)


def test_read_sts_non_numeric_score_names_the_row(tmp_path):
    path = _write(tmp_path, "g\tf\t2012\t1\thigh\tA\tB\n", name="sts.csv")
    with pytest.raises(DataError, match=r"row 1, column 5 \(score\): 'high' is not a number"):
        read_sts(path)


@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf"])
def test_read_sts_non_finite_score_names_the_row_and_value(tmp_path, score):
    path = _write(tmp_path, f"g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\t{score}\tC\tD\n", name="sts.csv")
    with pytest.raises(DataError, match=rf"sts\.csv: row 2, column 5 \(score\): '{score}' is not a finite number"):
        read_sts(path)


@pytest.mark.parametrize("line, message", [
    pytest.param("g\tf\t2012\t2\t3.0\t \tB", r"row 2, column 6 \(sentence1\): the text is empty", id="sentence1 blank"),
    pytest.param("g\tf\t2012\t2\t3.0\tA\t\u200b", r"row 2, column 7 \(sentence2\): the text is empty", id="sentence2 invisible"),
])
def test_read_sts_empty_sentence_names_the_row_and_column(tmp_path, line, message):
    path = _write(tmp_path, f"g\tf\t2012\t1\t2.5\tA\tB\n{line}\n", name="sts.csv")
    with pytest.raises(DataError, match=rf"sts\.csv: {message}"):
        read_sts(path)


@pytest.mark.parametrize("content, message", [
    pytest.param("\n\n", r"sts\.csv: the file has no sentence pairs", id="blank lines only"),
    pytest.param("g\tf\t2012\t1\t2.5\tA\tB\n".encode("utf-16"), r"sts\.csv: this is UTF-16 text, not UTF-8 text",
                 id="UTF-16"),
    pytest.param(b"g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\t1.0\tcaf\xe9\tB\n",
                 r"sts\.csv: row 2: not UTF-8 text \(byte \d+ cannot be decoded\)", id="latin-1"),
])
def test_read_sts_a_file_it_cannot_read_is_named(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_sts(_write(tmp_path, content, name="sts.csv"))


# -- the real sets (skip when ../shared/datasets is absent) -------------------------------------


def test_real_ag_news_train(datasets_dir):
    data = load_ag_news(datasets_dir, "train")
    assert len(data) == 6000
    assert set(data.class_names) == {"World", "Sports", "Business", "Sci/Tech"}
    assert all(label is not None for label in data.labels)
    assert all(s is None for s in data.sentiments)
    counts = [data.labels.count(c) for c in data.class_names]
    assert min(counts) > 0.2 * len(data)  # roughly balanced


def test_real_sst_train(datasets_dir):
    data = load_sst(datasets_dir, "train")
    assert len(data) == 8544
    assert all(s is not None and 0.0 <= s <= 1.0 for s in data.sentiments)
    assert data.sentiment_range == (0.0, 1.0)
    rescaled = load_sst(datasets_dir, "train", rescale=True)
    assert all(-1.0 <= s <= 1.0 for s in rescaled.sentiments)
    assert min(rescaled.sentiments) < 0
    assert rescaled.sentiment_range == (-1.0, 1.0)
    assert all(math.isclose(r, 2 * s - 1) for r, s in zip(rescaled.sentiments, data.sentiments))


def test_real_sts_test(datasets_dir):
    pairs = read_sts(datasets_dir / "stsb" / "sts-test.csv")
    assert len(pairs) == 1379
    assert all(0.0 <= s <= 5.0 for s in pairs.scores)
    assert min(pairs.scores) == 0.0 and max(pairs.scores) == 5.0
    assert all(a.strip() and b.strip() for a, b in zip(pairs.sentences1, pairs.sentences2))


def test_rescale_sentiment_maps_linearly_and_keeps_missing():
    from core.data import MultiTaskDataset

    data = MultiTaskDataset(["a", "b", "c"], [None, "X", None], [0.0, None, 0.75])
    mapped = data.rescale_sentiment((0, 1), (-1, 1))
    assert mapped.sentiments == [-1.0, None, 0.5] and data.sentiments == [0.0, None, 0.75]
    with pytest.raises(ValueError, match="low < high"):
        data.rescale_sentiment((1, 0), (-1, 1))


def test_builtin_bbc_news_is_real_and_offline():
    from core.datasets import load_builtin

    data = load_builtin("bbc_news")
    assert len(data) == 2225
    assert data.class_names == ["Business", "Entertainment", "Politics", "Sport", "Tech"]
    assert data.texts[0].startswith("Ad sales boost Time Warner profit. Quarterly profits")
    assert data.tasks == ("classification",)
    with pytest.raises(ValueError, match="Valid names are: synthetic, bbc_news, reviews"):
        load_builtin("imdb")


def test_builtin_reviews_are_real_labelled_sentences_shipped_with_their_licence():
    from core.datasets import REVIEWS_CSV, load_builtin

    data = load_builtin("reviews")
    assert len(data) == 2979 and data.tasks == ("classification", "sentiment")
    assert data.class_names == ["Movies", "Products", "Restaurants"]
    assert sorted(set(data.sentiments)) == [-1.0, 1.0] and data.sentiment_range == (-1.0, 1.0)
    assert (data.texts[1], data.labels[1], data.sentiments[1]) == ("Good case, Excellent value.", "Products", 1.0)
    assert len({t.lower() for t in data.texts}) == len(data)  # repeated sentences were dropped
    for topic in data.class_names:  # balanced: about a thousand per site, half of them positive
        scores = [s for s, label in zip(data.sentiments, data.labels) if label == topic]
        assert 980 <= len(scores) <= 1000 and abs(sum(scores)) <= 10
    licence = (REVIEWS_CSV.parent / "LICENSE.txt").read_text()
    assert "CC BY 4.0" in licence and "Kotzias" in licence


def test_the_dataset_is_a_torch_dataset_that_a_dataloader_batches():
    from torch.utils.data import DataLoader, Dataset

    from core.data import Batch, Example, collate

    data = MultiTaskDataset(["a sports text", "a business text", "no topic here", "no mood here"],
                            ["Sports", "Business", None, "Sports"], [0.5, None, -0.25, None])
    assert isinstance(data, Dataset) and len(data) == 4
    assert data.class_names == ["Business", "Sports"]
    assert data[0] == Example("a sports text", 1, 0.5)
    assert data[1] == Example("a business text", 0, None)
    assert data[2] == Example("no topic here", None, -0.25)
    assert data[-1] == Example("no mood here", 1, None)
    with pytest.raises(IndexError):
        data[4]
    with pytest.raises(TypeError, match="indexed by an int"):
        data["text"]

    batches = list(DataLoader(data, batch_size=3, collate_fn=collate))
    assert [len(b.texts) for b in batches] == [3, 1] and all(isinstance(b, Batch) for b in batches)
    assert batches[0].texts == ["a sports text", "a business text", "no topic here"]
    assert batches[0].labels.tolist() == [1, 0, IGNORE_LABEL]  # the loss's mask for a row with no topic
    sentiments = batches[0].sentiments
    assert sentiments.dtype == torch.float32 and sentiments[0] == 0.5 and torch.isnan(sentiments[1])
    assert sentiments[2] == -0.25


def test_sample_is_seeded_and_keeps_the_rows_in_order():
    data = make_synthetic(50, seed=0)
    a, b, c = data.sample(10, seed=1), data.sample(10, seed=1), data.sample(10, seed=2)
    assert a.texts == b.texts and a.texts != c.texts and len(a) == 10
    rows = [int(r.split()[-1]) for r in a.rows]
    assert rows == sorted(rows)
    assert data.sample(50, seed=1) is data

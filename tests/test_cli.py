"""The command line as other tools script it: JSON forms, exit codes, one-line errors."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch


def run_cli(*args, check=True, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def run_json(*args):
    return json.loads(run_cli(*args, "--json", "--quiet").stdout)


def assert_fails(proc, message):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_help_lists_subcommands():
    out = run_cli("--help").stdout
    for command in ("embed", "predict", "train", "evaluate", "evaluate-sts"):
        assert command in out


@pytest.mark.slow
def test_embed_json(real_encoder):
    result = run_json("embed", "text one", "text two")
    vectors = np.array(result["embeddings"])
    assert vectors.shape == (2, 384) and result["dim"] == 384 and result["truncated"] == []
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = real_encoder.with_settings(normalize=True).encode(["text one", "text two"])
    assert np.abs(vectors - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model"
    result = run_json("train", "--builtin", "synthetic", "--size", "200", "--epochs", "40", "--lr", "1e-2", "--out", out)
    assert result["out"] == str(out) and len(result["history"]) >= 1
    assert result["freeze"]["trainable"] == 384 * 4 + 4 + 385
    return out


@pytest.mark.slow
def test_train_predict_evaluate(trained_dir, tmp_path):
    predictions = run_json("predict", "--model", trained_dir, "The goalkeeper was an utter disaster in the cup final.", "Investors")
    assert len(predictions) == 2
    for p in predictions:
        assert set(p) >= {"label", "probabilities", "sentiment"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] in ("Business", "Sci/Tech", "Sports", "World")
    assert predictions[0]["label"] == "Sports" and predictions[0]["sentiment"] < 0

    csv = tmp_path / "eval.csv"
    csv.write_text("text,label,sentiment\n"
                   "The goalkeeper was an utter disaster in the cup final.,Sports,-0.95\n"
                   "The central bank delighted everyone on the stock exchange.,Business,0.85\n"
                   "The new smartphone went remarkably well in laboratory tests.,Sci/Tech,0.7\n")
    metrics = run_json("evaluate", "--model", trained_dir, "--csv", csv)
    assert set(metrics) >= {"accuracy", "macro_f1", "mse", "mae", "pearson", "spearman"}
    labels_only = tmp_path / "labels.csv"
    labels_only.write_text("text,label\nThe prime minister in the capital.,World\n")
    metrics = run_json("evaluate", "--model", trained_dir, "--csv", labels_only)
    assert "accuracy" in metrics and "mse" not in metrics  # a task with no rows is left out


@pytest.mark.slow
def test_errors_are_one_line(trained_dir, tmp_path):
    assert_fails(run_cli("train", "--csv", tmp_path / "missing.csv", "--out", tmp_path / "m", check=False), "file not found")
    assert_fails(run_cli("train", "--builtin", "synthetic", "--lr", "0", "--out", tmp_path / "m", check=False),
                 "learning_rate must be > 0")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,sentiment\nfine,0.5\nbroken,abc\n")
    assert_fails(run_cli("evaluate", "--model", trained_dir, "--csv", bad, check=False),
                 "bad.csv: row 3, column 'sentiment': 'abc' is not a number")
    assert_fails(run_cli("predict", "--model", trained_dir, check=False), "no text given")
    assert_fails(run_cli("predict", "--model", tmp_path, "hi", check=False), "config.json is missing")
    assert not (tmp_path / "m").exists()  # nothing half-saved


@pytest.mark.slow
def test_evaluate_sts_mean_matches_the_published_figure_and_cls_is_lower(datasets_dir):
    mean = run_json("evaluate-sts", "--csv", datasets_dir / "stsb" / "sts-test.csv")
    cls = run_json("evaluate-sts", "--csv", datasets_dir / "stsb" / "sts-test.csv", "--pooling", "cls")
    assert mean["n"] == 1379
    assert mean["spearman"] == pytest.approx(0.8203, abs=0.001)
    assert cls["spearman"] < mean["spearman"] - 0.02


@pytest.mark.slow
def test_frozen_heads_on_real_data_reach_the_linear_probe_figures(datasets_dir, tmp_path):
    """The acceptance run: heads on the frozen encoder, AG News + SST, scored on their test files.

    Reference (linear probes on the same frozen embeddings): AG News accuracy 0.885, SST Pearson 0.666.
    """
    out = tmp_path / "agnews-sst"
    trained = run_json("train", "--csv", datasets_dir / "ag_news" / "train.csv", "--csv", datasets_dir / "sst" / "train.csv",
                       "--out", out)
    assert trained["freeze"]["trainable"] == 384 * 4 + 4 + 385
    topics = run_json("evaluate", "--model", out, "--csv", datasets_dir / "ag_news" / "test.csv")
    sentiment = run_json("evaluate", "--model", out, "--csv", datasets_dir / "sst" / "test.csv")
    assert topics["n_classification"] == 1600 and sentiment["n_sentiment"] == 2210
    assert topics["accuracy"] >= 0.880
    assert sentiment["pearson"] >= 0.660


@pytest.mark.slow
def test_bench_runs_each_configuration_and_compares_with_sentence_transformers(tmp_path):
    report = run_json("bench", "--sets", "short", "--n", "24", "--repeats", "1", "--no-training", "--out", tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text()) == report
    rows = {r["config"]: r for r in report["encoding"]}
    assert set(rows) == {"sentence-transformers", "fp32", "fast"}
    assert rows["fp32"]["max_abs_diff_to_st"] <= 1e-5  # the same embeddings, measured in the same run
    assert rows["fast"]["min_cosine_to_fp32"] >= 0.999
    assert all(r["sentences_per_s"] > 0 and r["peak_rss_mb"] > 100 for r in rows.values())
    assert rows["sentence-transformers"]["ratio_to_st"] == 1.0
    assert report["classify_latency"]["median_ms"] > 0


@pytest.mark.slow
def test_bench_profile_shows_where_the_time_goes():
    report = run_json("bench", "--profile", "--sets", "mixed", "--n", "48")["profile"]
    padded = report["padded_tokens"]
    # Batches of similar token counts pad less than batches of similar character counts (or equal).
    assert report["real_tokens"] <= padded["ours"] <= padded["sentence-transformers"]
    for name in ("sentence-transformers", "ours"):
        ops = report[name]["ops"]
        assert ops and ops[0]["self_ms"] >= ops[-1]["self_ms"] > 0 and 0 < sum(o["share"] for o in ops) <= 1.0
        assert "aten::addmm" in [o["op"] for o in ops]  # the linear layers: where encoding time goes


def test_a_bug_is_an_internal_error_with_its_traceback_not_a_bad_input(monkeypatch, capsys, caplog):
    import core.__main__ as cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "predict", broken)
    assert cli.main(["predict", "Hello."]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: internal error (KeyError: 'a bug'); this is a bug")
    (logged,) = [r for r in caplog.records if r.name == "sentence_lab.cli"]
    assert logged.exc_info[0] is KeyError  # the traceback goes to the log


def test_every_mistake_a_user_can_make_is_one_error_class():
    from core.errors import (ConfigError, DataError, FolderExistsError, MissingFileError, ModelFolderError,
                             NotTextError, SentenceLabError, TextError)

    for kind, builtin in [(ConfigError, ValueError), (TextError, ValueError), (NotTextError, TypeError),
                          (ModelFolderError, ValueError), (MissingFileError, FileNotFoundError),
                          (FolderExistsError, FileExistsError)]:
        assert issubclass(kind, SentenceLabError) and issubclass(kind, builtin)
    error = DataError("train.csv", [f"row {i}" for i in range(2, 15)])
    assert isinstance(error, SentenceLabError) and str(error).endswith("row 11 (and 3 more)")


@pytest.mark.slow
def test_train_goes_on_from_a_saved_model_and_a_frozen_head_stays_bit_identical(tiny_encoder_dir, tmp_path):
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    run_cli("train", "--builtin", "synthetic", "--size", "60", "--model", tiny_encoder_dir, "--out", first, "--quiet")
    run_cli("train", "--builtin", "synthetic", "--size", "60", "--seed", "1", "--model", first,
            "--freeze", "classification_head", "--epochs", "2", "--out", second, "--quiet")
    a, b = load_file(str(first / "heads.safetensors")), load_file(str(second / "heads.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("classifier."))  # kept exactly
    assert not torch.equal(a["sentiment_head.linear.weight"], b["sentiment_head.linear.weight"])  # learned
    assert json.loads((second / "config.json").read_text())["encoder_weights"] == "stored"  # the encoder learned

    csv = tmp_path / "other.csv"
    csv.write_text("text,label\nA recipe for bread.,Cooking\nA goal in the final.,Sports\n")
    assert_fails(run_cli("train", "--csv", csv, "--model", first, "--out", tmp_path / "x", check=False),
                 "the data has topics ['Cooking'] that first has no class for")
    # A saved model keeps its own shape: settings for a new one are refused, not silently ignored.
    assert_fails(run_cli("train", "--builtin", "synthetic", "--size", "60", "--model", first, "--pooling", "cls",
                         "--no-normalize", "--out", tmp_path / "y", check=False),
                 "--pooling, --normalize shape a new model, and first keeps its own (pooling mean, normalize on, "
                 "projection none): drop them, or train from the base encoder")


@pytest.mark.slow
def test_a_diverging_run_exits_2_and_writes_nothing(tiny_encoder_dir, tmp_path):
    out = tmp_path / "never"
    assert_fails(run_cli("train", "--builtin", "synthetic", "--size", "60", "--model", tiny_encoder_dir,
                         "--freeze", "none", "--lr", "1e30", "--out", out, "--quiet", check=False),
                 "training diverged at epoch 1, step ")
    assert not out.exists()


def test_an_encoder_that_does_not_load_is_the_users_mistake_not_a_bug(tmp_path):
    csv = tmp_path / "tiny.csv"
    csv.write_text("text,label\nA goal in the final.,Sports\nShares fell.,Business\nA new phone.,Tech\n")
    assert_fails(run_cli("train", "--csv", csv, "--model", tmp_path, "--out", tmp_path / "m", check=False),
                 f"cannot load the encoder '{tmp_path}' here:")


@pytest.mark.parametrize("out, message", [
    ("", "the folder to save to is empty: name one, e.g. --out my-model"),
    ("/", "/ is the root folder: saving replaces the folder whole, so name a new folder inside it instead"),
    (".", ". is the current folder: saving replaces the folder whole"),
    ("notes.txt", "notes.txt exists and is not a folder: choose another place to save to"),
    ("notes.txt/model", "cannot save to notes.txt/model: "),
    ("mine", "mine exists and is not a saved Sentence Lab model: refusing to replace it"),
])
def test_train_checks_out_before_any_work(out, message, tmp_path, monkeypatch, capsys):
    import core.training
    from core.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "main.py").write_text("print('mine')")

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(core.training, "fit", no_training)
    assert main(["train", "--builtin", "synthetic", "--size", "40", "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert (tmp_path / "notes.txt").read_text() == "my notes" and (tmp_path / "mine" / "main.py").exists()


STS_LINE = "main-captions\tMSRvid\t2012test\t{id}\t{score}\tA man is playing a guitar.\tA man plays the guitar.\n"


@pytest.mark.parametrize("args, message", [
    pytest.param(["train", "--csv", "folder", "--out", "m"], r"^folder: this is a folder, not a regular file",
                 id="train --csv a folder"),
    pytest.param(["train", "--csv", "/dev/zero", "--out", "m"], r"^zero: this is a device, not a regular file",
                 id="train --csv /dev/zero"),
    pytest.param(["train", "--builtin", "synthetic", "--recipe", "finetune", "--sts-pairs", "nan.tsv", "--out", "m"],
                 r"^nan\.tsv: row 2, column 5 \(score\): 'nan' is not a finite number", id="train --sts-pairs NaN score"),
    pytest.param(["train", "--builtin", "synthetic", "--sts-pairs", "inf.tsv", "--out", "m"],
                 r"^inf\.tsv: row 1, column 5 \(score\): '-inf' is not a finite number",
                 id="train --sts-pairs read before the freeze is checked"),
    pytest.param(["train", "--builtin", "synthetic", "--sts-pairs", "ok.tsv", "--out", "m"],
                 r"^--sts-pairs trains the encoder on sentence pairs beside the tasks, and --freeze encoder keeps it "
                 r"frozen: use --recipe finetune", id="train --sts-pairs with the encoder frozen"),
    pytest.param(["train", "--builtin", "synthetic", "--sts-pairs", "ok.tsv", "--freeze", "all", "--out", "m"],
                 r"^--sts-pairs trains the encoder on sentence pairs beside the tasks, and --freeze all keeps it "
                 r"frozen: use --recipe finetune", id="train --sts-pairs with nothing training"),
    pytest.param(["evaluate", "--csv", "folder"], r"^folder: this is a folder, not a regular file", id="evaluate --csv a folder"),
    pytest.param(["evaluate-sts", "--csv", "nan.tsv"], r"^nan\.tsv: row 2, column 5 \(score\): 'nan' is not a finite number",
                 id="evaluate-sts NaN score"),
    pytest.param(["evaluate-sts", "--csv", "inf.tsv"], r"^inf\.tsv: row 1, column 5 \(score\): '-inf' is not a finite number",
                 id="evaluate-sts infinite score"),
    pytest.param(["evaluate-sts", "--csv", "folder"], r"^folder: this is a folder, not a regular file",
                 id="evaluate-sts --csv a folder"),
    pytest.param(["predict", "--file", "blank.txt"],
                 r"^blank\.txt: no sentences: the file is empty or has only blank lines; write one per line",
                 id="predict --file with blank lines only"),
    pytest.param(["predict", "--file", "utf16.txt"], r"^utf16\.txt: this is UTF-16 text, not UTF-8 text: save it as UTF-8",
                 id="predict --file in UTF-16"),
    pytest.param(["embed", "--file", "folder"], r"^folder: this is a folder, not a regular file", id="embed --file a folder"),
])
def test_a_file_that_cannot_be_read_is_named_before_any_model_loads(args, message, tmp_path, monkeypatch, capsys):
    from core.__main__ import main
    from core.encoder import SentenceEncoder
    from core.model import MultiTaskModel

    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "nan.tsv").write_text(STS_LINE.format(id="0001", score="2.5") + STS_LINE.format(id="0002", score="nan"))
    (tmp_path / "inf.tsv").write_text(STS_LINE.format(id="0001", score="-inf"))
    (tmp_path / "ok.tsv").write_text(STS_LINE.format(id="0001", score="4.2"))
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    (tmp_path / "utf16.txt").write_bytes("A man plays the guitar.\n".encode("utf-16"))

    def no_model(*args, **kwargs):
        raise AssertionError("loaded a model before reading the file")

    monkeypatch.setattr(MultiTaskModel, "load", no_model)
    monkeypatch.setattr(SentenceEncoder, "from_pretrained", no_model)
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(message, err.removeprefix("error: ")), err
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_encoder_dir, tmp_path_factory):
    """A saved tiny model (three topics and sentiment) whose base encoder loads by name."""
    from core.encoder import SentenceEncoder
    from core.model import HeadsConfig, MultiTaskModel

    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir), max_length=64)
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, HeadsConfig(class_names=["Business", "Sci/Tech", "Sports"]))
    return model.save(tmp_path_factory.mktemp("cli") / "tiny")


def test_predict_csv_writes_every_row_scored_and_says_what_it_did(tiny_model_dir, tmp_path, capsys):
    import csv

    from core.__main__ import main
    from core.model import MultiTaskModel

    src = tmp_path / "reviews.csv"
    src.write_text("id,review\n1,The striker scored twice.\n2,\n3,Shares fell sharply.\n")
    out = tmp_path / "scored.csv"
    assert main(["predict", "--model", str(tiny_model_dir), "--csv", str(src), "--out", str(out),
                 "--text-column", "Review", "--json", "--quiet"]) == 0
    added = ["topic", "topic_confidence", "topic_unsure", "p_Business", "p_Sci/Tech", "p_Sports", "sentiment", "truncated"]
    assert json.loads(capsys.readouterr().out) == {"csv": str(src), "out": str(out), "rows": 3, "scored": 2, "blank": 1,
                                                   "truncated": 0, "columns_added": added}
    header, *rows = list(csv.reader(out.open(newline="")))
    assert header == ["id", "review", *added] and [r[0] for r in rows] == ["1", "2", "3"]
    expected = MultiTaskModel.load(tiny_model_dir).predict(["The striker scored twice.", "Shares fell sharply."])
    assert [rows[0][2], rows[2][2]] == [p.label for p in expected]
    assert rows[1][2:] == [""] * len(added)

    assert main(["predict", "--model", str(tiny_model_dir), "--csv", str(src), "--out", str(out),
                 "--text-column", "review", "--quiet"]) == 0
    assert capsys.readouterr().out == (f"scored 2 of 3 rows, 1 blank left unscored (0 truncated) into {out}; "
                                       f"added {', '.join(added)}\n")


@pytest.mark.parametrize("args, message", [
    (["hello", "--csv", "in.csv", "--out", "o.csv"], "give sentences as arguments or --file, or a CSV to score as "
                                                     "--csv, not both"),
    (["--csv", "in.csv"], "--csv needs --out FILE.csv, the file to write the scored rows to"),
    (["hello", "--out", "o.csv"], "--out and --text-column go with --csv FILE, the CSV to score"),
    (["--csv", "in.csv", "--out", "in.csv"], "in.csv is the input file: write the scores to another file"),
    (["--csv", "in.csv", "--out", "folder"], "folder is a folder: name a file to write, e.g. folder/scored.csv"),
    (["--csv", "in.csv", "--out", "o.csv", "--text-column", "body"],
     "in.csv: row 1: no column 'body'; the columns are ['id', 'text']"),
    (["--csv", "bad.csv", "--out", "o.csv"], "bad.csv: row 3: 3 fields but the header has 2"),
    (["--csv", "folder", "--out", "o.csv"], "folder: this is a folder, not a regular file"),
])
def test_predict_csv_is_checked_before_any_model_loads(args, message, tmp_path, monkeypatch, capsys):
    from core.__main__ import main
    from core.model import MultiTaskModel

    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "in.csv").write_text("id,text\n1,A goal in the final.\n")
    (tmp_path / "bad.csv").write_text("id,text\n1,fine\n2,Rain, then sun\n")
    monkeypatch.setattr(MultiTaskModel, "load", lambda *a, **k: pytest.fail("loaded a model before checking"))
    assert main(["predict", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "o.csv").exists() and (tmp_path / "in.csv").read_text().startswith("id,text\n")


def test_evaluate_json_gives_per_class_figures_and_the_confusion_matrix(tiny_model_dir, tmp_path, capsys):
    from core.__main__ import main
    from core.metrics import per_class
    from core.model import MultiTaskModel

    rows = [("A goal in the final.", "Sports"), ("The striker scored twice.", "Sports"), ("Shares fell.", "Business"),
            ("The bank raised rates.", "Business"), ("A new phone.", "Sci/Tech"), ("Rain all week.", "Sports")]
    src = tmp_path / "test.csv"
    src.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    assert main(["evaluate", "--model", str(tiny_model_dir), "--csv", str(src), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)

    model = MultiTaskModel.load(tiny_model_dir)
    classes = model.class_names
    y_true = [classes.index(label) for _, label in rows]
    y_pred = [classes.index(p.label) for p in model.predict([t for t, _ in rows])]
    matrix = [[sum(1 for t, p in zip(y_true, y_pred) if (t, p) == (i, j)) for j in range(3)] for i in range(3)]
    assert result["confusion"] == {"classes": classes, "matrix": matrix}
    assert [sum(r) for r in matrix] == [2, 1, 3]  # Business, Sci/Tech, Sports rows
    for name, figures in per_class(y_true, y_pred, classes).items():
        assert result["per_class"][name] == pytest.approx(figures)
    assert result["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 6)
    assert result["n_classification"] == 6

    # The human form prints the table and the matrix; --record keeps the numbers the model card shows.
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    assert main(["evaluate", "--model", str(folder), "--csv", str(src), "--quiet", "--record"]) == 0
    printed = capsys.readouterr().out
    assert "confusion (rows: true, columns: predicted)" in printed and "precision" in printed
    assert "{" not in printed  # no dict printed raw
    recorded = json.loads((folder / "config.json").read_text())["metrics"]["test"]
    (figures,) = recorded.values()
    assert figures["accuracy"] == pytest.approx(result["accuracy"]) and "per_class" not in figures


def test_ctrl_c_during_train_is_one_line_saying_what_out_holds(tmp_path, monkeypatch, capsys):
    import core.training
    from core.__main__ import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.training, "fit", interrupted)
    out = tmp_path / "model"
    assert main(["train", "--builtin", "synthetic", "--size", "40", "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err == (f"error: interrupted; {out} is as it was before the run or holds its last "
                                       f"complete checkpoint (train --resume {out})\n")
    assert not out.exists()


@pytest.mark.slow
def test_a_device_this_machine_lacks_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-device message cannot be shown here")
    assert_fails(run_cli("train", "--builtin", "synthetic", "--size", "40", "--device", "cuda", "--out",
                         tmp_path / "m", check=False),
                 "device 'cuda' is not available here: this torch has no usable CUDA GPU; use cpu")
    assert_fails(run_cli("train", "--builtin", "synthetic", "--size", "40", "--device", "tpu9", "--out",
                         tmp_path / "m", check=False), "unknown device 'tpu9'")


def test_a_reader_that_goes_away_is_one_line_not_a_traceback(tiny_encoder_dir):
    texts = [f"sentence number {i}" for i in range(400)]  # more JSON than a pipe buffer holds
    proc = subprocess.Popen([sys.executable, "-m", "core", "embed", "--model", str(tiny_encoder_dir), "--json",
                             "--quiet", *texts], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` exiting at once
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "error: the output pipe closed before everything was written\n", err

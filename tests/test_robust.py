"""Robust in public: bad input at every boundary (core API, command line, app) gets one clear message.

The same bad CSV files go through all three boundaries and must give the same message; after each
bad request to the app, a good one must still be answered. Strange but valid input (any Unicode,
very long text, a byte-order mark, more rows than a server allows) is accepted and reported, never
an error. Model folders that carry pickle files or were tampered with are refused before any
weight is used.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from safetensors.torch import load_file, save_file

from core.config import HeadsConfig, TrainingConfig
from core.data import DataError, check_learnable, read_csv
from core.datasets import make_synthetic
from core.encoder import SentenceEncoder
from core.model import ModelFolderError, MultiTaskModel
from core.training import train
from tests.app_server import AG_NEWS, classify, train_args
from tests.helpers import LIMITED_ENV
from tests.test_cli import assert_fails, run_cli
from ui.inputs import TrainForm
from ui.state import Limits, Session, Shared
from ui.train_tab import TrainTab

pytestmark = [pytest.mark.app, pytest.mark.slow]

MAX_ROWS = int(LIMITED_ENV["SENTENCE_LAB_MAX_ROWS"])
# The app's allow-list of base encoders: the default, then what the host added (SENTENCE_LAB_MODELS).
ALLOWED = re.escape(str(["sentence-transformers/all-MiniLM-L6-v2", LIMITED_ENV["SENTENCE_LAB_MODELS"]]))
MAX_UPLOAD_BYTES = int(float(LIMITED_ENV["SENTENCE_LAB_MAX_UPLOAD_MB"]) * 1024 * 1024)
PICKLE = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."  # pickle.dumps(1): harmless, but a pickle

# -- the bad CSV files: one table for the core API, the command line and the app -------------------------

# (name, file content, the message, also through the CLI). The file is always called data.csv.
BAD_CSVS = [
    ("empty file", b"", r"data\.csv: the file is empty; expected a header row with a 'text' column", True),
    ("header only", b"text,label\n", r"data\.csv: the file has a header but no data rows", False),
    ("no text column", b"sentence,label\nA cat.,pets\n",
     r"data\.csv: row 1: no 'text' column; found \['sentence', 'label'\]", True),
    ("unknown delimiter", b"text;label\nA cat.;pets\nA dog.;pets\n",
     r"row 1: no 'text' column \(the file seems to use another delimiter; use commas\)", True),
    ("non-UTF-8 bytes", "text,label\nUn café.,food\nA tea.,food\n".encode("latin-1"),
     r"data\.csv: row 2: not UTF-8 text \(byte 17 cannot be decoded\); save the file as UTF-8", True),
    ("UTF-16 file", "text,label\nA cat.,pets\n".encode("utf-16"),
     r"data\.csv: this is UTF-16 text, not a CSV in UTF-8: save it as 'CSV UTF-8", False),
    ("UTF-16 file without a byte-order mark", "text,label\nA cat.,pets\n".encode("utf-16-le"),
     r"data\.csv: this is UTF-16 text or binary data \(it is full of NUL bytes\), not a CSV in UTF-8", True),
    ("unclosed quote", b'text,label\n"A cat.,pets\nA dog.,pets\n',
     r'data\.csv: row 2 opens a quote \(\"\) that is never closed, so the rest of the file was read as one cell', True),
    ("Excel workbook named .csv", b"PK\x03\x04" + bytes(60),
     r"data\.csv: this is a zip archive or an Excel \.xlsx workbook, not a CSV", False),
    ("NaN sentiment", b"text,sentiment\nFine.,0.5\nOdd.,NaN\n",
     r"data\.csv: row 3, column 'sentiment': 'NaN' is not a finite number", False),
    ("inf sentiment", b"text,sentiment\nFine.,0.5\nOdd.,-inf\n",
     r"data\.csv: row 3, column 'sentiment': '-inf' is not a finite number", True),
    ("sentiment beyond float32", b"text,sentiment\nFine.,0.5\nHuge.,1e39\n",
     r"data\.csv: row 3, column 'sentiment': 1e39 is beyond ±1,000,000; use a scale such as -1 to 1", False),
    ("sentiment whose square overflows", b"text,sentiment\nFine.,0.5\nHuge.,-1e30\n",
     r"data\.csv: row 3, column 'sentiment': -1e30 is beyond ±1,000,000", True),
    ("non-numeric sentiment", b"text,sentiment\nFine.,0.5\nOdd.,very good\n",
     r"data\.csv: row 3, column 'sentiment': 'very good' is not a number", False),
    ("duplicate columns", b"text,label,Label\nA cat.,pets,animals\n",
     r"data\.csv: row 1: column\(s\) \['label'\] appear more than once", False),
    ("row without any target", b"text,label,sentiment\nA cat.,pets,\nA dog.,,\n",
     r"data\.csv: row 3, columns 'label'/'sentiment': the row has neither a label nor a sentiment", False),
    ("invisible text", "text,label\n\u200b\u2060,pets\nA dog.,pets\n".encode(),
     r"data\.csv: row 2, column 'text': the text is empty: it has no visible character", False),
    ("cell beyond the CSV field limit", b"text,label\n" + b"x" * 140_000 + b",pets\n",
     r"data\.csv: row 2: cannot be read as CSV \(field larger than field limit", False),
    ("a single class", b"text,label\nA cat.,pets\nA dog.,pets\nA bird.,pets\n",
     r"data\.csv: column 'label': every row has the same topic \('pets'\); a topic head needs at least two", True),
    ("one sentiment value", b"text,sentiment\nA cat.,0.5\nA dog.,0.5\n",
     r"data\.csv: column 'sentiment': every row has the same value \(0\.5\); there is nothing to learn", False),
]


def write_csv(folder: Path, content: bytes, name: str = "data.csv") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


# -- core API -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [pytest.param(c, m, id=n) for n, c, m, _ in BAD_CSVS])
def test_core_refuses_bad_training_data(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        check_learnable(read_csv(write_csv(tmp_path, content)), "data.csv")


def test_core_refuses_more_rows_than_a_limit(tmp_path):
    path = write_csv(tmp_path, b"text,label\n" + b"".join(b"row %d,A\n" % i for i in range(5)))
    with pytest.raises(DataError, match=r"data\.csv: more than 3 data rows; the limit here is 3"):
        read_csv(path, max_rows=3)
    assert len(read_csv(path, max_rows=5)) == 5


@pytest.mark.parametrize("settings, message", [
    pytest.param({"learning_rate": 0.0}, r"learning_rate must be > 0, got 0\.0", id="lr 0"),
    pytest.param({"learning_rate": -0.01}, r"learning_rate must be > 0, got -0\.01", id="lr negative"),
    pytest.param({"learning_rate": math.nan}, r"learning_rate must be a finite number, got nan", id="lr NaN"),
    pytest.param({"epochs": 0}, r"epochs must be an integer >= 1, got 0", id="0 epochs"),
    pytest.param({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0", id="batch 0"),
    pytest.param({"classification_weight": 0.0, "sentiment_weight": 0.0},
                 r"classification_weight and sentiment_weight are both 0: nothing would be learned", id="weights all 0"),
    pytest.param({"sentiment_weight": -1.0}, r"sentiment_weight must be >= 0, got -1\.0", id="negative weight"),
    pytest.param({"seed": -1}, r"seed must be a whole number from 0 to 2\*\*63 - 1, got -1", id="negative seed"),
    pytest.param({"seed": 2**64}, r"seed must be a whole number from 0 to 2\*\*63 - 1", id="seed too large"),
    pytest.param({"freeze": "heads"}, r"Unknown freeze preset 'heads'\. Valid freeze preset values are: none, all",
                 id="unknown preset"),
])
def test_core_refuses_training_settings_out_of_range(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**settings)


def test_core_refuses_a_baseline_with_no_held_out_rows_to_measure(tiny_model):
    data = make_synthetic(40, seed=0)
    with pytest.raises(ValueError, match=r"Nothing to train: freeze preset 'all' freezes every parameter. As a baseline "
                                         r"it measures the model on held-out rows, and there are none"):
        list(train(tiny_model, data, None, TrainingConfig(freeze="all")))


@pytest.mark.parametrize("text, error, message", [
    pytest.param("", ValueError, r"texts\[0\] is empty: it has no visible character", id="empty text"),
    pytest.param(" \t\n ", ValueError, r"texts\[0\] is empty", id="whitespace-only text"),
    pytest.param("\u200b\u2060\ufeff", ValueError, r"texts\[0\] is empty", id="zero-width-only text"),
    pytest.param("\x00\x07\x1b", ValueError, r"texts\[0\] is empty", id="control-characters-only text"),
    pytest.param("bad \ud800 half", ValueError, r"texts\[0\] has an unpaired surrogate \(U\+D800 at character 5\)",
                 id="unpaired surrogate"),
    pytest.param(None, TypeError, r"texts\[0\] is NoneType, expected str", id="not a string"),
])
def test_core_refuses_texts_with_nothing_to_read(tiny_model, text, error, message):
    with pytest.raises(error, match=message):
        tiny_model.predict(["A fine sentence.", text][1:])
    with pytest.raises(error, match=message.replace("0", "1", 1)):
        tiny_model.encoder.embed(["A fine sentence.", text])


STRANGE_BUT_FINE = ["I love it 😀🎉👍🏽", "مرحبا بالعالم — שלום עולם", "Cafe\u0301 Z\u0336a\u0336l\u0336g\u0336o\u0336",
                    "zero\u200bwidth\u200djoiners", "bell\x07 and escape\x1b[31m codes", "\u202eright-to-left override"]


def test_core_reads_any_unicode_and_reports_truncation_instead_of_failing(tiny_model):
    long = "word " * 5000
    predictions = tiny_model.predict([*STRANGE_BUT_FINE, long])
    assert [p.text for p in predictions] == [*STRANGE_BUT_FINE, long]
    assert all(math.isfinite(p.sentiment) and sum(p.probabilities.values()) == pytest.approx(1.0) for p in predictions)
    assert [p.truncated for p in predictions] == [False] * len(STRANGE_BUT_FINE) + [True]
    result = tiny_model.encoder.embed([*STRANGE_BUT_FINE, long])
    assert result.truncated == [len(STRANGE_BUT_FINE)] and result.num_tokens[-1] == 5002
    assert torch.isfinite(torch.as_tensor(result.embeddings)).all()


def test_core_reads_a_csv_with_a_byte_order_mark(tmp_path):
    data = read_csv(write_csv(tmp_path, "\ufefftext,label\nA cat.,pets\nA dog.,dogs\n".encode()))
    assert data.texts == ["A cat.", "A dog."] and data.class_names == ["dogs", "pets"]


# -- model folders: pickle-bearing or tampered --------------------------------------------------------


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_encoder_dir):
    """Two saved tiny models: one referring to its base encoder, one storing a changed encoder."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir), max_length=64)
    base = MultiTaskModel(encoder, HeadsConfig(class_names=["Business", "Sci/Tech", "Sports", "World"]))
    base.save(root / "base")
    with torch.no_grad():
        base.encoder.backbone.embeddings.word_embeddings.weight[0] += 1.0
    base.save(root / "stored")
    assert json.loads((root / "stored" / "config.json").read_text())["encoder_weights"] == "stored"
    return root


def _edit_config(change):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _edit_heads(change):
    def edit(folder: Path) -> None:
        tensors = load_file(str(folder / "heads.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "heads.safetensors"))
    return edit


def _base_encoder_elsewhere_with(plant):
    """A copy of the base encoder beside the model, changed by ``plant``, and config.json pointing at it."""
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        elsewhere = folder.parent / "elsewhere-encoder"
        shutil.copytree(config["base_encoder"]["name"], elsewhere)
        plant(elsewhere)
        config["base_encoder"]["name"] = str(elsewhere)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


# A base encoder named by a path this machine does not offer is refused before it is read; one trusted by the
# caller still gets the folder checks: it must not be a way around them.
PLANTED = [
    ("a pickle", lambda f: (f / "pytorch_model.bin").write_bytes(PICKLE),
     r"elsewhere-encoder: refusing to load a folder with pickle files \(pytorch_model\.bin\)"),
    ("weights that are a link", lambda f: ((f / "model.safetensors").rename(f.parent / "weights"),
                                           (f / "model.safetensors").symlink_to(f.parent / "weights")),
     r"elsewhere-encoder: refusing to follow symbolic links \(model\.safetensors\)"),
]
NOT_OFFERED = (r"its base encoder '[^']*elsewhere-encoder' is not one this machine offers \(sentence-transformers/"
               r"all-MiniLM-L6-v2, all-MiniLM-L6-v2, [^)]*\); a model folder never makes Sentence Lab read another "
               r"folder\. Add the name to SENTENCE_LAB_MODELS, or if you trust this folder, pass --trust-base-path")

TAMPERED = [
    *[(f"base encoder: a folder with {what}", "base", _base_encoder_elsewhere_with(plant), NOT_OFFERED)
      for what, plant, _ in PLANTED],
    ("pickle beside the safetensors", "base", lambda f: (f / "pytorch_model.bin").write_bytes(PICKLE),
     r"refusing to load a folder with pickle files \(pytorch_model\.bin\): they can run code when opened"),
    ("pickle instead of the encoder's safetensors", "stored",
     lambda f: ((f / "encoder" / "model.safetensors").unlink(), (f / "encoder" / "pytorch_model.bin").write_bytes(PICKLE)),
     r"refusing to load a folder with pickle files \(encoder/pytorch_model\.bin\)"),
    ("a .pkl file", "base", lambda f: (f / "extra.pkl").write_bytes(PICKLE), r"pickle files \(extra\.pkl\)"),
    ("heads of garbage bytes", "base", lambda f: (f / "heads.safetensors").write_bytes(b"\x07" * 64 + b"junk" * 100),
     r"heads\.safetensors is not a readable safetensors file"),
    ("heads cut short", "base", lambda f: (f / "heads.safetensors").write_bytes((f / "heads.safetensors").read_bytes()[:200]),
     r"heads\.safetensors is not a readable safetensors file"),
    ("config edited: one more class", "base", _edit_config(lambda c: c["heads"]["class_names"].append("Weather")),
     r"heads\.safetensors does not match config\.json \(edited, or from another model\?\): "
     r"config\.json gives 5 for the classifier, the tensors hold 4"),
    ("config edited: a huge max_length", "base", _edit_config(lambda c: c["encoder"].update(max_length=100_000)),
     r"config\.json, 'encoder': max_length must be at most 8,192 tokens, got 100000"),
    # Checked before any layer is built: 10,000,000 here would have allocated a 15 GB projection first.
    ("config edited: a huge projection", "base", _edit_config(lambda c: c["encoder"].update(projection_dim=100_000)),
     r"config\.json gives 100000 for the projection, the tensors hold None"),
    ("heads with wrong shapes", "base", _edit_heads(lambda t: t.update({"sentiment_head.linear.weight": torch.zeros(1, 7)})),
     r"sentiment_head\.linear\.weight has shape \(1, 7\), expected \(1, 32\)"),
    ("heads with NaN weights", "base", _edit_heads(lambda t: t["classifier.linear.bias"].fill_(math.nan)),
     r"classifier\.linear\.bias holds NaN or infinite values"),
    ("config edited: checksum", "base", _edit_config(lambda c: c["base_encoder"].update(checksum="0" * 64)),
     r"has different weights \(checksum [0-9a-f]{12}…\) from the one this model was trained on \(000000000000…\)"),
    ("config edited: checksum removed", "base", _edit_config(lambda c: c["base_encoder"].pop("checksum")),
     r"base_encoder needs a 'name' and the 'checksum' of the weights it refers to"),
    ("config edited: base encoder from the hub", "base",
     _edit_config(lambda c: c["base_encoder"].update(name="someone/remote-code-model")),
     r"its base encoder 'someone/remote-code-model' is not one this machine offers"),
    ("config edited: unknown weights kind", "base", _edit_config(lambda c: c.update(encoder_weights="pickle")),
     r"encoder_weights must be 'base' or 'stored', got 'pickle'"),
    ("config edited: heads section removed", "base", _edit_config(lambda c: c.pop("heads")),
     r"config\.json: 'heads' must be a JSON object, got NoneType"),
    ("config edited: bad pooling", "base", _edit_config(lambda c: c["encoder"].update(pooling="median")),
     r"config\.json, 'encoder': Unknown pooling 'median'\. Valid pooling values are"),
    ("config that is not JSON", "base", lambda f: (f / "config.json").write_bytes(b"\xff\xfe{nope"),
     r"config\.json is not valid JSON"),
    ("heads as a symbolic link", "base",
     lambda f: ((f / "heads.safetensors").rename(f.parent / "elsewhere"), (f / "heads.safetensors").symlink_to(f.parent / "elsewhere")),
     r"refusing to follow symbolic links \(heads\.safetensors\)"),
]


@pytest.mark.parametrize("kind, tamper, message", [pytest.param(k, t, m, id=n) for n, k, t, m in TAMPERED])
def test_core_refuses_a_pickle_bearing_or_tampered_model_folder(saved_models, tmp_path, kind, tamper, message):
    folder = tmp_path / "model"
    shutil.copytree(saved_models / kind, folder)
    MultiTaskModel.load(folder)  # untouched, it loads
    tamper(folder)
    with pytest.raises(ModelFolderError, match=message):
        MultiTaskModel.load(folder)


@pytest.mark.parametrize("plant, message", [pytest.param(p, m, id=w) for w, p, m in PLANTED])
def test_a_trusted_base_encoder_path_still_gets_the_folder_checks(saved_models, tmp_path, plant, message):
    folder = tmp_path / "model"
    shutil.copytree(saved_models / "base", folder)
    _base_encoder_elsewhere_with(plant)(folder)
    with pytest.raises(ModelFolderError, match=message):
        MultiTaskModel.load(folder, trust_base_path=True)


def test_a_base_encoder_path_is_read_only_when_offered_or_trusted(saved_models, tmp_path, monkeypatch):
    """A model folder used to load any folder its config named (relative to the working directory, too)."""
    folder = tmp_path / "model"
    shutil.copytree(saved_models / "base", folder)
    _base_encoder_elsewhere_with(lambda f: None)(folder)
    with pytest.raises(ModelFolderError, match=NOT_OFFERED):
        MultiTaskModel.load(folder)
    assert_fails(run_cli("predict", "--model", folder, "Hello.", check=False), "is not one this machine offers")
    expected = MultiTaskModel.load(folder, trust_base_path=True).predict(["Hello."])[0].sentiment
    answer = json.loads(run_cli("predict", "--model", folder, "--trust-base-path", "--json", "--quiet", "Hello.").stdout)
    assert answer[0]["sentiment"] == pytest.approx(expected, abs=1e-5)
    monkeypatch.setenv("SENTENCE_LAB_MODELS", str(tmp_path / "elsewhere-encoder"))  # the host offers it
    assert MultiTaskModel.load(folder).predict(["Hello."])[0].sentiment == pytest.approx(expected, abs=1e-6)


# -- the command line -----------------------------------------------------------------------------------


def _cli_csv_rows():
    return [pytest.param(c, m, id=n) for n, c, m, cli in BAD_CSVS if cli]


@pytest.mark.parametrize("content, message", _cli_csv_rows())
def test_cli_train_refuses_bad_csv_in_one_line_and_saves_nothing(tmp_path, content, message):
    out = tmp_path / "model"
    proc = run_cli("train", "--csv", write_csv(tmp_path, content), "--out", out, "--quiet", check=False)
    assert_fails(proc, "")
    assert re.search(message, proc.stderr), proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    pytest.param(["embed", ""], "text 1 is empty: it has no visible character", id="embed empty text"),
    pytest.param(["predict", "Fine.", "\u200b\u200b"], "text 2 is empty: it has no visible character",
                 id="predict zero-width text"),
    pytest.param(["train", "--builtin", "synthetic", "--lr", "0"], "learning_rate must be > 0", id="train lr 0"),
    pytest.param(["train", "--builtin", "synthetic", "--epochs", "0"], "epochs must be an integer >= 1, got 0",
                 id="train 0 epochs"),
    pytest.param(["train", "--builtin", "synthetic", "--batch-size", "0"], "--batch-size must be >= 1, got 0",
                 id="train batch 0"),
    pytest.param(["train", "--builtin", "synthetic", "--classification-weight", "0", "--sentiment-weight", "0"],
                 "classification_weight and sentiment_weight are both 0", id="train task weights all 0"),
    pytest.param(["train", "--builtin", "synthetic", "--seed", "-3"], "seed must be a whole number from 0 to 2**63 - 1",
                 id="train negative seed"),
    pytest.param(["train", "--builtin", "synthetic", "--size", "40", "--freeze", "sentiment_head"],
                 "--freeze sentiment_head keeps a trained head as it is: pass --model DIR", id="train frozen random head"),
])
def test_cli_refuses_bad_input_in_one_line(tmp_path, args, message):
    out = tmp_path / "model"
    extra = ["--out", str(out)] if args[0] == "train" else []
    assert_fails(run_cli(*args, *extra, "--quiet", check=False), message)
    assert not out.exists()


def test_cli_refuses_a_non_utf8_text_file(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_bytes("Un café.\n".encode("latin-1"))
    assert_fails(run_cli("predict", "--file", sentences, check=False),
                 f"{sentences}: line 1: not UTF-8 text (byte 6 cannot be decoded); save the file as UTF-8")


def test_cli_refuses_a_pickle_bearing_model_folder(saved_models, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_models / "base", folder)
    (folder / "pytorch_model.bin").write_bytes(PICKLE)
    assert_fails(run_cli("predict", "--model", folder, "Hello.", check=False),
                 "refusing to load a folder with pickle files (pytorch_model.bin)")


# -- the app, as gradio_client drives it -------------------------------------------------------------


def test_limits_allow_one_run_at_a_time_and_read_the_hosts_allow_list(monkeypatch):
    assert Limits().max_runs == 1 and Limits().models == ()
    monkeypatch.setenv("SENTENCE_LAB_MODELS", " BAAI/bge-small-en-v1.5, ,/models/mine,BAAI/bge-small-en-v1.5")
    monkeypatch.setenv("SENTENCE_LAB_MAX_UPLOAD_MB", "0.5")
    limits = Limits.from_env()
    assert limits.models == ("BAAI/bge-small-en-v1.5", "/models/mine") and limits.max_upload_bytes == 512 * 1024
    monkeypatch.setenv("SENTENCE_LAB_MAX_UPLOAD_MB", "-1")
    with pytest.raises(ValueError, match="SENTENCE_LAB_MAX_UPLOAD_MB must be > 0, got '-1'"):
        Limits.from_env()


def test_the_train_handler_itself_refuses_a_name_off_the_allow_list(tiny_encoder_dir):
    """Gradio's dropdown refuses it first; the handler does too, for any other way in."""
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir), max_length=64)
    shared = Shared(encoder, None, Limits(models=("all-MiniLM-L6-v2",)))
    assert shared.models == (str(tiny_encoder_dir), "all-MiniLM-L6-v2")
    session = Session()
    with pytest.raises(gr.Error, match=r"Unknown base encoder '/etc'\. This server offers: .*tiny-bert, all-MiniLM-L6-v2"):
        list(TrainTab(shared).run(TrainForm(size=40, epochs=1, base_model="/etc"), session))
    assert session.model is None and not session.running


@pytest.fixture(scope="module")
def server(limited_server):
    return limited_server


@pytest.fixture(scope="module")
def shipped(server) -> list[dict]:
    """What a fresh visitor's Classify answers with the shipped model."""
    return classify(Client(server.url, verbose=False))


@pytest.fixture
def client(server) -> Client:
    return Client(server.url, verbose=False)  # a new client is a new visitor with its own session


def assert_still_serving(client: Client, shipped: list[dict]) -> None:
    """After a bad request the same visitor still gets the shipped model's answer."""
    again = classify(client)
    assert [p["label"] for p in again] == [p["label"] for p in shipped]
    for a, b in zip(again, shipped):
        assert set(a["probabilities"]) == AG_NEWS
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)


@pytest.mark.parametrize("content, message", [pytest.param(c, m, id=n) for n, c, m, _ in BAD_CSVS])
def test_app_refuses_bad_csv_with_the_same_message(client, shipped, tmp_path, content, message):
    csv = handle_file(str(write_csv(tmp_path, content)))
    with pytest.raises(AppError, match=message):
        client.predict(*train_args(source="csv", csv_file=csv, epochs=1), api_name="/train")
    assert_still_serving(client, shipped)


APP_BAD_REQUESTS = [
    ("/classify", ("",), r"Type at least one sentence \(one per line\)", "empty text"),
    ("/classify", (" \n\t \n",), r"Type at least one sentence", "whitespace-only text"),
    ("/classify", ("\u200b\n\u2060\ufeff\n\x00",), r"Type at least one sentence", "invisible-only text"),
    ("/embed", ("\n".join(f"Sentence {i}." for i in range(33)), "mean", True),
     r"At most 32 sentences at a time here; you gave 33", "too many sentences"),
    ("/compare", ("One.\nTwo.", "median", True), r"'median'.* is not in the list of choices", "unknown pooling"),
    ("/train", train_args(learning_rate=0), r"Learning rate must be > 0, got 0", "lr 0"),
    ("/train", train_args(learning_rate=-0.5), r"Learning rate must be > 0, got -0\.5", "lr negative"),
    ("/train", train_args(learning_rate="fast"), r"Learning rate must be a number, got 'fast'", "lr not a number"),
    ("/train", train_args(epochs=0), r"Value 0 is less than minimum value 1", "0 epochs"),
    ("/train", train_args(batch_size=0), r"Value 0 is less than minimum value 4", "batch 0"),
    ("/train", train_args(topic_weight=0, sentiment_weight=0),
     r"Topic weight and Sentiment weight are both 0: nothing would be learned", "task weights all 0"),
    ("/train", train_args(preset="sentiment_head", source="bbc_news"),
     r"the data has topics \['Entertainment', 'Politics', 'Sport', 'Tech'\] that the model in use has no class for",
     "a frozen head whose topics are not the data's"),
    ("/train", train_args(preset="classification_head", gradual=True),
     r"Gradual unfreezing opens the encoder layer by layer; it needs freeze 'none' or 'encoder'", "gradual + head"),
    ("/train", train_args(seed=2**63), r"Seed must be a whole number from 0 to 2\*\*63 - 1", "seed too large"),
    ("/train", train_args(size=MAX_ROWS + 10), rf"Value {MAX_ROWS + 10} is greater than maximum value {MAX_ROWS}",
     "more synthetic rows than the limit"),
    ("/train", train_args(source="/etc/passwd"), r"'/etc/passwd'.* is not in the list of choices", "a path as source"),
    ("/train", train_args(base_model="/etc"), rf"Value: /etc is not in the list of choices: {ALLOWED}",
     "a path as model name"),
    ("/train", train_args(base_model="../assets/default_model"),
     rf"Value: \.\./assets/default_model is not in the list of choices: {ALLOWED}", "a relative path as model name"),
    ("/train", train_args(base_model="BAAI/bge-small-en-v1.5"), rf"is not in the list of choices: {ALLOWED}",
     "a hub model the host did not allow"),
    ("/train", train_args(source="csv"), r"Upload a CSV file first", "csv chosen, no file"),
]


@pytest.mark.parametrize("endpoint, args, message", [pytest.param(e, a, m, id=n) for e, a, m, n in APP_BAD_REQUESTS])
def test_app_refuses_bad_requests_and_keeps_serving(client, shipped, endpoint, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=endpoint)
    assert_still_serving(client, shipped)


def test_app_refuses_an_upload_over_the_size_cap(server, client, shipped, tmp_path):
    rows = b"".join(b"A sentence about pets number %d.,pets\n" % i for i in range(MAX_UPLOAD_BYTES // 30))
    big = write_csv(tmp_path, b"text,label\n" + rows)
    assert big.stat().st_size > MAX_UPLOAD_BYTES
    # gradio_client reads the cap from the page's config and refuses before sending, as the browser does ...
    with pytest.raises(ValueError, match=rf"data\.csv exceeds the maximum file size of {MAX_UPLOAD_BYTES} bytes"):
        client.predict(*train_args(source="csv", csv_file=handle_file(str(big))), api_name="/train")
    # ... and the server refuses it too, for a caller that sends it anyway.
    with big.open("rb") as f:
        reply = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("data.csv", f, "text/csv")}, timeout=60)
    assert reply.status_code == 413, reply.text
    assert f"File size exceeded maximum allowed size of {MAX_UPLOAD_BYTES} bytes" in reply.text
    assert_still_serving(client, shipped)


def test_app_refuses_a_file_that_is_not_csv(client, shipped, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("text,label\nA cat.,pets\nA dog.,dogs\n")
    with pytest.raises(AppError, match=r"Invalid file type\. Please upload a file that is one of these formats: \['\.csv'\]"):
        client.predict(*train_args(source="csv", csv_file=handle_file(str(notes))), api_name="/train")
    assert_still_serving(client, shipped)


@pytest.mark.parametrize("path", ["/etc/passwd", str(Path(__file__).resolve().parent.parent / "requirements.txt")])
def test_app_never_reads_a_file_that_was_not_uploaded(server, client, shipped, path):
    """A raw API call naming a server path instead of uploading: Gradio refuses it before our handler."""
    args = train_args(source="csv", csv_file={"path": path, "meta": {"_type": "gradio.FileData"}})
    event = httpx.post(f"{server.url}gradio_api/call/train", json={"data": args}, timeout=30).json()["event_id"]
    reply = httpx.get(f"{server.url}gradio_api/call/train/{event}", timeout=60).text
    assert "event: error" in reply and "because it was not uploaded by a user" in reply, reply
    assert_still_serving(client, shipped)


def test_app_reads_strange_unicode_and_reports_long_text(client):
    long = "word " * 6000  # 30,000 characters: beyond the server's 20,000-character cut and 256 tokens
    plot, table, predictions = client.predict("\n".join([*STRANGE_BUT_FINE, long]), api_name="/classify")
    assert len(predictions) == len(STRANGE_BUT_FINE) + 1
    assert all(set(p["probabilities"]) == AG_NEWS and -1 <= p["sentiment"] <= 1 for p in predictions)
    assert [p["truncated"] for p in predictions] == [False] * len(STRANGE_BUT_FINE) + [True]
    assert table["data"][-1][0].startswith("✂ word word") and len(table["data"][-1][0]) <= 2002  # a table cell is bounded
    assert len(predictions[-1]["text"]) == 20_000
    info = client.predict(f"Short.\n{long}\n{'word ' * 300}", "mean", True, api_name="/embed")[1]
    assert "sentence 2 is longer than 20,000 characters; it was cut there, and only its first 256 tokens" in info
    assert "sentence 3 has 302 tokens; only its first 256 were read" in info


def test_app_samples_a_csv_over_the_row_limit_and_says_so(client, tmp_path):
    kinds = ["cats", "dogs"]
    rows = "".join(f"My {kinds[i % 2][:-1]} number {i} is lovely.,{kinds[i % 2]}\n" for i in range(MAX_ROWS + 50))
    path = write_csv(tmp_path, ("\ufefftext,label\n" + rows).encode())  # with a byte-order mark, as Excel writes
    _, _, status, model_zip, note, *_ = client.predict(*train_args(source="csv", csv_file=handle_file(str(path)), epochs=1),
                                                 api_name="/train")
    assert f"Data: {MAX_ROWS:,} of {MAX_ROWS + 50:,} data.csv (a sample: this server's limit is {MAX_ROWS:,} rows " \
           "per run)" in status
    assert "Done" in status and model_zip
    assert all(set(p["probabilities"]) == set(kinds) for p in classify(client))


def test_app_trains_on_a_model_the_host_allowed(client, tmp_path):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train"]
    (choice,) = [p for p in api["parameters"] if p["parameter_name"] == "base_model"]
    assert "all-MiniLM-L6-v2" in choice["python_type"]["type"]  # SENTENCE_LAB_MODELS extends the list
    _, _, status, model_zip, note, *_ = client.predict(*train_args(size=40, epochs=1, base_model="all-MiniLM-L6-v2"),
                                                 api_name="/train")
    assert "Done" in status and "with all-MiniLM-L6-v2" in note
    with zipfile.ZipFile(model_zip) as archive:
        archive.extractall(tmp_path)
    assert json.loads((tmp_path / "sentence-lab-model" / "config.json").read_text())["encoder"]["model_name"] == \
        "all-MiniLM-L6-v2"


# -- a model zip a visitor uploads (the Classify tab's model picker) -------------------------------------


@pytest.mark.parametrize("entries, link, says", [
    ({"../evil.txt": b"x"}, None, "points outside the model's folder"),
    ({"/etc/cron.d/evil": b"x"}, None, "points outside the model's folder"),
    ({"m/config.json": b"{}"}, "m/heads.safetensors", "is a link"),
    ({f"m/f{i}": b"" for i in range(100)}, None, "100 entries"),
    ({"m/config.json": b"{}", "m/big.bin": b"\0" * 3_000_000}, None, "over 2 MB once unpacked"),  # deflates to KBs
    ({"a/config.json": b"{}", "b/config.json": b"{}"}, None, "no config.json at its top or in its one folder"),
])
def test_an_uploaded_model_zip_cannot_reach_outside_its_folder_or_grow_without_bound(tmp_path, entries, link, says):
    from core.folders import extract_zip

    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link:  # a symbolic link entry, as `zip --symlinks` writes it
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ModelFolderError, match=re.escape(says)):
        extract_zip(archive, dest, max_bytes=2 * 2**20)
    assert not (tmp_path / "evil.txt").exists() and all(p.is_relative_to(dest) for p in dest.rglob("*"))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 2 * 2**20

"""Exports keep what makes the embeddings ours, and keep the heads: checked against the tools that load them."""

import json

import numpy as np
import pytest
import torch

from core.config import DEFAULT_HEADS_DIR, HeadsConfig
from core.export import export, export_onnx, export_sentence_transformers
from core.model import MultiTaskModel
from tests.helpers import make_tiny_encoder
from tests.test_cli import assert_fails, run_cli, run_json

# A padded batch: lengths from one word to past the 256-token limit, and non-Latin text.
TEXTS = ["Hi.", "The central bank raised interest rates again to fight inflation.", "مرحبا بالعالم 🎉 naïve café",
         "word " * 300]


@pytest.fixture(scope="module")
def shipped():
    return MultiTaskModel.load(DEFAULT_HEADS_DIR)


@pytest.mark.slow
def test_sentence_transformers_loads_the_export_and_embeds_as_we_do(shipped, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = export_sentence_transformers(shipped, tmp_path / "st")
    st = SentenceTransformer(str(folder), device="cpu")
    theirs = st.encode(TEXTS, convert_to_numpy=True, batch_size=8)
    ours = shipped.encoder.encode(TEXTS)
    assert shipped.encoder.config.normalize and np.allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    assert np.abs(theirs - ours).max() <= 1e-5
    assert st.max_seq_length == 256
    info = json.loads((folder / "sentence_lab.json").read_text())
    assert info["class_names"] == shipped.class_names and info["pooling"] == "mean"
    # The heads ride along and give the lab's predictions when applied as the card says.
    from safetensors.torch import load_file

    heads = load_file(str(folder / "heads.safetensors"))
    e = torch.as_tensor(theirs)
    probs = torch.softmax(e @ heads["classifier.linear.weight"].T + heads["classifier.linear.bias"], -1)
    sentiment = (e @ heads["sentiment_head.linear.weight"].T + heads["sentiment_head.linear.bias"]).squeeze(-1).clamp(-1, 1)
    predictions = shipped.predict(TEXTS)
    assert np.abs(probs.numpy() - [[p.probabilities[c] for c in shipped.class_names] for p in predictions]).max() <= 1e-5
    assert np.abs(sentiment.numpy() - [p.sentiment for p in predictions]).max() <= 1e-5
    card = (folder / "README.md").read_text()
    assert "SentenceTransformer(" in card and "sentence-transformers/all-MiniLM-L6-v2" in card


@pytest.mark.parametrize("pooling", ["cls", "max", "mean_sqrt_len", "weighted_mean", "last_token"])
def test_sentence_transformers_export_keeps_pooling_projection_and_normalisation(tokenizer, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = MultiTaskModel(make_tiny_encoder(tokenizer, pooling=pooling, projection_dim=8, normalize=pooling != "cls"),
                           HeadsConfig(class_names=["a", "b"]))
    folder = export_sentence_transformers(model, tmp_path / pooling)
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:3], convert_to_numpy=True)
    ours = model.encoder.encode(TEXTS[:3])
    assert theirs.shape == (3, 8)
    assert np.abs(theirs - ours).max() <= 1e-5


def _onnx_run(folder, texts):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})))


@pytest.mark.slow
def test_onnx_graph_matches_pytorch_on_a_padded_batch(shipped, tmp_path):
    folder = export_onnx(shipped, tmp_path / "onnx")
    predictions = shipped.predict(TEXTS)
    for texts, expected in ((TEXTS, predictions), (TEXTS[1:2], predictions[1:2])):  # padded, and a batch of one
        out = _onnx_run(folder, texts)
        assert set(out) == {"embeddings", "probabilities", "sentiment"}
        assert np.abs(out["embeddings"] - shipped.encoder.encode(texts)).max() <= 1e-4
        probs = np.array([[p.probabilities[c] for c in shipped.class_names] for p in expected])
        assert np.abs(out["probabilities"] - probs).max() <= 1e-4
        assert np.abs(out["sentiment"] - np.array([p.sentiment for p in expected])).max() <= 1e-4
    info = json.loads((folder / "sentence_lab.json").read_text())
    assert info["onnx"]["outputs"] == ["embeddings", "probabilities", "sentiment"] and info["sentiment_range"] == [-1.0, 1.0]
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 256


def test_onnx_graph_has_only_the_heads_the_model_has(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=["a", "b", "c"], sentiment=False)).eval()
    out = _onnx_run(export_onnx(model, tmp_path / "onnx"), TEXTS[:3])
    assert set(out) == {"embeddings", "probabilities"} and out["probabilities"].shape == (3, 3)
    with torch.no_grad():
        ref = model(model.encoder.collate(model.encoder.tokenize(TEXTS[:3])[0]))
    assert np.abs(out["probabilities"] - torch.softmax(ref.logits, -1).numpy()).max() <= 1e-4


def test_a_failed_export_leaves_nothing_behind(tokenizer, tmp_path, monkeypatch):
    import core.export

    model = MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=["a", "b"]))
    export_sentence_transformers(model, tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out").iterdir())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(core.export, "_write_card", broken)
    with pytest.raises(OSError, match="disk full"):
        export_sentence_transformers(model, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before  # the old export is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no half-written temporary folder
    with pytest.raises(ValueError, match="Valid formats are: sentence-lab, sentence-transformers, onnx"):
        export(model, tmp_path / "x", "pickle")


@pytest.mark.slow
def test_cli_export(tmp_path):
    result = run_json("export", tmp_path / "st", "--format", "sentence-transformers")
    assert {"modules.json", "heads.safetensors", "README.md", "model.safetensors"} <= set(result["files"])
    assert_fails(run_cli("export", tmp_path / "x", "--format", "onnx", "--model", tmp_path / "nothing", check=False),
                 "is not a saved Sentence Lab model")


def test_saved_model_folder_has_a_model_card(tokenizer, tmp_path):
    from core.training import fit
    from core.config import TrainingConfig
    from core.datasets import make_synthetic

    torch.manual_seed(0)
    model = MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=["Business", "Sci/Tech", "Sports", "World"]))
    train_set, val_set = make_synthetic(120, seed=1).split(0.25, seed=0)
    fit(model, train_set, val_set, TrainingConfig(epochs=2, freeze="none", seed=7))
    card = (model.save(tmp_path / "m") / "README.md").read_text()
    for expected in ("Base encoder: `tiny-bert` (fine-tuned here", "Pooling: mean", "Freezing: preset `none`",
                     "Epochs: 2", "seed 7", "Train data: 90 rows", "| validation |", "MultiTaskModel.load(",
                     "Topic classes: Business, Sci/Tech, Sports, World"):
        assert expected in card, expected
    assert "test: ag_news/test.csv" in (DEFAULT_HEADS_DIR / "README.md").read_text()


@pytest.mark.parametrize("fmt", ["sentence-transformers", "onnx"])
def test_an_export_the_user_added_to_is_not_replaced(tokenizer, tmp_path, fmt):
    from sentence_transformers import SentenceTransformer

    from core.errors import FolderExistsError

    model = MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=["a", "b"]))
    folder = export(model, tmp_path / "out", fmt)
    export(model, folder, fmt)  # an earlier export, as it was written: replaced
    if fmt == "sentence-transformers":  # the list of our files is one more JSON file that loaders pass over
        assert SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:2]).shape == (2, model.encoder.embedding_dim)
    (folder / "deploy.sh").write_text("kubectl apply -f model.yaml")
    with pytest.raises(FolderExistsError, match=r"out holds files Sentence Lab did not write \(deploy.sh\)"):
        export(model, folder, fmt)
    assert (folder / "deploy.sh").read_text() == "kubectl apply -f model.yaml"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_files_added_while_an_export_is_written_are_not_lost(tokenizer, tmp_path, monkeypatch):
    import core.export
    from core.errors import FolderExistsError

    model = MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=["a", "b"]))
    folder = export_sentence_transformers(model, tmp_path / "out")
    write_card = core.export._write_card

    def user_saves_meanwhile(*args):
        (folder / "notes.txt").write_text("written while the export ran")
        write_card(*args)

    monkeypatch.setattr(core.export, "_write_card", user_saves_meanwhile)
    with pytest.raises(FolderExistsError, match=r"out holds files Sentence Lab did not write \(notes.txt\)"):
        export_sentence_transformers(model, folder)
    assert (folder / "notes.txt").read_text() == "written while the export ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the new export is gone, the old one kept

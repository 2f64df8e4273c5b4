"""MultiTaskModel: forward, predict, save/load (small heads-only folder, no pickle, checksums)."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from core.config import HeadsConfig
from core.model import MultiTaskModel

TEXTS = ["The striker scored twice in the final.", "Shares of the bank dropped 5% today.",
         "The new phone has a faster chip.", "The election results were announced in the capital."]


def test_predict_probabilities_and_class_names(real_model):
    predictions = real_model.predict(TEXTS)
    assert [p.text for p in predictions] == TEXTS
    for p in predictions:
        assert set(p.probabilities) == {"Business", "Sci/Tech", "Sports", "World"}
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.label == max(p.probabilities, key=p.probabilities.get)
        assert -1.0 <= p.sentiment <= 1.0
    assert real_model.predict("one text")[0].text == "one text"
    assert real_model.predict([]) == []


def test_predict_is_deterministic_despite_dropout(real_model):
    real_model.train()  # predict must switch dropout off itself
    a = real_model.predict(TEXTS)
    b = real_model.predict(TEXTS)
    assert [p.probabilities for p in a] == [p.probabilities for p in b]
    assert real_model.training


def test_forward_runs_only_the_asked_tasks(tiny_model):
    features = tiny_model.encoder.collate(tiny_model.encoder.tokenize(TEXTS)[0])
    both = tiny_model(features)
    assert both.logits.shape == (4, 4) and both.sentiment.shape == (4,) and both.embeddings.shape == (4, 32)
    only = tiny_model(features, tasks=["sentiment"])
    assert only.logits is None and only.sentiment is not None
    pooled = tiny_model.encoder.pooled(features)
    tiny_model.eval()
    assert torch.allclose(tiny_model(pooled=pooled).logits, tiny_model(features).logits, atol=1e-6)
    with pytest.raises(ValueError, match="Pass exactly one of features or pooled"):
        tiny_model(features, pooled=pooled)


def test_model_without_a_classification_head(tiny_model):
    topicless = MultiTaskModel(tiny_model.encoder, HeadsConfig())
    assert topicless.tasks == ("sentiment",)
    p = topicless.predict("hi")[0]
    assert p.label is None and p.probabilities == {} and p.sentiment is not None
    with pytest.raises(ValueError, match=r"no 'classification' head\. Its tasks are: sentiment"):
        topicless(pooled=torch.zeros(1, 32), tasks=["classification"])


def test_sentiment_is_reported_on_the_recorded_scale(tiny_model):
    with torch.no_grad():
        tiny_model.sentiment_head.linear.bias.fill_(50.0)  # raw output far above the scale
    assert tiny_model.predict("anything")[0].sentiment == 1.0
    zero_one = MultiTaskModel(tiny_model.encoder, HeadsConfig(sentiment_range=(0, 1)))
    with torch.no_grad():
        zero_one.sentiment_head.linear.bias.fill_(-50.0)
    assert zero_one.predict("anything")[0].sentiment == 0.0


def test_save_load_heads_only_identical_and_small(real_model, tmp_path, monkeypatch):
    real_model.record.metrics = {"test": {"accuracy": 0.5}}
    folder = real_model.save(tmp_path / "model")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["README.md", "config.json", "heads.safetensors", "sentence_lab_files.json"]  # no 90 MB encoder
    assert sum(p.stat().st_size for p in folder.iterdir()) < 100_000
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder_weights"] == "base"
    assert config["base_encoder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(config["base_encoder"]["checksum"]) == 64
    assert config["heads"]["class_names"] == ["Business", "Sci/Tech", "Sports", "World"]
    assert config["encoder"]["pooling"] == "mean" and config["encoder"]["max_length"] == 256
    assert {"torch", "transformers"} <= set(config["versions"])

    def no_pickle(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = MultiTaskModel.load(folder)
    assert loaded.class_names == real_model.class_names
    assert loaded.record.metrics == {"test": {"accuracy": 0.5}}
    a, b = real_model.predict_tensors(TEXTS), loaded.predict_tensors(TEXTS)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.sentiment, b.sentiment)


def test_a_sentiment_only_model_saves_and_loads_back_the_same(tiny_model, tmp_path):
    # it once saved but did not load ("config.json gives 0 for the classifier, the tensors hold None"), so a
    # fine-tuned sentiment-only model could not be evaluated
    topicless = MultiTaskModel(tiny_model.encoder, HeadsConfig())
    with torch.no_grad():
        topicless.encoder.backbone.encoder.layer[-1].output.dense.weight.add_(0.01)  # as if fine-tuned
        topicless.sentiment_head.linear.weight.add_(0.5)
    loaded = MultiTaskModel.load(topicless.save(tmp_path / "sentiment"))
    assert loaded.tasks == ("sentiment",) and loaded.classifier is None
    a, b = topicless.predict_tensors(TEXTS).sentiment, loaded.predict_tensors(TEXTS).sentiment
    assert torch.allclose(a, b, atol=1e-6)


def test_changed_encoder_is_stored_and_reloads_identically(tiny_model, tmp_path, monkeypatch):
    with torch.no_grad():
        tiny_model.encoder.backbone.encoder.layer[-1].output.dense.weight.add_(0.01)  # as if fine-tuned
    folder = tiny_model.save(tmp_path / "tuned")
    assert json.loads((folder / "config.json").read_text())["encoder_weights"] == "stored"
    assert (folder / "encoder" / "model.safetensors").is_file()
    assert not list((folder / "encoder").glob("*.bin"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pickle")))
    loaded = MultiTaskModel.load(folder)
    a, b = tiny_model.predict_tensors(TEXTS), loaded.predict_tensors(TEXTS)
    assert torch.allclose(a.logits, b.logits, atol=1e-6) and torch.allclose(a.sentiment, b.sentiment, atol=1e-6)
    # saved again after loading, the weights stay stored: they are not the named base model's
    assert json.loads((loaded.save(tmp_path / "again") / "config.json").read_text())["encoder_weights"] == "stored"


def test_wrong_base_checksum_is_refused(real_model, tmp_path):
    folder = real_model.save(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["base_encoder"]["checksum"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="different weights"):
        MultiTaskModel.load(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        MultiTaskModel.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MultiTaskModel.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a Sentence Lab model config"):
        MultiTaskModel.load(tmp_path)


def test_save_replaces_an_existing_folder_whole(real_model, tmp_path):
    folder = real_model.save(tmp_path / "model")
    (folder / "heads.safetensors").write_bytes(b"old")  # a previous save of a model, its files since changed
    real_model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "heads.safetensors",
                                                        "sentence_lab_files.json"]
    assert (folder / "heads.safetensors").stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind


def test_save_never_replaces_a_folder_that_is_not_a_model(tiny_model, tmp_path):
    from core.export import export_sentence_transformers

    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "thesis.txt").write_text("years of work")
    for save in (tiny_model.save, lambda f: export_sentence_transformers(tiny_model, f)):
        with pytest.raises(FileExistsError, match="is not a saved Sentence Lab model: refusing to replace it"):
            save(home)
        assert (home / "notes" / "thesis.txt").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is not a folder"):
        tiny_model.save(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert (tiny_model.save(tmp_path / "empty") / "config.json").is_file()  # empty: fine
    tiny_model.save(tmp_path / "empty")  # a model: replaced whole


def test_a_folder_saved_before_the_typed_record_loads_and_saves_back_the_same(tmp_path):
    """The shipped folder was written by the version that kept an untyped dict: it reads into a TrainingRecord."""
    from core.config import DEFAULT_HEADS_DIR

    model = MultiTaskModel.load(DEFAULT_HEADS_DIR)
    record = model.record
    assert record.config.epochs == 20 and record.config.freeze == "encoder" and record.best_epoch == 12
    assert record.train_data.rows == 13090 and record.validation_data.labelled == 596
    assert record.metrics["test"]["ag_news/test.csv"]["accuracy"] == pytest.approx(0.8844, abs=5e-5)
    assert "ag_news/train.csv" in " ".join(record.files["train"])
    old = json.loads((DEFAULT_HEADS_DIR / "config.json").read_text())
    new = json.loads((model.save(tmp_path / "again") / "config.json").read_text())
    assert new.keys() == old.keys()
    # What the old record lacked: epochs run, the head solver (its default, "exact", is what a new run uses), and
    # the settings of a learning encoder, at their defaults (its encoder was frozen, so they did nothing).
    added = {"head_solver": "exact", "keep_similarity": 0.0, "topic_head_first": False, "precision": "fp32",
             "group_by_length": True, "encoder_dropout": True, "best_epoch_by": "loss", "keep_sentiment_rows": 1.0,
             "pair_weight": 1.0, "pairs_per_step": 8}
    assert new["training"] == old["training"] | {"epochs_run": None, "config": old["training"]["config"] | added}
    assert {k: new[k] for k in ("metrics", "data", "heads", "encoder", "base_encoder")} == \
           {k: old[k] for k in ("metrics", "data", "heads", "encoder", "base_encoder")}


def _loadable_tiny_model(tiny_encoder_dir) -> MultiTaskModel:
    """A tiny model whose base encoder loads by name (a folder), as a saved model's must."""
    from core.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir), max_length=64)
    return MultiTaskModel(encoder, HeadsConfig(class_names=["a", "b"]))


def test_a_record_that_does_not_read_back_is_dropped_not_fatal(tiny_encoder_dir, tmp_path):
    folder = _loadable_tiny_model(tiny_encoder_dir).save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["training"] = {"config": {"epochs": "many", "unknown_key": 1}, "steps": "x"}
    config["metrics"] = {"validation": {"accuracy": 0.9}, "odd": [1, 2]}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = MultiTaskModel.load(folder)
    assert loaded.record.config is None and loaded.record.metrics == {"validation": {"accuracy": 0.9}}


def test_save_and_every_export_go_through_the_one_folder_writer(tiny_encoder_dir, tmp_path, monkeypatch):
    from core import folders
    from core.config import EXPORT_FORMATS
    from core.export import export

    calls = []
    real = folders.write_folder

    def counting(folder, is_ours):
        calls.append(Path(folder).name)
        return real(folder, is_ours)

    monkeypatch.setattr(folders, "write_folder", counting)
    tiny_model = _loadable_tiny_model(tiny_encoder_dir)
    for fmt in EXPORT_FORMATS:
        export(tiny_model, tmp_path / fmt, fmt)
    assert calls == list(EXPORT_FORMATS)
    assert MultiTaskModel.load(tmp_path / "sentence-lab").class_names == tiny_model.class_names


@pytest.mark.parametrize("scale", [(-1e39, 1e39), (0.0, 1e30)])
def test_a_sentiment_range_past_what_float32_losses_hold_is_refused(scale):
    from core.config import HeadsConfig
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"goes beyond ±1,000,000; use a scale such as -1 to 1, 0 to 1 or 1 to 5"):
        HeadsConfig(sentiment_range=scale)
    assert HeadsConfig(sentiment_range=(1, 5)).sentiment_range == (1.0, 5.0)


def test_a_model_with_a_projection_saves_and_loads_back_the_same(tiny_encoder_dir, tmp_path):
    from core.encoder import SentenceEncoder

    torch.manual_seed(0)
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir), projection_dim=8, max_length=64)
    model = MultiTaskModel(encoder, HeadsConfig(class_names=["a", "b"])).eval()
    again = MultiTaskModel.load(model.save(tmp_path / "projected"))  # the size check sees the projection's 8 rows
    texts = ["A projected sentence.", "Another one."]
    assert again.encoder.projection.out_features == 8
    assert torch.allclose(again.encoder.encode(texts, convert_to="tensor"), model.encoder.encode(texts, convert_to="tensor"))


# -- a folder is ours to replace only while it holds nothing but what we wrote there (issue 13) ------------


@pytest.mark.parametrize("add, named", [("notes.txt", "notes.txt"), ("src/main.py", "src/"), ("src/", "src/"),
                                        ("data/more/rows.csv", "data/")])
def test_save_never_replaces_a_model_folder_the_user_added_to(tiny_model, tmp_path, add, named):
    from core.errors import FolderExistsError

    folder = tiny_model.save(tmp_path / "model")
    path = folder / add
    if add.endswith("/"):
        path.mkdir()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    with pytest.raises(FolderExistsError, match=rf"model holds files Sentence Lab did not write \({named}\): refusing "
                                                "to replace it; choose a new or empty folder or move them out"):
        tiny_model.save(folder)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
    assert path.is_dir() or path.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing written beside it either


def test_a_config_that_looks_like_ours_does_not_make_a_folder_ours(tiny_model, tmp_path):
    from core.errors import FolderExistsError

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text(json.dumps({"format": "sentence-lab"}))
    (project / "main.py").write_text("print('mine')")
    with pytest.raises(FolderExistsError, match="does not list the files Sentence Lab wrote there"):
        tiny_model.save(project)
    assert sorted(p.name for p in project.iterdir()) == ["config.json", "main.py", "src"]
    # A list of our files does not make main.py ours either: only what the list names is replaced.
    (project / "sentence_lab_files.json").write_text(json.dumps({"files": ["config.json"]}))
    with pytest.raises(FolderExistsError, match=r"holds files Sentence Lab did not write \(main.py, src/\)"):
        tiny_model.save(project)
    assert (project / "main.py").read_text() == "print('mine')"


def test_a_clean_save_lists_its_files_and_is_replaced(tiny_model, tmp_path):
    from core.folders import MANIFEST_FILE

    layer = tiny_model.encoder.backbone.encoder.layer[-1].output.dense.weight
    pretrained = layer.detach().clone()
    with torch.no_grad():
        layer.add_(0.01)  # as if fine-tuned: the encoder is stored in encoder/
    folder = tiny_model.save(tmp_path / "model")
    listed = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    on_disk = sorted(str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*"))
    assert listed == [p for p in on_disk if p != MANIFEST_FILE] and "encoder/" in listed and "heads.safetensors" in listed
    (folder / "README.md").unlink()  # a file of ours that is gone is no reason to refuse
    with torch.no_grad():
        layer.copy_(pretrained)  # back to the base encoder: the next save has no encoder/
    tiny_model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "heads.safetensors", MANIFEST_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_link_in_a_saved_folder_makes_it_not_ours(tiny_model, tmp_path):
    from core.errors import FolderExistsError

    folder = tiny_model.save(tmp_path / "model")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.txt").write_text("years of work")
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(tmp_path / "thesis")  # a name we wrote, now a link to the user's work
    with pytest.raises(FolderExistsError, match=r"did not write \(README.md\)"):
        tiny_model.save(folder)
    assert (tmp_path / "thesis" / "chapter1.txt").read_text() == "years of work"


def test_a_folder_saved_before_files_were_listed_is_not_replaced(tiny_model, tmp_path):
    from core.errors import FolderExistsError
    from core.folders import MANIFEST_FILE

    folder = tiny_model.save(tmp_path / "model")
    (folder / MANIFEST_FILE).unlink()  # as an earlier version saved it
    with pytest.raises(FolderExistsError, match=f"model does not list the files Sentence Lab wrote there \\(saves from "
                                                f"earlier versions have no {MANIFEST_FILE}\\), so yours cannot be told "
                                                "from ours: refusing to replace it"):
        tiny_model.save(folder)
    (folder / MANIFEST_FILE).write_text("[not json")
    with pytest.raises(FolderExistsError, match=f"its {MANIFEST_FILE} is not such a list"):
        tiny_model.save(folder)


def test_train_refuses_an_out_folder_the_user_added_to_before_any_work(tiny_model, tmp_path, monkeypatch, capsys):
    import core.training
    from core.__main__ import main

    out = tiny_model.save(tmp_path / "model")
    (out / "notes.txt").write_text("my notes")

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(core.training, "fit", no_training)
    assert main(["train", "--builtin", "synthetic", "--size", "40", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {out} holds files Sentence Lab did not write (notes.txt): refusing to replace it; "
                   "choose a new or empty folder or move them out"), err
    assert (out / "notes.txt").read_text() == "my notes"

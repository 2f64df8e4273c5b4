"""The shipped default model (assets/default_model): real answers on real sentences."""

import copy
import json

import pytest
import torch

from core.config import DEFAULT_HEADS_DIR
from core.datasets import load_ag_news, load_sst
from core.model import MultiTaskModel
from core.training import evaluate


@pytest.fixture(scope="module")
def default_model():
    return MultiTaskModel.load(DEFAULT_HEADS_DIR)


def test_folder_is_small_heads_only_and_records_its_figures():
    files = sorted(p.name for p in DEFAULT_HEADS_DIR.iterdir())
    assert files == ["README.md", "confidence.safetensors", "config.json", "heads.safetensors",
                     "sentence_lab_files.json"]  # + what we wrote; confidence: the unsure rule's reference points
    assert sum(p.stat().st_size for p in DEFAULT_HEADS_DIR.iterdir()) < 2 * 1024 * 1024
    config = json.loads((DEFAULT_HEADS_DIR / "config.json").read_text())
    assert config["heads"]["class_names"] == ["Business", "Sci/Tech", "Sports", "World"]
    assert config["heads"]["sentiment_range"] == [-1.0, 1.0]
    test = config["metrics"]["test"]
    assert test["ag_news/test.csv"]["accuracy"] >= 0.880 and "macro_f1" in test["ag_news/test.csv"]
    assert test["sst/test.csv"]["pearson"] >= 0.660 and "mse" in test["sst/test.csv"]


def test_topics_of_clear_sentences(default_model):
    sentences = {
        "The striker scored twice as United beat Chelsea 3-1 in the cup final.": "Sports",
        "Stocks slid on Wall Street as investors worried about rising interest rates.": "Business",
        "Apple unveiled a new iPhone with a faster chip and a better camera.": "Sci/Tech",
        "Voters went to the polls on Sunday in a tightly contested presidential election.": "World",
    }
    predictions = default_model.predict(list(sentences))
    assert [p.label for p in predictions] == list(sentences.values())
    for p in predictions:
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_sentiment_direction_and_scale(default_model):
    loved, dull = default_model.predict(["I loved every minute of it", "a dull, lifeless mess"])
    assert loved.sentiment > 0.3
    assert dull.sentiment < -0.3
    odd = ["!!!!!!!!", "the the the the", "Best. Film. Ever. " * 80, "worst worst worst worst worst", "😀", "ok"]
    assert all(-1.0 <= p.sentiment <= 1.0 for p in default_model.predict(odd))


@pytest.mark.slow
def test_recorded_figures_reproduce_on_the_test_files(default_model, datasets_dir):
    recorded = json.loads((DEFAULT_HEADS_DIR / "config.json").read_text())["metrics"]["test"]
    topics = evaluate(default_model, load_ag_news(datasets_dir, "test"))
    sentiment = evaluate(default_model, load_sst(datasets_dir, "test", rescale=True))
    assert topics["accuracy"] == pytest.approx(recorded["ag_news/test.csv"]["accuracy"], abs=1e-6)
    assert sentiment["pearson"] == pytest.approx(recorded["sst/test.csv"]["pearson"], abs=1e-5)
    assert sentiment["mse"] == pytest.approx(recorded["sst/test.csv"]["mse"], abs=1e-5)


def test_the_app_loads_it_on_the_shared_encoder_without_a_second_backbone(default_model, _real_encoder):
    """ui.state loads the shipped model on the base encoder it already holds: one fp32 backbone and one
    bf16 copy in memory, not two of each, and the same answers as a model loaded on its own."""
    base = _real_encoder.with_settings(normalize=True)  # the app's base encoder: other settings, same weights
    shared = MultiTaskModel.load(DEFAULT_HEADS_DIR, base=base)
    mine, theirs = dict(shared.encoder.backbone.named_parameters()), dict(base.backbone.named_parameters())
    assert mine.keys() == theirs.keys() and all(mine[n].data_ptr() == theirs[n].data_ptr() for n in mine)
    assert shared.encoder._half is base._half  # the half-precision copy too
    assert shared.encoder.config.normalize == default_model.encoder.config.normalize  # its own settings
    texts = ["Stocks rallied after the earnings report.", "A dreadful, boring film."]
    for a, b in zip(shared.predict(texts), default_model.predict(texts)):
        assert a.label == b.label and a.sentiment == pytest.approx(b.sentiment, abs=1e-6)
    other = copy.deepcopy(base)
    with torch.no_grad():
        next(other.backbone.parameters()).add_(1.0)  # no longer the pretrained weights: not shared
    loaded = MultiTaskModel.load(DEFAULT_HEADS_DIR, base=other)
    assert next(loaded.encoder.backbone.parameters()).data_ptr() != next(other.backbone.parameters()).data_ptr()
    assert loaded.predict(texts)[0].sentiment == pytest.approx(default_model.predict(texts)[0].sentiment, abs=1e-6)

"""The unsure rule (core.confidence): its mechanics, training builds it, it saves and loads, and the shipped model
marks off-topic sentences unsure while keeping clear news sentences sure."""

import json

import pytest
import torch
import torch.nn.functional as F

from core.confidence import MIN_ROWS, PERCENTILE, ConfidenceRule, default_min_probability, fit_rule, spherical_kmeans
from core.config import DEFAULT_HEADS_DIR, HeadsConfig, TrainingConfig
from core.datasets import make_synthetic
from core.encoder import SentenceEncoder
from core.errors import ModelFolderError
from core.folders import MANIFEST_FILE
from core.model import CONFIDENCE_FILE, MultiTaskModel
from core.training import DoneEvent, fit, train
from benchmarks.unsure import EXAMPLES, OFF_TOPIC  # one list: what the benchmark reports, this test holds
from tests.helpers import make_tiny_encoder

CLASSES = ["Business", "Sci/Tech", "Sports", "World"]


def _clusters(n_per_class: int, seed: int = 0, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four topics, each a tight cloud around its own direction: (N, D) rows, (N,) ids, (4, D) directions."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(4, dim, generator=g), dim=-1)
    y = torch.arange(4).repeat_interleave(n_per_class)
    X = centres[y] + 0.15 * torch.randn(len(y), dim, generator=g)
    return X, y, centres


# -- the rule ---------------------------------------------------------------------------------------


def test_min_probability_is_a_third_of_the_way_from_a_blind_guess_to_certainty():
    assert default_min_probability(4) == pytest.approx(0.5)
    assert default_min_probability(2) == pytest.approx(2 / 3)
    assert default_min_probability(10) == pytest.approx(0.4)


def test_rows_like_the_training_rows_are_sure_and_far_ones_are_not():
    X, y, centres = _clusters(200)
    rule = fit_rule(X, y, 4, seed=0)
    assert rule.references is not None and 4 <= len(rule.references) <= 64 and rule.rows == 800
    assert torch.allclose(rule.references.norm(dim=-1), torch.ones(len(rule.references)), atol=1e-5)
    new_y = torch.arange(4).repeat_interleave(200)  # new rows of the same topics
    new = centres[new_y] + 0.15 * torch.randn(len(new_y), X.shape[1], generator=torch.Generator().manual_seed(7))
    confident = F.one_hot(new_y, 4).float() * 0.9 + 0.025  # the head is sure: only distance can say unsure
    share = sum(r is not None for r in rule.judge(new, confident)) / len(new)
    assert share <= 3 * PERCENTILE / 100  # about PERCENTILE% of in-domain rows, never most of them
    far = torch.randn(20, X.shape[1], generator=torch.Generator().manual_seed(3))
    far = F.normalize(far - (far @ centres.T) @ centres, dim=-1)  # (nearly) orthogonal to every topic
    reasons = rule.judge(far, confident[:20])
    assert all(r is not None and r.startswith("unlike the training data") for r in reasons)


def test_a_low_top_probability_is_unsure_and_both_reasons_are_given():
    X, y, centres = _clusters(50)
    rule = fit_rule(X, y, 4, seed=0)
    hesitant = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.97, 0.01, 0.01, 0.01]])
    near = centres[:2]
    assert rule.judge(near, hesitant) == ["low confidence: top topic 40% (under 50%)", None]
    far = -centres[:1]
    both = rule.judge(far, hesitant[:1])[0]
    assert both.startswith("low confidence: top topic 40%") and "; unlike the training data: similarity" in both


def test_a_value_next_to_its_threshold_is_printed_so_that_they_differ():
    rule = ConfidenceRule(min_probability=0.5)
    assert rule.judge(torch.zeros(1, 3), torch.tensor([[0.4983, 0.5017 / 3, 0.5017 / 3, 0.5017 / 3]])) == \
        ["low confidence: top topic 49.8% (under 50.0%)"]


def test_too_few_rows_keep_the_probability_rule_only():
    X, y, _ = _clusters(5)  # 20 rows
    assert len(X) < MIN_ROWS
    rule = fit_rule(X, y, 4)
    assert rule.references is None and rule.min_similarity is None and rule.min_probability == 0.5
    assert rule.nearest(X) is None
    assert rule.judge(-X[:1], torch.tensor([[0.97, 0.01, 0.01, 0.01]])) == [None]


def test_the_same_seed_gives_the_same_rule_and_a_topic_with_few_rows_gets_few_points():
    X, y, _ = _clusters(100)
    a, b = fit_rule(X, y, 4, seed=3), fit_rule(X, y, 4, seed=3)
    assert torch.equal(a.references, b.references) and a.min_similarity == b.min_similarity
    few = torch.cat([X[y != 0], X[y == 0][:16]]), torch.cat([y[y != 0], y[y == 0][:16]])
    rule = fit_rule(*few, 4, seed=0)
    assert len(rule.references) == 3 * 12 + 2  # 100 rows: 12 points; 16 rows: 2 (8 rows a point at least)


def test_spherical_kmeans_gives_unit_centres_and_copes_with_duplicates():
    g = torch.Generator().manual_seed(0)
    same = F.normalize(torch.ones(10, 4), dim=-1)
    centres = spherical_kmeans(same, 5, g)
    assert len(centres) == 1 and torch.allclose(centres[0], same[0])
    X = F.normalize(torch.randn(50, 8, generator=g), dim=-1)
    centres = spherical_kmeans(X, 6, g)
    assert centres.shape == (6, 8) and torch.allclose(centres.norm(dim=-1), torch.ones(6), atol=1e-5)


# -- the model ----------------------------------------------------------------------------------------


def test_predict_marks_unsure_keeps_the_top_topic_and_leaves_sentiment_alone(tiny_model):
    texts = ["one sentence", "another one"]
    before = tiny_model.predict(texts)
    out = tiny_model.predict_tensors(texts)
    X = out.embeddings
    tiny_model.confidence = ConfidenceRule(min_probability=0.0, references=F.normalize(-X[:1], dim=-1),
                                           min_similarity=0.999)
    after = tiny_model.predict(texts)
    for a, b in zip(before, after):
        assert a.label == b.label and a.probabilities == b.probabilities and a.sentiment == b.sentiment
    assert all(p.unsure and p.unsure_reason.startswith("unlike the training data") for p in after)
    assert after[0].to_dict()["unsure"] is True
    tiny_model.confidence = ConfidenceRule(min_probability=0.0)
    assert not any(p.unsure or p.unsure_reason for p in tiny_model.predict(texts))


def test_a_model_without_a_topic_head_is_never_unsure(tiny_encoder):
    model = MultiTaskModel(tiny_encoder, HeadsConfig(class_names=[]))
    assert model.confidence is None
    (p,) = model.predict("anything")
    assert p.label is None and not p.unsure and p.unsure_reason is None


@pytest.fixture
def synthetic():
    return make_synthetic(240, seed=5).split(0.25, seed=0)


def _tiny(tokenizer):
    torch.manual_seed(0)
    return MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=CLASSES))


def test_training_builds_the_rule_from_the_cached_embeddings_and_the_events_keep_their_kinds(tokenizer, synthetic):
    train_set, val_set = synthetic
    model = _tiny(tokenizer)
    assert model.confidence.references is None  # a fresh model: probability only
    events = list(train(model, train_set, val_set, TrainingConfig(epochs=2, freeze="encoder")))
    assert {e.kind for e in events} <= {"start", "prepare", "step", "epoch", "validation", "done"}
    assert isinstance(events[-1], DoneEvent)
    rule = model.confidence
    assert rule.references is not None and rule.rows == len(train_set)
    assert rule.references.shape[1] == model.encoder.embedding_dim and -1 <= rule.min_similarity <= 1
    again = _tiny(tokenizer)
    fit(again, train_set, val_set, TrainingConfig(epochs=2, freeze="encoder"))
    assert torch.equal(again.confidence.references, rule.references)  # seeded: the same run, the same rule


def test_a_run_that_trains_the_encoder_embeds_again_and_one_on_20_rows_keeps_probability_only(tokenizer, synthetic):
    train_set, val_set = synthetic
    model = _tiny(tokenizer)
    fit(model, train_set, val_set, TrainingConfig(epochs=1, freeze="none", batch_size=32))
    assert model.confidence.references is not None
    X = model.predict_tensors(train_set.texts[:8]).embeddings
    assert (model.confidence.nearest(X) > model.confidence.min_similarity).float().mean() >= 0.5
    small = _tiny(tokenizer)
    fit(small, make_synthetic(20, seed=1), None, TrainingConfig(epochs=1, freeze="encoder"))
    assert small.confidence.references is None and small.confidence.min_probability == 0.5


@pytest.mark.parametrize("settings", [dict(freeze="encoder"), dict(gradual_unfreeze=True, batch_size=16)])
def test_the_rule_from_the_runs_cache_is_the_one_the_final_model_gives(tokenizer, synthetic, settings):
    """Frozen encoder: the cached embeddings; gradual unfreezing: the open top run on the cached bottom."""
    train_set, val_set = synthetic
    model = _tiny(tokenizer)
    config = TrainingConfig(epochs=2, early_stopping_patience=None, **settings)
    fit(model, train_set, val_set, config)
    sample = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))
    X = model.predict_tensors([train_set.texts[i] for i in sample.tolist()]).embeddings
    expected = fit_rule(X, train_set.label_ids(CLASSES)[sample], 4, config.seed)
    assert torch.allclose(model.confidence.references, expected.references, atol=1e-4)
    assert model.confidence.min_similarity == pytest.approx(expected.min_similarity, abs=1e-3)


def test_a_stopped_run_builds_the_rule_only_from_what_it_holds(tokenizer, synthetic):
    import threading

    train_set, val_set = synthetic
    stop = threading.Event()
    stop.set()
    model = _tiny(tokenizer)
    fit(model, train_set, val_set, TrainingConfig(epochs=1, freeze="none"), stop=stop)
    assert model.confidence.references is None  # Stop must end the run now: no second pass over the rows
    frozen = _tiny(tokenizer)
    fit(frozen, train_set, val_set, TrainingConfig(epochs=1, freeze="encoder"), stop=stop)
    assert frozen.confidence.references is not None  # the embeddings were at hand: it costs nothing


def test_a_sentiment_only_run_keeps_the_topic_rule_while_the_encoder_is_frozen(tokenizer, synthetic):
    train_set, val_set = synthetic
    model = _tiny(tokenizer)
    fit(model, train_set, val_set, TrainingConfig(epochs=1, freeze="encoder"))
    rule = model.confidence
    fit(model, train_set, val_set, TrainingConfig(epochs=1, freeze="encoder", classification_weight=0.0))
    assert model.confidence is rule
    fit(model, train_set, val_set, TrainingConfig(epochs=1, freeze="classification_head", classification_weight=0.0))
    assert model.confidence.references is None  # the encoder moved: the old points no longer describe it


# -- saving and loading --------------------------------------------------------------------------------


def _trained_tiny(tiny_encoder_dir) -> MultiTaskModel:
    """A tiny model whose base encoder loads by name, with a full rule."""
    torch.manual_seed(0)
    model = MultiTaskModel(SentenceEncoder.from_pretrained(str(tiny_encoder_dir), max_length=64),
                           HeadsConfig(class_names=CLASSES))
    data = make_synthetic(160, seed=2)
    X = model.predict_tensors(data.texts).embeddings
    model.confidence = fit_rule(X, data.label_ids(CLASSES), 4, seed=0)
    return model


TEXTS = ["The goalkeeper was a triumph in the cup final.", "my cat sleeps all day", "Die Pizza war gut."]


def test_the_rule_saves_and_loads_back_the_same(tiny_encoder_dir, tmp_path):
    model = _trained_tiny(tiny_encoder_dir)
    folder = model.save(tmp_path / "m")
    assert (folder / CONFIDENCE_FILE).is_file()
    assert CONFIDENCE_FILE in json.loads((folder / MANIFEST_FILE).read_text())["files"]
    config = json.loads((folder / "config.json").read_text())["confidence"]
    assert config["references"] == len(model.confidence.references) and config["rows"] == 160
    assert "Unsure topic: when the top topic's probability is under 50%" in (folder / "README.md").read_text()
    loaded = MultiTaskModel.load(folder)
    assert torch.allclose(loaded.confidence.references, model.confidence.references)
    assert loaded.confidence.min_similarity == model.confidence.min_similarity
    assert [p.to_dict() for p in loaded.predict(TEXTS)] == [p.to_dict() for p in model.predict(TEXTS)]
    model.save(folder)  # a folder holding the rule's file is ours to replace


def test_a_folder_from_before_the_rule_loads_with_the_probability_rule(tiny_encoder_dir, tmp_path):
    folder = _trained_tiny(tiny_encoder_dir).save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    del config["confidence"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / CONFIDENCE_FILE).unlink()
    loaded = MultiTaskModel.load(folder)
    assert loaded.confidence.references is None and loaded.confidence.min_probability == 0.5
    assert all(isinstance(p.unsure, bool) for p in loaded.predict(TEXTS))


def _edit(folder, tensors=None, **section):
    from safetensors.torch import save_file

    config = json.loads((folder / "config.json").read_text())
    config["confidence"].update(section)
    (folder / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(folder / CONFIDENCE_FILE))


@pytest.mark.parametrize("break_it, message", [
    (lambda f, r: _edit(f, {"references": torch.full_like(r, float("nan"))}), "NaN"),
    (lambda f, r: _edit(f, {"references": r[:, :5].contiguous()}), r"shape \(\d+, 5\), expected"),
    (lambda f, r: _edit(f, {"points": r}), "one tensor named 'references'"),
    (lambda f, r: _edit(f, references=3), r"shape \(\d+, 32\), expected \(3, 32\)"),
    (lambda f, r: _edit(f, min_similarity=float("inf")), "min_similarity must be a cosine similarity"),
    (lambda f, r: _edit(f, min_probability="high"), "min_probability must be a number from 0 to 1"),
    (lambda f, r: (f / CONFIDENCE_FILE).unlink(), "their file is missing"),
    (lambda f, r: (f / CONFIDENCE_FILE).write_bytes(b"junk" * 20), "not a readable safetensors file"),
])
def test_a_broken_rule_is_refused_with_what_is_wrong(tiny_encoder_dir, tmp_path, break_it, message):
    model = _trained_tiny(tiny_encoder_dir)
    folder = model.save(tmp_path / "m")
    break_it(folder, model.confidence.references)
    with pytest.raises(ModelFolderError, match=message):
        MultiTaskModel.load(folder)


def test_a_rule_file_without_its_config_section_is_refused(tiny_encoder_dir, tmp_path):
    folder = _trained_tiny(tiny_encoder_dir).save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    del config["confidence"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=f"{CONFIDENCE_FILE} is there but config.json has no 'confidence'"):
        MultiTaskModel.load(folder)


# -- the shipped model ------------------------------------------------------------------------------------


def test_the_shipped_model_is_unsure_off_topic_and_sure_of_clear_news():
    model = MultiTaskModel.load(DEFAULT_HEADS_DIR)
    rule = model.confidence
    assert rule.references is not None and rule.rows == 2000 and 0.2 < rule.min_similarity < 0.3
    off = model.predict(OFF_TOPIC)
    assert sum(p.unsure for p in off) >= 8, [(p.text, p.label, p.unsure_reason) for p in off]
    assert all(p.label in CLASSES for p in off)  # the top topic is still given
    news = model.predict(list(EXAMPLES))
    for p, topic in zip(news, EXAMPLES.values()):
        assert p.label == topic and not p.unsure and p.unsure_reason is None and p.probabilities[topic] > 0.9
    german, spanish = model.predict(["Die Pizza war fantastisch und der Kellner sehr freundlich.",
                                     "Me encanta escuchar música los domingos por la mañana."])
    assert german.unsure and spanish.unsure

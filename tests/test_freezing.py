"""Freezing presets, gradual unfreezing and layer-wise learning rates.

Each preset: trainable counts, frozen weights bit-identical after an optimizer step, trainable
ones changed, every trainable parameter with a finite non-zero gradient.
"""

import pytest
import torch

from core.datasets import make_synthetic
from core.freezing import (apply_preset, encoder_layers, freeze, freeze_report, parameter_groups, unfreeze,
                           unfreeze_top_layers)
from core.losses import MultiTaskLoss


def _counts(module):
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def _expected_trainable(model, preset):
    parts = {"encoder": _counts(model.encoder.backbone), "classification_head": _counts(model.classifier),
             "sentiment_head": _counts(model.sentiment_head)}
    if preset == "none":
        return sum(parts.values())
    if preset == "all":
        return 0
    return sum(v for k, v in parts.items() if k != preset)


def _one_step(model):
    """One AdamW step on a real batch of synthetic data; returns the state before the step."""
    data = make_synthetic(8, seed=3)
    features = model.encoder.collate(model.encoder.tokenize(data.texts)[0])
    model.train()
    out = model(features)
    loss = MultiTaskLoss()(out.logits, out.sentiment, data.label_ids(model.class_names), data.sentiment_targets())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss.total.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    return before


@pytest.mark.parametrize("preset", ["none", "encoder", "classification_head", "sentiment_head"])
def test_preset_counts_gradients_and_frozen_weights(tiny_model, preset):
    report = apply_preset(tiny_model, preset)
    assert report.trainable == _expected_trainable(tiny_model, preset)
    assert report.total == sum(p.numel() for p in tiny_model.parameters())
    before = _one_step(tiny_model)
    for name, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
            assert not torch.equal(p, before[name]), f"trainable {name} did not change"
        else:
            assert p.grad is None, name
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def test_preset_all_freezes_everything(tiny_model):
    report = apply_preset(tiny_model, "all")
    assert report.trainable == 0 and report.total > 0
    assert not any(p.requires_grad for p in tiny_model.parameters())


def test_real_model_encoder_preset_counts(real_model):
    report = apply_preset(real_model, "encoder")
    assert report.parts["encoder"] == (0, 22_565_376)  # all-MiniLM-L6-v2 (22,713,216) less its unused pooler
    assert report.parts["classification_head"] == (384 * 4 + 4, 384 * 4 + 4)
    assert report.parts["sentiment_head"] == (385, 385)
    assert report.trainable == 1925
    assert "trainable 1,925 / 22,567,301" in str(report)


def test_freezing_is_reversible(tiny_model):
    total = freeze_report(tiny_model).trainable
    assert freeze(tiny_model, "sentiment_head").trainable == total - _counts(tiny_model.sentiment_head)
    assert unfreeze(tiny_model, "sentiment_head").trainable == total
    with pytest.raises(ValueError, match="Valid parts are: encoder, projection, classification_head, sentiment_head"):
        freeze(tiny_model, "head")


def test_unknown_preset_lists_valid_ones(tiny_model):
    with pytest.raises(ValueError, match="Valid presets are: none, all, encoder, classification_head, sentiment_head"):
        apply_preset(tiny_model, "heads")


def test_gradual_unfreezing_opens_layers_top_down(real_model):
    layers = encoder_layers(real_model.encoder.backbone)
    assert len(layers) == 6
    apply_preset(real_model, "encoder")
    for n in range(7):
        report = unfreeze_top_layers(real_model, n)
        is_open = [all(p.requires_grad for p in layer.parameters()) for layer in layers]
        assert is_open == [False] * (6 - n) + [True] * n
        assert report.open_layers == n
        assert not any(p.requires_grad for p in real_model.encoder.backbone.embeddings.parameters())
        assert all(p.requires_grad for p in real_model.classifier.parameters())
    unfreeze_top_layers(real_model, 7)  # past the top of the stack: the embeddings open too
    assert all(p.requires_grad for p in real_model.encoder.backbone.parameters())


def test_layerwise_learning_rate_decay(tiny_model):
    groups = parameter_groups(tiny_model, 1e-3, encoder_learning_rate=1e-4, layer_lr_decay=0.5, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    layers = encoder_layers(tiny_model.encoder.backbone)
    assert all(lr_of[id(p)] == pytest.approx(1e-4) for p in layers[1].parameters())  # top layer
    assert all(lr_of[id(p)] == pytest.approx(5e-5) for p in layers[0].parameters())
    assert all(lr_of[id(p)] == pytest.approx(2.5e-5) for p in tiny_model.encoder.backbone.embeddings.parameters())
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in tiny_model.classifier.parameters())
    assert decay_of[id(tiny_model.classifier.linear.bias)] == 0.0
    assert decay_of[id(tiny_model.classifier.linear.weight)] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_model.parameters()))  # each parameter once


@pytest.mark.parametrize("projection_dim", [None, 16])
def test_preview_counts_what_apply_preset_would_without_building_a_model(tokenizer, projection_dim):
    from core.config import FREEZE_PRESETS, HeadsConfig
    from core.freezing import preview
    from core.model import MultiTaskModel
    from tests.helpers import make_tiny_encoder

    encoder = make_tiny_encoder(tokenizer, projection_dim=projection_dim)
    checksum = encoder.base_checksum
    for heads in (HeadsConfig(class_names=["a", "b", "c"]), HeadsConfig(class_names=[], sentiment=True),
                  HeadsConfig(class_names=["a", "b"], sentiment=False)):
        for preset in FREEZE_PRESETS:
            predicted = preview(encoder, heads, preset)
            model = MultiTaskModel(encoder, heads)
            assert predicted == apply_preset(model, preset), (heads, preset)
        for n in range(4):  # gradual unfreezing: 0..2 layers of 2, then past the top (the embeddings open too)
            model = MultiTaskModel(encoder, heads)
            apply_preset(model, "encoder")
            assert preview(encoder, heads, "encoder", open_layers=n) == unfreeze_top_layers(model, n), (heads, n)
    with pytest.raises(ValueError, match="Unknown freeze preset 'some'. Valid presets are: none, all, encoder"):
        preview(encoder, HeadsConfig(), "some")
    assert encoder.base_checksum == checksum

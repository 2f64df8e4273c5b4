"""MultiTaskLoss: each task masked to its rows, weighted total, gradients, counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.losses import IGNORE_LABEL, MultiTaskLoss

NAN = math.nan


def _batch(seed: int = 0):
    """Six rows, three classes: rows 1 and 4 have no label, rows 2 and 5 have no sentiment."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 3, generator=g, requires_grad=True)
    sentiment = torch.randn(6, generator=g, requires_grad=True)
    labels = torch.tensor([0, IGNORE_LABEL, 2, 1, IGNORE_LABEL, 2])
    targets = torch.tensor([0.5, -0.25, NAN, 1.0, 0.0, NAN])
    return logits, sentiment, labels, targets


HAS_LABEL = torch.tensor([True, False, True, True, False, True])
HAS_SENTIMENT = torch.tensor([True, True, False, True, True, False])


def test_per_task_terms_equal_the_losses_on_rows_with_targets():
    logits, sentiment, labels, targets = _batch()
    out = MultiTaskLoss()(logits, sentiment, labels, targets)
    expected_ce = F.cross_entropy(logits[HAS_LABEL], labels[HAS_LABEL])
    expected_mse = F.mse_loss(sentiment[HAS_SENTIMENT], targets[HAS_SENTIMENT])
    torch.testing.assert_close(out.per_task["classification"], expected_ce)
    torch.testing.assert_close(out.per_task["sentiment"], expected_mse)
    assert torch.isfinite(out.total)
    # the terms are not what the unmasked losses give (guards against ignoring the mask)
    hand_all = ((sentiment - torch.nan_to_num(targets)) ** 2).mean()
    assert not torch.allclose(out.per_task["sentiment"], hand_all)


def test_total_is_the_weighted_sum_of_the_terms():
    logits, sentiment, labels, targets = _batch(1)
    out = MultiTaskLoss({"classification": 0.3, "sentiment": 2.0})(logits, sentiment, labels, targets)
    expected = 0.3 * F.cross_entropy(logits[HAS_LABEL], labels[HAS_LABEL]) \
        + 2.0 * F.mse_loss(sentiment[HAS_SENTIMENT], targets[HAS_SENTIMENT])
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(out.total, 0.3 * out.per_task["classification"] + 2.0 * out.per_task["sentiment"])


def test_default_weights_are_one_each():
    logits, sentiment, labels, targets = _batch(2)
    out = MultiTaskLoss()(logits, sentiment, labels, targets)
    torch.testing.assert_close(out.total, out.per_task["classification"] + out.per_task["sentiment"])


def test_masked_rows_do_not_change_the_loss_and_get_zero_gradient():
    logits, sentiment, labels, targets = _batch(3)
    loss = MultiTaskLoss()
    before = loss(logits, sentiment, labels, targets).total.detach().clone()

    # change only the rows without a target: logits of rows 1, 4; sentiment of rows 2, 5
    logits2 = logits.detach().clone()
    logits2[~HAS_LABEL] += 100.0
    sentiment2 = sentiment.detach().clone()
    sentiment2[~HAS_SENTIMENT] -= 50.0
    logits2.requires_grad_(True)
    sentiment2.requires_grad_(True)
    out = loss(logits2, sentiment2, labels, targets)
    torch.testing.assert_close(out.total.detach(), before)

    out.total.backward()
    assert torch.all(logits2.grad[~HAS_LABEL] == 0)
    assert torch.all(sentiment2.grad[~HAS_SENTIMENT] == 0)
    # rows with a target do get a gradient
    assert torch.all(logits2.grad[HAS_LABEL].abs().sum(dim=1) > 0)
    assert torch.all(sentiment2.grad[HAS_SENTIMENT] != 0)
    assert torch.isfinite(logits2.grad).all() and torch.isfinite(sentiment2.grad).all()


def test_changing_a_labelled_row_does_change_the_loss():
    logits, sentiment, labels, targets = _batch(4)
    loss = MultiTaskLoss()
    before = loss(logits, sentiment, labels, targets).total
    logits2 = logits.detach().clone()
    logits2[0, 0] += 5.0  # row 0 has label 0
    assert not torch.allclose(loss(logits2, sentiment, labels, targets).total, before)


def test_batch_without_labels_has_no_classification_term_and_backward_works():
    logits, sentiment, _, targets = _batch(5)
    labels = torch.full((6,), IGNORE_LABEL)
    out = MultiTaskLoss()(logits, sentiment, labels, targets)
    assert "classification" not in out.per_task
    assert out.counts["classification"] == 0
    torch.testing.assert_close(out.total, F.mse_loss(sentiment[HAS_SENTIMENT], targets[HAS_SENTIMENT]))
    out.total.backward()
    assert logits.grad is None or torch.all(logits.grad == 0)
    assert torch.isfinite(sentiment.grad).all() and sentiment.grad.abs().sum() > 0


def test_batch_with_no_targets_at_all_gives_zero_and_backward_works():
    logits, sentiment, _, _ = _batch(6)
    labels = torch.full((6,), IGNORE_LABEL)
    targets = torch.full((6,), NAN)
    out = MultiTaskLoss()(logits, sentiment, labels, targets)
    assert out.per_task == {}
    assert out.counts == {"classification": 0, "sentiment": 0}
    assert out.total.item() == 0.0
    out.total.backward()  # must not raise
    assert logits.grad is None or torch.all(logits.grad == 0)
    assert sentiment.grad is None or torch.all(sentiment.grad == 0)


def test_classification_only_model_ignores_sentiment_targets():
    logits, _, labels, targets = _batch(7)
    out = MultiTaskLoss()(logits, None, labels, targets)
    assert set(out.per_task) == {"classification"}
    assert "sentiment" not in out.counts
    torch.testing.assert_close(out.total, F.cross_entropy(logits[HAS_LABEL], labels[HAS_LABEL]))


@pytest.mark.parametrize("zeroed, kept", [("classification", "sentiment"), ("sentiment", "classification")])
def test_weight_zero_removes_a_task_from_the_total(zeroed, kept):
    logits, sentiment, labels, targets = _batch(8)
    out = MultiTaskLoss({zeroed: 0.0})(logits, sentiment, labels, targets)
    torch.testing.assert_close(out.total, out.per_task[kept])
    out.total.backward()
    zeroed_input = logits if zeroed == "classification" else sentiment
    assert zeroed_input.grad is None or torch.all(zeroed_input.grad == 0)


def test_counts_are_the_rows_with_each_target():
    logits, sentiment, labels, targets = _batch(9)
    out = MultiTaskLoss()(logits, sentiment, labels, targets)
    assert out.counts == {"classification": 4, "sentiment": 4}
    labels2 = torch.tensor([IGNORE_LABEL, IGNORE_LABEL, 2, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL])
    targets2 = torch.tensor([NAN, 0.1, 0.2, NAN, NAN, NAN])
    out2 = MultiTaskLoss()(logits, sentiment, labels2, targets2)
    assert out2.counts == {"classification": 1, "sentiment": 2}


def test_half_precision_logits_give_a_float32_loss_equal_to_the_float_one():
    logits, sentiment, labels, targets = _batch(10)
    out = MultiTaskLoss()(logits.detach().half(), sentiment.detach().half(), labels, targets)
    assert out.total.dtype == torch.float32
    expected = F.cross_entropy(logits.detach().half().float()[HAS_LABEL], labels[HAS_LABEL])
    torch.testing.assert_close(out.per_task["classification"], expected)

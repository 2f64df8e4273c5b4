"""MultiTaskLoss: weighted cross-entropy + weighted MSE, each masked to rows with that target."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError

IGNORE_LABEL = -100  # a row without a class label
# a row without a sentiment target carries NaN


@dataclass
class LossOutput:
    """The weighted total and each task's unweighted term (only tasks with rows in the batch).

    Attributes:
        total: scalar tensor, sum of weight * term over the tasks present.
        per_task: task -> scalar tensor (unweighted mean over that task's rows).
        counts: task -> rows that carried the task's target.
    """

    total: Tensor
    per_task: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class MultiTaskLoss(nn.Module):
    """Cross-entropy on class logits + MSE on sentiment, each over the rows that have that target.

    Args:
        weights: task -> weight in the total ("classification", "sentiment").
    """

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        super().__init__()
        unknown = sorted(set(weights or {}) - {"classification", "sentiment"})
        if unknown:
            raise ConfigError(f"Unknown task weight(s) {unknown}. Valid tasks are: classification, sentiment")
        self.weights = {"classification": 1.0, "sentiment": 1.0} | (weights or {})

    def forward(self, logits: Tensor | None, sentiment: Tensor | None, labels: Tensor, targets: Tensor) -> LossOutput:
        """
        Args:
            logits: (B, C) or None.  sentiment: (B,) or None.
            labels: (B,) class indices, IGNORE_LABEL where a row has none.
            targets: (B,) sentiment values, NaN where a row has none.
        """
        per_task: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        if logits is not None:
            has = labels != IGNORE_LABEL
            counts["classification"] = int(has.sum())
            if counts["classification"]:
                per_task["classification"] = F.cross_entropy(logits[has].float(), labels[has])
        if sentiment is not None:
            has = ~torch.isnan(targets)
            counts["sentiment"] = int(has.sum())
            if counts["sentiment"]:
                per_task["sentiment"] = F.mse_loss(sentiment[has].float(), targets[has].float())
        terms = [self.weights[t] * v for t, v in per_task.items() if self.weights[t] > 0]
        if terms:
            total = torch.stack(terms).sum()
        else:  # no task present: a zero that still connects to the graph, so backward() is harmless
            ref = logits if logits is not None else sentiment
            total = ref.sum() * 0.0 if ref is not None else torch.zeros(())
        return LossOutput(total=total, per_task=per_task, counts=counts)

"""What the model returns: tensors from ``forward``, and one ``Prediction`` per text from ``predict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class MultiTaskOutput:
    """What ``MultiTaskModel.forward`` returns.

    Attributes:
        embeddings: (B, D) sentence embeddings the heads saw.
        logits: (B, C) class logits, or None when classification was not asked for.
        sentiment: (B,) raw sentiment scores, or None when sentiment was not asked for.
    """

    embeddings: Tensor
    logits: Tensor | None = None
    sentiment: Tensor | None = None


@dataclass
class Prediction:
    """One text's answer: class probabilities, the top class, and the sentiment on the model's scale.

    ``label`` is always the most probable topic; ``unsure`` says not to trust it (core.confidence:
    the top probability is low, or the text is unlike the topic head's training data), and
    ``unsure_reason`` says which, in a few words. Sentiment is not affected.
    """

    text: str
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    sentiment: float | None = None
    truncated: bool = False  # the text was longer than the encoder's max_length: only its start was read
    unsure: bool = False  # the topic is a guess: show "unsure" rather than ``label``
    unsure_reason: str | None = None  # e.g. "low confidence: top topic 41% (under 50%)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

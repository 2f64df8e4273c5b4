"""When a topic answer is "unsure": the top topic is a weak guess, or the sentence is unlike the training data.

A softmax always names a topic, even for "the pizza was amazing" (a news-topic head has no
"none of these"). Two signals say when not to trust it:

1. **Low probability.** The top topic's probability is below ``min_probability``: a third of the
   way from a blind guess (1/C) to certainty, i.e. 50% for four topics, 67% for two. Below it the
   head itself hesitates between topics.
2. **Far from the training data.** The cosine similarity of the sentence's embedding (the vector
   the heads see) to the nearest *reference point* is below ``min_similarity``. The reference
   points summarise the topic-labelled training rows: spherical k-means, up to 16 points per topic
   (at most 256 in all, a few hundred KB). The threshold comes from the training data itself: each
   training row's similarity to reference points built *without* it (4 folds), and the 3rd
   percentile of those, so about 3 in 100 sentences like the training rows fall below it. It
   holds for any model a user trains, not only the shipped one.

Why both: a softmax can be confident far from its data: on the shipped model, 18 of 35 off-topic
sentences get a top topic of 50% or more ("I'm learning to knit a scarf." -> World 84%). The
similarity separates much better: those sentences reach 0.11-0.30, while half of the AG News test
rows reach 0.49 or more and 95% reach 0.29 or more. Why these numbers: chosen on the shipped AG
News model with a held-out set of 35 off-topic sentences (not the ones the tests count). With 16
points per topic, the 2nd percentile (0.234) marked 31 of 35 unsure and 4.6% of AG News test rows;
the 3rd (0.262) marked 34 of 35 and 5.7%; the 5th (0.288) 34 of 35 and 7.2%, and short headlines
pay most (11%, 13%, 18% of them). The number of points matters less: 1 to 32 per topic at the 3rd
percentile mark 32-35 of the 35 and 5.1-5.8% of AG News rows; 16 gives a topic made of several kinds
of story (football, tennis, ...) several points and keeps the file small (98 KB for four topics). On AG News test the topic is right 90.0% of the time on the rows
left sure against 88.4% on all, and 63% on the rows marked unsure (benchmarks/unsure.py).

With fewer than MIN_ROWS topic-labelled rows the 3rd percentile would be two or three rows, noise:
such a model keeps the probability rule only, as do folders saved before the rule existed.

    rule = fit_rule(embeddings, labels, num_classes=4, seed=42)   # (N, D), (N,) class ids
    reasons = rule.judge(embeddings, probabilities)               # (B, D), (B, C) -> B x (str | None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

POINTS_PER_CLASS = 16  # k-means points per topic: a topic is several kinds of story (football, tennis, ...)
MAX_POINTS = 256  # in all: many topics get fewer points each, so the reference stays a few hundred KB
ROWS_PER_POINT = 8  # a point summarises at least this many rows: 40 rows of a topic make 5 points, not 16
MAX_ROWS = 2000  # training rows the reference is built from, when the run holds their vectors (a frozen encoder)
# ... and when the encoder trained and they must be embedded once more after the run: 400 news-length rows
# take about 8 s on two CPU cores, silent (the run's events keep their shape), which a visitor waits through.
# Fewer rows give sparser points and a lower threshold that calibrates itself: on AG News, 500 to 2,000 rows
# all mark ~5% of test rows unsure; 2,000 catch 1-2 more of 35 off-topic sentences than 500.
MAX_ROWS_EMBEDDED_AGAIN = 400
MIN_ROWS = 100  # fewer topic-labelled rows: the 3rd percentile is two or three rows; probability rule only
FOLDS = 4  # each row's similarity is measured to points built from the other 3/4 of the rows
PERCENTILE = 3.0  # % of held-out training rows below min_similarity: what the rule gives up of in-domain text
KMEANS_ITERATIONS = 30  # spherical k-means on a few hundred rows per topic settles in far fewer


def default_min_probability(num_classes: int) -> float:
    """A third of the way from a blind guess (1/C) to certainty: 0.5 for 4 topics, 0.667 for 2."""
    chance = 1.0 / max(num_classes, 1)
    return chance + (1.0 - chance) / 3


@dataclass
class ConfidenceRule:
    """The unsure rule of one model's topic head.

    Attributes:
        min_probability: a top-topic probability below this is unsure.
        references: (K, D) unit vectors summarising the training rows, or None (probability rule only).
        min_similarity: a cosine similarity to the nearest reference below this is unsure (None with no references).
        rows: training rows the references were built from (0: none).
    """

    min_probability: float
    references: Tensor | None = None
    min_similarity: float | None = None
    rows: int = 0

    def __post_init__(self) -> None:
        if (self.references is None) != (self.min_similarity is None):
            raise ValueError("references and min_similarity come together: both or neither")

    @classmethod
    def probability_only(cls, num_classes: int) -> ConfidenceRule:
        return cls(min_probability=default_min_probability(num_classes))

    def nearest(self, embeddings: Tensor) -> Tensor | None:
        """(B, D) embeddings -> (B,) cosine similarity to the nearest reference point; None without references."""
        if self.references is None:
            return None
        refs = self.references.to(embeddings.device, torch.float32)
        return (F.normalize(embeddings.float(), dim=-1) @ refs.T).max(dim=-1).values  # (B, K) -> (B,)

    def judge(self, embeddings: Tensor, probabilities: Tensor) -> list[str | None]:
        """Per row, why its topic is unsure ("low confidence: ...", "unlike the training data: ..."), or None.

        Args:
            embeddings: (B, D) the vectors the heads saw.
            probabilities: (B, C) the topic head's softmax.
        """
        top = probabilities.float().max(dim=-1).values.cpu()  # (B,)
        similarity = self.nearest(embeddings)
        similarity = similarity.cpu() if similarity is not None else None
        reasons: list[str | None] = []
        for i in range(len(top)):
            why = []
            if top[i] < self.min_probability:
                value, limit = _apart(float(top[i]) * 100, self.min_probability * 100, 0)
                why.append(f"low confidence: top topic {value}% (under {limit}%)")
            if similarity is not None and similarity[i] < self.min_similarity:
                value, limit = _apart(float(similarity[i]), self.min_similarity, 2)
                why.append(f"unlike the training data: similarity {value} (under {limit})")
            reasons.append("; ".join(why) or None)
        return reasons

    # -- saving -------------------------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        """config.json's "confidence" section (the references go into a safetensors file beside it)."""
        return {"min_probability": self.min_probability, "min_similarity": self.min_similarity,
                "references": 0 if self.references is None else len(self.references), "rows": self.rows,
                "percentile": PERCENTILE if self.references is not None else None}

    def tensors(self) -> dict[str, Tensor]:
        return {} if self.references is None else {"references": self.references.detach().float().cpu().contiguous()}

    @classmethod
    def from_saved(cls, section: Any, tensors: dict[str, Tensor] | None, dim: int) -> ConfidenceRule:
        """The rule config.json's section and the saved tensors describe; ValueError names what is wrong.

        Args:
            section: config.json's "confidence" value.
            tensors: the references file's tensors, or None when the folder has no such file.
            dim: the embedding size the references must have.
        """
        if not isinstance(section, dict):
            raise ValueError(f"'confidence' must be a JSON object, got {type(section).__name__}")
        p, s, k = section.get("min_probability"), section.get("min_similarity"), section.get("references")
        if not _number(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"min_probability must be a number from 0 to 1, got {p!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"references must be a count of reference points, got {k!r}")
        if k == 0:
            if s is not None or tensors:
                raise ValueError("it lists no reference points, yet has a similarity threshold or reference tensors")
            return cls(min_probability=float(p))
        if not _number(s) or not -1.0 <= s <= 1.0:
            raise ValueError(f"min_similarity must be a cosine similarity from -1 to 1, got {s!r}")
        if tensors is None:
            raise ValueError(f"it lists {k} reference points and their file is missing")
        if set(tensors) != {"references"}:
            raise ValueError(f"the reference file must hold one tensor named 'references', it holds {sorted(tensors)}")
        refs = tensors["references"]
        if tuple(refs.shape) != (k, dim):
            raise ValueError(f"references have shape {tuple(refs.shape)}, expected ({k}, {dim}): {k} points of the "
                             f"model's embedding size")
        if not refs.is_floating_point() or not torch.isfinite(refs).all():
            raise ValueError("references hold NaN, infinite or non-float values")
        rows = section.get("rows")
        return cls(min_probability=float(p), references=F.normalize(refs.float(), dim=-1), min_similarity=float(s),
                   rows=rows if isinstance(rows, int) and not isinstance(rows, bool) else 0)


def _apart(value: float, limit: float, digits: int) -> tuple[str, str]:
    """Both numbers with ``digits`` decimals, or more where that would print them alike ("50% (under 50%)")."""
    for d in range(digits, digits + 4):
        a, b = f"{value:.{d}f}", f"{limit:.{d}f}"
        if a != b:
            break
    return a, b


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- fitting ----------------------------------------------------------------------------------------


def fit_rule(embeddings: Tensor, labels: Tensor, num_classes: int, seed: int = 0) -> ConfidenceRule:
    """The rule for a topic head trained on these rows: reference points and the threshold they imply.

    Args:
        embeddings: (N, D) the vectors the heads see, of topic-labelled training rows (at most MAX_ROWS:
            the caller samples, so that it embeds no more than it needs).
        labels: (N,) class ids in [0, num_classes).
        num_classes: C, the topic head's size.
        seed: seeds the folds and k-means, so the same run gives the same rule.

    Returns:
        The probability rule alone with fewer than MIN_ROWS rows; else both signals.
    """
    if len(embeddings) < MIN_ROWS:
        return ConfidenceRule.probability_only(num_classes)
    X = F.normalize(embeddings.detach().float().cpu(), dim=-1)  # (N, D) unit rows: cosine = dot product
    y = labels.detach().cpu().long()
    generator = torch.Generator().manual_seed(seed)
    per_class = max(1, min(POINTS_PER_CLASS, MAX_POINTS // max(num_classes, 1)))
    # Each row held out once: its similarity to points built from the other folds' rows, as a new sentence sees it.
    fold = torch.randperm(len(X), generator=generator) % FOLDS  # (N,)
    held_out = torch.empty(len(X))
    for f in range(FOLDS):
        points = _reference_points(X[fold != f], y[fold != f], num_classes, per_class, generator)
        held_out[fold == f] = (X[fold == f] @ points.T).max(dim=-1).values
    threshold = float(torch.quantile(held_out, PERCENTILE / 100))
    references = _reference_points(X, y, num_classes, per_class, generator)
    return ConfidenceRule(min_probability=default_min_probability(num_classes), references=references,
                          min_similarity=round(threshold, 4), rows=len(X))


def _reference_points(X: Tensor, y: Tensor, num_classes: int, per_class: int, generator: torch.Generator) -> Tensor:
    """(N, D) unit rows, (N,) ids -> (K, D) unit points: spherical k-means within each topic present."""
    points = []
    for c in range(num_classes):
        rows = X[y == c]
        if len(rows):
            points.append(spherical_kmeans(rows, min(per_class, max(1, len(rows) // ROWS_PER_POINT)), generator))
    return torch.cat(points)


def spherical_kmeans(X: Tensor, k: int, generator: torch.Generator, iterations: int = KMEANS_ITERATIONS) -> Tensor:
    """(N, D) unit rows -> (k, D) unit centres maximising the summed cosine to each row's nearest centre.

    Seeded k-means++ start (each next centre drawn far from the chosen ones), then Lloyd steps.
    """
    k = min(k, len(X))
    centres = [X[int(torch.randint(len(X), (1,), generator=generator))]]
    for _ in range(1, k):
        distance = (1 - (X @ torch.stack(centres).T).max(dim=-1).values).clamp(min=0)  # (N,) to the nearest centre
        if float(distance.sum()) <= 0:
            break  # every row already sits on a centre (duplicates)
        centres.append(X[int(torch.multinomial(distance, 1, generator=generator))])
    C = torch.stack(centres)  # (k, D)
    for _ in range(iterations):
        nearest = (X @ C.T).argmax(dim=-1)  # (N,)
        sums = torch.zeros_like(C).index_add_(0, nearest, X)  # (k, D)
        moved = torch.where(sums.norm(dim=-1, keepdim=True) > 0, F.normalize(sums, dim=-1), C)  # an empty centre stays
        if torch.allclose(moved, C):
            break
        C = moved
    return C

"""Embedding-quality evaluation: STS correlation of cosine similarity with gold scores."""

from __future__ import annotations

import numpy as np

from .datasets import StsPairs
from .encoder import SentenceEncoder
from .metrics import cosine_similarity, pearson, spearman


def sts_correlation(encoder: SentenceEncoder, pairs: StsPairs, batch_size: int = 64, show_progress_bar: bool = False) -> dict[str, float]:
    """Spearman and Pearson of cos(sentence1, sentence2) against the gold scores (each sentence embedded once)."""
    unique = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    index = {s: i for i, s in enumerate(unique)}
    embeddings = encoder.encode(unique, batch_size=batch_size, show_progress_bar=show_progress_bar)
    a = embeddings[[index[s] for s in pairs.sentences1]]
    b = embeddings[[index[s] for s in pairs.sentences2]]
    cosine = cosine_similarity(a, b)
    gold = np.asarray(pairs.scores)
    return {"spearman": spearman(cosine, gold), "pearson": pearson(cosine, gold), "n": len(pairs)}

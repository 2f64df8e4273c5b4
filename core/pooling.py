"""Pooling: (token_embeddings, attention_mask) -> one vector per sentence.

Pure functions. Shapes: token_embeddings (B, T, H), attention_mask (B, T) of 0/1; each returns
(B, H). Padding may be on either side: every function reads the mask, never the position.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .config import POOLING_MODES
from .errors import ConfigError


def _mask(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    return attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (B, T, 1)


def mean_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    mask = _mask(token_embeddings, attention_mask)
    summed = (token_embeddings * mask).sum(dim=1)  # (B, H)
    counts = torch.clamp(mask.sum(dim=1), min=1e-9)  # (B, 1); clamp: an all-padding row gives 0, not NaN
    return summed / counts


def mean_sqrt_len_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    mask = _mask(token_embeddings, attention_mask)
    summed = (token_embeddings * mask).sum(dim=1)
    return summed / torch.sqrt(torch.clamp(mask.sum(dim=1), min=1e-9))


def max_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    mask = attention_mask.unsqueeze(-1).bool()  # (B, T, 1)
    lowest = torch.finfo(token_embeddings.dtype).min
    return token_embeddings.masked_fill(~mask, lowest).max(dim=1).values


def cls_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    # The first real token; with right padding (BERT) that is position 0.
    first = attention_mask.long().argmax(dim=1)  # (B,)
    return token_embeddings[torch.arange(token_embeddings.size(0), device=first.device), first]


def last_token_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)  # (T,)
    last = (attention_mask.long() * positions).argmax(dim=1)  # (B,) index of the last real token
    return token_embeddings[torch.arange(token_embeddings.size(0), device=last.device), last]


def weighted_mean_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    # Later tokens weigh more: weight of the i-th real token is i (1-based), as in SGPT.
    weights = torch.cumsum(attention_mask.long(), dim=1) * attention_mask.long()  # (B, T)
    weights = weights.unsqueeze(-1).to(token_embeddings.dtype)
    return (token_embeddings * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)


POOLING_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mean": mean_pooling,
    "cls": cls_pooling,
    "max": max_pooling,
    "mean_sqrt_len": mean_sqrt_len_pooling,
    "weighted_mean": weighted_mean_pooling,
    "last_token": last_token_pooling,
}
assert tuple(POOLING_FUNCTIONS) == POOLING_MODES


def pool(token_embeddings: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool with the named mode. Raises ValueError listing the valid modes."""
    try:
        fn = POOLING_FUNCTIONS[mode]
    except KeyError:
        raise ConfigError(f"Unknown pooling mode {mode!r}. Valid pooling modes are: {', '.join(POOLING_MODES)}") from None
    return fn(token_embeddings, attention_mask)

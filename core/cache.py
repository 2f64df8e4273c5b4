"""What a training step starts from: cached encoder outputs wherever the encoder is frozen.

With the whole encoder frozen, each text's pooled vector is computed once and every step runs
only the heads (8 rows or 100,000: the heads are then fitted on fixed embeddings). With only the
bottom frozen (gradual unfreezing), the hidden states below the first trainable layer are cached
and each step runs only the open top. Frozen layers run without dropout, as the cache saw them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .encoder import SentenceEncoder
from .model import MultiTaskModel
from .outputs import MultiTaskOutput
from .runtime import eval_mode

# Gradual unfreezing caches the hidden states at the coming epochs' boundaries in one pass, up to this many bytes.
PREFETCH_BYTES = 4 * 1024**3


class TrainingInputs:
    """A dataset on the device as the loop needs it: targets, plus what each step starts from.

    A step starts from as high up the encoder as its frozen part allows (``set_frozen``):
    cached pooled vectors when the whole encoder is frozen; cached hidden states below the
    first trainable layer when only the bottom is frozen; token ids when the embeddings train.

    Args:
        model: the model being trained.
        texts: the rows' texts.
        labels: (N,) class indices (IGNORE_LABEL where none); targets: (N,) sentiments (NaN where none).
        batch_size: rows per pass when filling a cache (at least 64: no gradients, so it can be wide).
    """

    def __init__(self, model: MultiTaskModel, texts: Sequence[str], labels: torch.Tensor, targets: torch.Tensor,
                 batch_size: int) -> None:
        self.model, self.texts, self.batch_size = model, list(texts), max(batch_size, 64)
        device = model.encoder.device
        self.labels, self.targets = labels.to(device), targets.to(device)
        self._ids: list[list[int]] | None = None
        self.frozen_layers: int | None = None  # layers below the cache; None: no cache
        self.pooled: torch.Tensor | None = None  # (N, H) when the whole encoder is frozen
        self.hidden: list[torch.Tensor] | None = None  # N x (T_i, H) when only the bottom is
        self._later: dict[int, list[torch.Tensor]] = {}  # hidden states at the boundaries coming epochs will use

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ids(self) -> list[list[int]]:
        if self._ids is None:
            self._ids, _ = self.model.encoder.tokenize(self.texts)  # once, when a step or the cache first needs them
        return self._ids

    def set_frozen(self, frozen_layers: int | None, coming: Sequence[int] = ()) -> None:
        """(Re)build the cache for an encoder whose embeddings and bottom ``frozen_layers`` layers are frozen.

        ``coming``: lower boundaries that later epochs will ask for (gradual unfreezing opens one
        more layer each epoch). As many as fit in PREFETCH_BYTES are cached in the same pass, so
        the frozen bottom runs once in all rather than once per epoch.
        """
        if frozen_layers == self.frozen_layers:
            return
        encoder = self.model.encoder
        self.frozen_layers, self.pooled, self.hidden = frozen_layers, None, None
        self._later = {b: v for b, v in self._later.items() if frozen_layers is not None and b <= frozen_layers}
        if frozen_layers is None:
            return
        if frozen_layers == len(encoder.layers):
            self.pooled = encoder.embed(self.texts, batch_size=self.batch_size, convert_to="tensor", stage="pooled").embeddings
        elif frozen_layers in self._later:
            self.hidden = self._later.pop(frozen_layers)
        else:
            per_boundary = sum(len(x) for x in self.ids) * encoder.hidden_size * 4  # float32 hidden states
            extra = [b for b in coming if b < frozen_layers][:max(0, PREFETCH_BYTES // per_boundary - 1)]
            self._later = hidden_states(encoder, self.ids, [frozen_layers, *extra], self.batch_size)
            self.hidden = self._later.pop(frozen_layers)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) each text's length in tokens."""
        return torch.tensor([len(x) for x in self.ids])

    def pooled_rows(self, index: torch.Tensor) -> torch.Tensor:
        """(B, H) the encoder's pooled output for the rows ``index``, from the highest cache there is."""
        if self.pooled is not None:
            return self.pooled[index.to(self.pooled.device)]
        encoder = self.model.encoder
        if self.hidden is not None:
            hidden, mask = encoder.pad_hidden([self.hidden[i] for i in index.tolist()])  # (B, T, H), (B, T)
            return encoder.top(hidden, mask, self.frozen_layers)
        return encoder.pooled(encoder.collate([self.ids[i] for i in index.tolist()]))

    def forward(self, index: torch.Tensor, tasks: tuple[str, ...]) -> MultiTaskOutput:
        """The model's output for the rows ``index``."""
        return self.model(pooled=self.pooled_rows(index), tasks=tasks)


@torch.no_grad()
def hidden_states(encoder: SentenceEncoder, ids: list[list[int]], boundaries: Sequence[int],
                  batch_size: int) -> dict[int, list[torch.Tensor]]:
    """Each text's hidden states after the embeddings and ``b`` layers, for every b in ``boundaries``,
    in one pass up the stack; unpadded, (T_i, H) per text."""
    bounds = sorted(set(boundaries))
    out: dict[int, list[torch.Tensor]] = {b: [torch.empty(0)] * len(ids) for b in bounds}
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: little padding
    with eval_mode(encoder):
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            features = encoder.collate([ids[i] for i in batch])
            mask = features["attention_mask"]
            hidden, at = encoder.bottom(features, bounds[0]), bounds[0]
            for b in bounds:
                if b > at:
                    hidden, at = encoder.run_layers(hidden, mask, at, b), b  # on from the last boundary
                for row, i in enumerate(batch):
                    out[b][i] = hidden[row][mask[row].bool()].clone()
    return out

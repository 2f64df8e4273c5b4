"""Which parameters train: named presets, gradual unfreezing, layer-wise learning rates.

Freezing is reversible: every function sets ``requires_grad`` on the model's parts and
returns a FreezeReport of trainable / total parameters per part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from .config import FREEZE_PRESETS, HeadsConfig
from .encoder import SentenceEncoder, encoder_layers
from .errors import ConfigError

if TYPE_CHECKING:
    from .model import MultiTaskModel

__all__ = ["PARTS", "PRESET_HELP", "FreezeReport", "apply_preset", "encoder_layers", "freeze", "freeze_report",
           "parameter_groups", "preview", "unfreeze", "unfreeze_top_layers"]

logger = logging.getLogger(__name__)

PARTS = ("encoder", "projection", "classification_head", "sentiment_head")
PRESET_HELP = {
    "none": "Train everything: best accuracy on enough data, slowest, can forget what the encoder knew.",
    "all": "Train nothing: measure the model as it is on held-out rows, a baseline to compare against.",
    "encoder": "Freeze the encoder, train only the heads: fast (embeddings are computed once), safe on small data.",
    "classification_head": "Keep a trained topic head exactly as it is; the encoder and the sentiment head learn.",
    "sentiment_head": "Keep a trained sentiment head exactly as it is; the encoder and the topic head learn.",
}


@dataclass
class FreezeReport:
    """Trainable and total parameter counts, per part and overall."""

    parts: dict[str, tuple[int, int]]  # part -> (trainable, total)
    open_layers: int  # encoder layers (counted from the top) with trainable weights
    num_layers: int

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.parts.values())

    @property
    def total(self) -> int:
        return sum(n for _, n in self.parts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"trainable": self.trainable, "total": self.total, "open_layers": self.open_layers,
                "num_layers": self.num_layers,
                "parts": {k: {"trainable": t, "total": n} for k, (t, n) in self.parts.items()}}

    def __str__(self) -> str:
        lines = [f"trainable {self.trainable:,} / {self.total:,} parameters "
                 f"({100 * self.trainable / max(self.total, 1):.1f}%), encoder layers open {self.open_layers}/{self.num_layers}"]
        lines += [f"  {k:<20} {t:>12,} / {n:,}" for k, (t, n) in self.parts.items()]
        return "\n".join(lines)


def model_parts(model: MultiTaskModel) -> dict[str, nn.Module | None]:
    return {"encoder": model.encoder.backbone, "projection": model.encoder.projection,
            "classification_head": model.classifier, "sentiment_head": model.sentiment_head}


def _set(module: nn.Module | None, trainable: bool) -> None:
    if module is not None:
        module.requires_grad_(trainable)


def freeze_report(model: MultiTaskModel) -> FreezeReport:
    parts = {}
    for name, module in model_parts(model).items():
        params = list(module.parameters()) if module is not None else []
        parts[name] = (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    layers = model.encoder.layers
    open_layers = sum(any(p.requires_grad for p in layer.parameters()) for layer in layers)
    return FreezeReport(parts=parts, open_layers=open_layers, num_layers=len(layers))


def preview(encoder: SentenceEncoder, heads: HeadsConfig, preset: str, *, open_layers: int | None = None) -> FreezeReport:
    """The report ``apply_preset`` would give for ``MultiTaskModel(encoder, heads)``, counted without building it.

    ``open_layers`` n: then ``unfreeze_top_layers(model, n)`` (gradual unfreezing's epoch n + 1).
    Nothing is changed or copied: a page can show the counts of any choice at once.
    """
    if preset not in FREEZE_PRESETS:
        raise ConfigError(f"Unknown freeze preset {preset!r}. Valid presets are: {', '.join(FREEZE_PRESETS)}")
    dim, layers = encoder.embedding_dim, encoder.layers
    sizes = {"encoder": _count(encoder.backbone), "projection": _count(encoder.projection),
             "classification_head": (dim + 1) * len(heads.class_names),  # (C, D) weight + (C,) bias
             "sentiment_head": dim + 1 if heads.sentiment else 0}
    parts = {name: (0 if preset == "all" or preset == name else n, n) for name, n in sizes.items()}
    n_open = len(layers) if preset not in ("all", "encoder") else 0
    if open_layers is not None:  # the backbone: frozen but for the top layers (all of it past the top)
        n_open = min(max(open_layers, 0), len(layers))
        trainable = sizes["encoder"] if open_layers > len(layers) else sum(_count(x) for x in layers[len(layers) - n_open:])
        parts["encoder"] = (trainable, sizes["encoder"])
    return FreezeReport(parts=parts, open_layers=n_open, num_layers=len(layers))


def _count(module: nn.Module | None) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def freeze(model: MultiTaskModel, part: str) -> FreezeReport:
    """Freeze one named part (encoder, projection, classification_head, sentiment_head)."""
    _set(_part(model, part), False)
    return freeze_report(model)


def unfreeze(model: MultiTaskModel, part: str) -> FreezeReport:
    _set(_part(model, part), True)
    return freeze_report(model)


def _part(model: MultiTaskModel, part: str) -> nn.Module | None:
    parts = model_parts(model)
    if part not in parts:
        raise ConfigError(f"Unknown part {part!r}. Valid parts are: {', '.join(PARTS)}")
    return parts[part]


def apply_preset(model: MultiTaskModel, preset: str) -> FreezeReport:
    """Set what trains by preset name: none, all, encoder, classification_head, sentiment_head."""
    if preset not in FREEZE_PRESETS:
        raise ConfigError(f"Unknown freeze preset {preset!r}. Valid presets are: {', '.join(FREEZE_PRESETS)}")
    model.requires_grad_(preset != "all")
    if preset in ("encoder", "classification_head", "sentiment_head"):
        _set(_part(model, preset), False)
    report = freeze_report(model)
    logger.info("freeze preset %r: %s", preset, report)
    return report


def unfreeze_top_layers(model: MultiTaskModel, n: int) -> FreezeReport:
    """Gradual unfreezing: the backbone is frozen except its top ``n`` layers.

    When ``n`` exceeds the number of layers, the embeddings (and all else) open too.
    """
    backbone, layers = model.encoder.backbone, model.encoder.layers
    backbone.requires_grad_(n > len(layers))
    for layer in layers[len(layers) - min(n, len(layers)):] if n > 0 else []:
        layer.requires_grad_(True)
    report = freeze_report(model)
    logger.info("gradual unfreezing, %d top layer(s) open: %s", min(n, len(layers)), report)
    return report


def parameter_groups(
    model: MultiTaskModel,
    learning_rate: float,
    *,
    encoder_learning_rate: float | None = None,
    layer_lr_decay: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """AdamW parameter groups, including currently frozen parameters (gradual unfreezing opens them later).

    Heads and projection get ``learning_rate``. The top encoder layer gets ``encoder_learning_rate``
    (default ``learning_rate``); with ``layer_lr_decay`` d the one below gets that times d, and so
    on down to the embeddings. Biases and LayerNorm weights get no weight decay.
    """
    head_lr, top_lr = learning_rate, encoder_learning_rate or learning_rate
    decay = layer_lr_decay or 1.0
    backbone, layers = model.encoder.backbone, model.encoder.layers
    depth = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}  # 0 = bottom layer
    rates: dict[int, float] = {}
    for p in backbone.parameters():
        below_top = len(layers) - 1 - depth[id(p)] if id(p) in depth else len(layers)  # embeddings: below all layers
        rates[id(p)] = top_lr * decay ** below_top
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2  # biases and LayerNorm weights
        groups.setdefault((rates.get(id(p), head_lr), no_decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": 0.0 if nd else weight_decay}
            for (lr, nd), ps in sorted(groups.items(), key=lambda kv: -kv[0][0])]

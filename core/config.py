"""Typed, validated settings for the encoder, the heads and training.

Every default has its reason beside it; every check happens in ``__post_init__`` so a bad
value fails where it is given, with the valid choices in the message.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The shipped heads (AG News topics + SST sentiment on the frozen default encoder).
DEFAULT_HEADS_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"

PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len", "weighted_mean", "last_token"]
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max", "mean_sqrt_len", "weighted_mean", "last_token")

FreezePreset = Literal["none", "all", "encoder", "classification_head", "sentiment_head"]
FREEZE_PRESETS: tuple[str, ...] = ("none", "all", "encoder", "classification_head", "sentiment_head")

Task = Literal["classification", "sentiment"]
TrainingPrecision = Literal["fp32", "bf16", "fp16", "auto"]
TRAINING_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "auto")
TASKS: tuple[str, ...] = ("classification", "sentiment")

Padding = Literal["longest", "max_length"]
HeadSolver = Literal["exact", "sgd"]
BestEpochBy = Literal["loss", "metrics"]
BEST_EPOCH_BY: tuple[str, ...] = ("loss", "metrics")
HEAD_SOLVERS: tuple[str, ...] = ("exact", "sgd")
PADDING_MODES: tuple[str, ...] = ("longest", "max_length")

# Sentiment values (in data and in a model's range) past this are refused: no scale people use comes
# near it, and ±1e30 or more would overflow the float32 loss (squared) or the tensor itself.
MAX_SENTIMENT = 1e6

# A max_length past this is refused: the longest-reading sentence encoders (ModernBERT, bge-m3,
# nomic-embed) stop at 8192 tokens, and padding="max_length" makes a (batch, max_length) tensor.
MAX_LENGTH_LIMIT = 8192

BUILTIN_DATASETS: tuple[str, ...] = ("synthetic", "bbc_news", "reviews")  # data sets that need no files (core.datasets.load_builtin)
# Every way a model leaves the lab (core.export.export): its own folder and the two exports.
EXPORT_FORMATS: tuple[str, ...] = ("sentence-lab", "sentence-transformers", "onnx")

# Rows of a corpus that embed --input (core.index.embed_corpus) reads, embeds and writes at a time: enough for
# batches sorted by length to pad little, and 4,096 x 384 float32 = 6 MB of all-MiniLM-L6-v2 vectors held.
CHUNK_ROWS = 4096

# Training (the CLI's train and the app) puts the heads on L2-normalised embeddings, although
# EncoderConfig.normalize is off by default (the multi-task model keeps raw magnitudes unless told):
# measured on SST, the sentiment head reaches Pearson 0.666 on normalised embeddings, at most 0.655 on raw.
NORMALIZE_FOR_TRAINING = True


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"Unknown {name} {value!r}. Valid {name} values are: {', '.join(choices)}")


def _check_positive(name: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


class _Serializable:
    """Round-trip through plain JSON-able dicts (the saved config.json)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown {cls.__name__} keys {unknown}. Valid keys are: {sorted(known)}")
        return cls(**data)


@dataclass
class EncoderConfig(_Serializable):
    """How text becomes one vector."""

    model_name: str = DEFAULT_MODEL  # resolved to the packaged copy when installed: no download
    pooling: PoolingMode = "mean"  # mean pooling is what all-MiniLM-L6-v2 was trained with
    normalize: bool = False  # off for the multi-task model: heads see raw magnitudes
    projection_dim: int | None = None  # None keeps the backbone's hidden size (384 for MiniLM)
    max_length: int | None = None  # None: the model's own limit (256 for all-MiniLM-L6-v2)
    padding: Padding = "longest"  # pad each batch only to its own longest input
    truncation: bool = True  # long inputs are cut (and reported) rather than rejected

    def __post_init__(self) -> None:
        _check_choice("pooling", self.pooling, POOLING_MODES)
        _check_choice("padding", self.padding, PADDING_MODES)
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ConfigError("model_name must be a non-empty model name or folder")
        if self.projection_dim is not None:
            if isinstance(self.projection_dim, bool) or not isinstance(self.projection_dim, int) or self.projection_dim < 1:
                raise ConfigError(f"projection_dim must be a positive integer or None, got {self.projection_dim!r}")
        if self.max_length is not None:
            if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
                raise ConfigError(f"max_length must be an integer >= 2 or None, got {self.max_length!r}")
            if self.max_length > MAX_LENGTH_LIMIT:
                raise ConfigError(f"max_length must be at most {MAX_LENGTH_LIMIT:,} tokens, got {self.max_length!r}; "
                                  "leave it out (None) to use the model's own limit")


@dataclass
class HeadsConfig(_Serializable):
    """The two task heads on top of the sentence embedding."""

    class_names: list[str] = field(default_factory=list)  # empty: no classification head
    sentiment: bool = True  # False: no sentiment head (a topic-only model)
    dropout: float = 0.1  # the backbone's own hidden dropout; regularises small data
    sentiment_range: tuple[float, float] = (-1.0, 1.0)  # predictions are clipped to the data's scale

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        if len(set(self.class_names)) != len(self.class_names):
            raise ConfigError(f"class_names must be unique, got {self.class_names}")
        if any(not c.strip() for c in self.class_names):
            raise ConfigError("class names must be non-empty")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        lo, hi = (float(v) for v in self.sentiment_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"sentiment_range must be two finite numbers (low, high) with low < high, got {self.sentiment_range!r}")
        if max(abs(lo), abs(hi)) > MAX_SENTIMENT:
            raise ConfigError(f"sentiment_range {self.sentiment_range!r} goes beyond ±{MAX_SENTIMENT:,.0f}; use a scale "
                              "such as -1 to 1, 0 to 1 or 1 to 5")
        self.sentiment_range = (lo, hi)


@dataclass
class TrainingConfig(_Serializable):
    """One training run. Defaults suit head training on a frozen encoder."""

    epochs: int = 10  # cheap with a frozen encoder (cached); early stopping ends it sooner
    learning_rate: float = 3e-3  # heads (and projection): they start from scratch and want a large step
    encoder_learning_rate: float | None = 2e-5  # the usual BERT fine-tuning rate; None = learning_rate
    batch_size: int = 32  # fits the CPU cache well and matches sentence-transformers' default
    weight_decay: float = 0.01  # AdamW's usual value; not applied to biases and LayerNorm
    warmup_ratio: float = 0.1  # first 10% of steps ramp the rate up, then it decays linearly to 0
    max_grad_norm: float | None = 1.0  # clip to keep the first steps on new heads from blowing up
    classification_weight: float = 1.0  # task weights in the summed loss
    sentiment_weight: float = 1.0
    freeze: FreezePreset = "encoder"  # cheapest sensible start: heads only, embeddings cached
    gradual_unfreeze: bool = False  # encoder frozen at epoch 0, one more top layer each epoch
    layer_lr_decay: float | None = None  # e.g. 0.9: each lower layer gets 0.9x the rate above it
    early_stopping_patience: int | None = 3  # epochs without validation improvement before stopping
    seed: int = 42
    device: str | None = None  # None: cuda if available, else cpu
    cache_embeddings: bool = True  # with the encoder frozen, embed each text once
    # With the encoder frozen the heads are convex problems on fixed embeddings: "exact" fits them to
    # the optimum (L-BFGS / closed form, L2 penalty 1/n as scikit-learn's C=1), whatever the data's size;
    # "sgd" runs the same mini-batch loop as when the encoder trains.
    head_solver: HeadSolver = "exact"
    # While the encoder trains, a term of this weight keeps each training text's pooled embedding pointing
    # where the frozen encoder put it (weight x mean(1 - cosine)): general similarity is not forgotten for
    # the tasks' sake. 0 turns it off. With the encoder frozen it costs nothing and does nothing.
    keep_similarity: float = 0.0
    # The share of that weight on rows without a topic (sentiment-only rows): 1 holds them as much as topic rows,
    # 0 leaves them free. Measured on the recipe, seed 1: 0 lifts SST Pearson from 0.763 to 0.789 but lets STS-B
    # fall from 0.818 to 0.809, so the recipe holds every row.
    keep_sentiment_rows: float = 1.0
    # Before the encoder trains, fit the new topic head exactly on the frozen encoder (as the "encoder" preset
    # does), so the first steps do not push the encoder around to serve a random head ("LP-FT"). Only the topic
    # head: a sentiment head fitted first leaves the encoder too little to learn from (SST test Pearson 0.694
    # against 0.729 from a new head, one epoch on half of AG News + SST), while a topic head fitted first
    # keeps AG News from dropping in the first epoch (0.879 against 0.863).
    topic_head_first: bool = False
    # Steps where the encoder runs use autocast at this precision: "auto" is bf16 on a CPU with native
    # bf16 (AVX512-BF16 / AMX) or on a CUDA GPU that has it, fp16 on an older GPU, fp32 elsewhere.
    precision: TrainingPrecision = "fp32"
    # Dropout inside the encoder while it trains. The recipe turns it off: keep_similarity should measure how
    # far the encoder moved, and with dropout on, 3/4 of it would be dropout's own noise (1 - cosine 0.037 between
    # dropped-out and clean embeddings of AG News sentences), which the term would then fight instead.
    encoder_dropout: bool = True
    # Batches of similar length (shuffled within groups of 16 batches, then the batches shuffled): less
    # padding, so about twice fewer tokens per epoch when the encoder runs.
    group_by_length: bool = True
    # Which held-out figure picks the epoch whose weights are kept (and ends a run early): "loss", the weighted sum
    # of the task losses, or "metrics", the mean of accuracy and Pearson. When the encoder learns, the held-out
    # cross-entropy can rise in the last epoch while accuracy still climbs (the model grows more confident, right
    # and wrong): in three of four 3-epoch fine-tuning runs measured, "loss" kept epoch 2 although epoch 3 was
    # ahead on held-out accuracy and Pearson both. The recipe picks by metrics.
    best_epoch_by: BestEpochBy = "loss"
    # Sentence pairs with a gold similarity (STS-B's format, 0-5), when the run is given some (``train(pairs=...)``,
    # ``--sts-pairs FILE``): each step where the encoder learns also fits the cosine of ``pairs_per_step`` pairs to
    # their score / 5 (sentence-transformers' CosineSimilarityLoss), weighted by ``pair_weight``. The encoder then
    # keeps comparing sentences well while the tasks move it freely.
    pair_weight: float = 1.0
    pairs_per_step: int = 8

    def __post_init__(self) -> None:
        _check_choice("freeze preset", self.freeze, FREEZE_PRESETS)
        _check_choice("head_solver", self.head_solver, HEAD_SOLVERS)
        _check_choice("precision", self.precision, TRAINING_PRECISIONS)
        _check_choice("best_epoch_by", self.best_epoch_by, BEST_EPOCH_BY)
        if isinstance(self.keep_sentiment_rows, bool) or not isinstance(self.keep_sentiment_rows, (int, float)) \
                or not 0.0 <= self.keep_sentiment_rows <= 1.0:
            raise ConfigError(f"keep_sentiment_rows must be a share from 0 to 1, got {self.keep_sentiment_rows!r}")
        _check_positive("keep_similarity", self.keep_similarity, allow_zero=True)
        _check_positive("pair_weight", self.pair_weight, allow_zero=True)
        for name in ("epochs", "batch_size", "pairs_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        _check_positive("learning_rate", self.learning_rate)
        _check_positive("encoder_learning_rate", self.encoder_learning_rate)
        _check_positive("weight_decay", self.weight_decay, allow_zero=True)
        _check_positive("max_grad_norm", self.max_grad_norm)
        _check_positive("classification_weight", self.classification_weight, allow_zero=True)
        _check_positive("sentiment_weight", self.sentiment_weight, allow_zero=True)
        if self.classification_weight == 0 and self.sentiment_weight == 0:
            raise ConfigError("classification_weight and sentiment_weight are both 0: nothing would be learned")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.layer_lr_decay is not None and not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError(f"layer_lr_decay must be in (0, 1] or None, got {self.layer_lr_decay!r}")
        if self.early_stopping_patience is not None and (
            isinstance(self.early_stopping_patience, bool) or self.early_stopping_patience < 1
        ):
            raise ConfigError(f"early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed!r}")
        if self.gradual_unfreeze and self.freeze not in ("none", "encoder"):
            raise ConfigError(
                f"gradual_unfreeze opens the encoder layer by layer; it needs freeze 'none' or 'encoder', got {self.freeze!r}"
            )

    @property
    def task_weights(self) -> dict[str, float]:
        return {"classification": self.classification_weight, "sentiment": self.sentiment_weight}


# Named TrainingConfig settings. "finetune" trains the whole encoder: heads fitted exactly on the frozen
# encoder first (LP-FT), then every layer at one rate after a warm-up, bf16 where the hardware has it,
# batches of similar length, and the pooled embeddings held near the frozen encoder's so that general
# similarity (STS-B) is kept. Chosen by measurement on AG News + SST: README, "Fine-tuning the encoder".
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {"freeze": "none", "topic_head_first": True, "keep_similarity": 2.0, "encoder_dropout": False, "epochs": 3,
                 "sentiment_weight": 2.0,
                 "encoder_learning_rate": 4e-5, "learning_rate": 2e-3, "warmup_ratio": 0.1, "precision": "auto",
                 "best_epoch_by": "metrics"},
}

"""MultiTaskModel: one shared SentenceEncoder feeding a topic head and a sentiment head.

Saved as a folder: ``config.json`` + ``heads.safetensors`` (+ ``encoder/`` when the encoder's
weights changed) (+ ``confidence.safetensors``: the unsure rule's reference points, core.confidence)
+ a README.md model card. With the encoder untouched, the folder references the
base model by name and checksum instead of copying it. Nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import folders
from .card import ModelFacts, model_card
from .confidence import ConfidenceRule
from .config import DEFAULT_MODEL, TASKS, EncoderConfig, HeadsConfig
from .encoder import SentenceEncoder, load_backbone, offered_encoders, quiet_transformers
from .errors import ConfigError, EncoderLoadError, MissingFileError, ModelFolderError
from .outputs import MultiTaskOutput, Prediction
from .record import RECORD_KEYS, TrainingRecord
from .runtime import eval_mode, seed_everything
from .version import __version__

__all__ = ["MultiTaskModel", "MultiTaskOutput", "Prediction", "ModelFolderError", "ClassificationHead", "SentimentHead"]

FORMAT_NAME = "sentence-lab"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
HEADS_FILE = "heads.safetensors"
CONFIDENCE_FILE = "confidence.safetensors"  # the unsure rule's (K, D) reference points; config.json has its thresholds
CARD_FILE = "README.md"
ENCODER_DIR = "encoder"


class TaskData(Protocol):
    """What ``MultiTaskModel.for_data`` reads of a data set (a MultiTaskDataset has it)."""

    @property
    def class_names(self) -> list[str]: ...

    @property
    def tasks(self) -> tuple[str, ...]: ...

    @property
    def sentiment_range(self) -> tuple[float, float]: ...


class ClassificationHead(nn.Module):
    """Dropout + linear: (B, D) embeddings -> (B, C) logits over named classes."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.linear(self.dropout(embeddings))


class SentimentHead(nn.Module):
    """Dropout + linear: (B, D) embeddings -> (B,) unbounded sentiment score."""

    def __init__(self, dim: int, dropout: float, centre: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, 1)
        nn.init.constant_(self.linear.bias, centre)  # start at the middle of the scale, not at 0

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.linear(self.dropout(embeddings)).squeeze(-1)


class MultiTaskModel(nn.Module):
    """Encoder + classification head + sentiment head.

    Args:
        encoder: the shared SentenceEncoder.
        heads: class names, dropout, sentiment scale, and whether there is a sentiment head.
    """

    def __init__(self, encoder: SentenceEncoder, heads: HeadsConfig | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads_config = heads or HeadsConfig()
        dim, cfg = encoder.embedding_dim, self.heads_config
        self.classifier = ClassificationHead(dim, len(cfg.class_names), cfg.dropout) if cfg.class_names else None
        centre = sum(cfg.sentiment_range) / 2
        self.sentiment_head = SentimentHead(dim, cfg.dropout, centre) if cfg.sentiment else None
        self.record = TrainingRecord()  # how it was trained and what it scored: saved into config.json
        # When a topic answer is unsure (core.confidence): training builds the full rule; until then, probability only.
        self.confidence = ConfidenceRule.probability_only(len(cfg.class_names)) if self.classifier is not None else None

    @classmethod
    def from_pretrained(
        cls,
        model_name: str = DEFAULT_MODEL,
        *,
        class_names: Sequence[str] = (),
        sentiment: bool = True,
        sentiment_range: tuple[float, float] = (-1.0, 1.0),
        dropout: float = 0.1,
        device: str | torch.device | None = None,
        **encoder_settings: Any,
    ) -> MultiTaskModel:
        """A fresh model on a pretrained encoder; ``encoder_settings`` are EncoderConfig fields."""
        heads = HeadsConfig(class_names=list(class_names), sentiment=sentiment, sentiment_range=sentiment_range, dropout=dropout)
        encoder = SentenceEncoder.from_pretrained(model_name, **encoder_settings)
        model = cls(encoder, heads)
        return model.to(device) if device is not None else model

    @classmethod
    def for_data(cls, data: TaskData, encoder: SentenceEncoder, *, sentiment_range: tuple[float, float] | None = None,
                 seed: int | None = None) -> MultiTaskModel:
        """Fresh heads that fit ``data`` on ``encoder``: a topic head over its classes, a sentiment head
        when it has sentiment values, reporting on ``sentiment_range`` (default: the data's own scale).

        ``seed`` seeds the heads' first weights (a run's seed); None leaves the generators alone.
        """
        if seed is not None:
            seed_everything(seed)
        return cls(encoder, cls.heads_for(data, sentiment_range=sentiment_range))

    @staticmethod
    def heads_for(data: TaskData, *, sentiment_range: tuple[float, float] | None = None) -> HeadsConfig:
        """The heads ``for_data`` builds: ``data``'s classes, and sentiment when it has values."""
        return HeadsConfig(class_names=data.class_names, sentiment="sentiment" in data.tasks,
                           sentiment_range=sentiment_range or data.sentiment_range)

    def check_covers(self, data: TaskData, name: str = "this model") -> None:
        """Refuse data this model's heads cannot learn from: topics it has no class for, or sentiment
        values without a sentiment head (train a new model on the base encoder instead)."""
        problems = []
        unknown = sorted(set(data.class_names) - set(self.class_names))
        if unknown:
            problems.append(f"the data has topics {unknown} that {name} has no class for "
                            f"(its topics: {', '.join(self.class_names) or 'none'})")
        if "sentiment" in data.tasks and self.sentiment_head is None:
            problems.append(f"the data has sentiment values and {name} has no sentiment head")
        if problems:
            raise ConfigError("; ".join(problems) + ". Train a new model on the base encoder instead, or bring data "
                              "with its topics")

    @property
    def class_names(self) -> list[str]:
        return list(self.heads_config.class_names)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this model has a head for."""
        present = {"classification": self.classifier is not None, "sentiment": self.sentiment_head is not None}
        return tuple(t for t in TASKS if present[t])

    def forward(
        self,
        features: dict[str, Tensor] | None = None,
        *,
        pooled: Tensor | None = None,
        tasks: Sequence[str] | None = None,
    ) -> MultiTaskOutput:
        """Run the encoder (or start from cached ``pooled`` (B, H) vectors) and the asked heads.

        Args:
            features: tokenizer outputs (input_ids, attention_mask, ...), each (B, T).
            pooled: backbone output after pooling, (B, H); skips the backbone (frozen-encoder cache).
            tasks: subset of ("classification", "sentiment"); default all heads present.
        """
        tasks = self.tasks if tasks is None else tuple(tasks)
        for task in tasks:
            if task not in self.tasks:
                raise ConfigError(f"This model has no {task!r} head. Its tasks are: {', '.join(self.tasks) or 'none'}")
        if (features is None) == (pooled is None):
            raise ValueError("Pass exactly one of features or pooled")
        if pooled is None:
            pooled = self.encoder.pooled(features)
        return self.heads(self.encoder.project(pooled), tasks)  # (B, D) embeddings in

    def heads(self, embeddings: Tensor, tasks: Sequence[str]) -> MultiTaskOutput:
        """The asked heads on (B, D) sentence embeddings (what ``forward`` runs after the encoder)."""
        return MultiTaskOutput(
            embeddings=embeddings,
            logits=self.classifier(embeddings) if "classification" in tasks else None,
            sentiment=self.sentiment_head(embeddings) if "sentiment" in tasks else None,
        )

    def clip_sentiment(self, scores: Tensor) -> Tensor:
        """Scores on the model's recorded scale: the head's raw output is unbounded."""
        lo, hi = self.heads_config.sentiment_range
        return scores.clamp(lo, hi)

    def predict_tensors(self, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False,
                        precision: str = "fp32") -> MultiTaskOutput:
        """Batched inference in eval mode: raw head outputs (logits, unclipped sentiment), input order.

        ``precision`` is the encoder's (see ``SentenceEncoder.embed``); the heads run in fp32.
        """
        return self._predict_tensors(texts, batch_size, show_progress_bar, precision)[0]

    @torch.inference_mode()
    def _predict_tensors(self, texts: Sequence[str], batch_size: int, show_progress_bar: bool,
                         precision: str) -> tuple[MultiTaskOutput, list[int]]:
        """``predict_tensors`` and the indices of the texts that were truncated."""
        result = self.encoder.embed(texts, batch_size=batch_size, convert_to="tensor", stage="pooled",
                                    show_progress_bar=show_progress_bar, precision=precision)
        with eval_mode(self):
            return self(pooled=result.embeddings), result.truncated

    def predict(self, texts: str | Sequence[str], batch_size: int = 32, show_progress_bar: bool = False,
                precision: str = "fp32") -> list[Prediction]:
        """Per text: class probabilities (softmax), the top class name, whether that topic is unsure
        (and why: ``self.confidence``), the sentiment score, and whether the text was cut at the
        encoder's ``max_length`` tokens."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return []
        out, truncated = self._predict_tensors(texts, batch_size, show_progress_bar, precision)
        cut = set(truncated)
        probs_t = torch.softmax(out.logits.float(), dim=-1) if out.logits is not None else None  # (B, C)
        unsure = (self.confidence.judge(out.embeddings, probs_t) if probs_t is not None and self.confidence is not None
                  else [None] * len(texts))
        probs = probs_t.cpu().numpy() if probs_t is not None else None
        scores = self.clip_sentiment(out.sentiment).float().cpu().numpy() if out.sentiment is not None else None
        names = self.class_names
        predictions = []
        for i, text in enumerate(texts):
            p = probs[i] if probs is not None else None
            predictions.append(Prediction(
                text=text,
                label=names[int(np.argmax(p))] if p is not None else None,
                probabilities={n: float(v) for n, v in zip(names, p)} if p is not None else {},
                sentiment=float(scores[i]) if scores is not None else None,
                truncated=i in cut,
                unsure=unsure[i] is not None,
                unsure_reason=unsure[i],
            ))
        return predictions

    # -- saving and loading ----------------------------------------------------------------

    def head_parts(self, *, projection: bool = True) -> dict[str, nn.Module | None]:
        """The small trained parts beside the encoder, by the name their tensors are saved under."""
        parts: dict[str, nn.Module | None] = {"classifier": self.classifier, "sentiment_head": self.sentiment_head}
        return parts | {"projection": self.encoder.projection} if projection else parts

    def encoder_is_pretrained(self) -> bool:
        """True while the backbone still holds exactly the pretrained weights it was loaded with."""
        return self.encoder.is_pretrained()

    def facts(self) -> ModelFacts:
        """What a model card says about this model."""
        return ModelFacts(encoder=self.encoder.config, max_length=self.encoder.max_length,
                          embedding_dim=self.encoder.embedding_dim, encoder_pretrained=self.encoder_is_pretrained(),
                          class_names=self.class_names if self.classifier is not None else [],
                          sentiment_range=self.heads_config.sentiment_range if self.sentiment_head is not None else None,
                          record=self.record, confidence=self.confidence.to_config() if self.confidence else None)

    def save(self, folder: str | os.PathLike, *, extra: Callable[[Path], None] | None = None) -> Path:
        """Write config.json + heads.safetensors (+ encoder/ if its weights changed) + README.md, atomically.

        ``extra(tmp)`` may add files to the folder before it is swapped in (a training checkpoint does).

        The folder is written beside its destination and renamed into place, so an interrupted
        save never leaves a half-written model. It replaces only an empty folder or an earlier save
        that holds nothing but the files it lists in sentence_lab_files.json (folders.check_replaceable).
        """
        import transformers

        folder = Path(folder)
        store_encoder = not self.encoder_is_pretrained()
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder.config.to_dict() | {"max_length": self.encoder.max_length},
            "heads": self.heads_config.to_dict(),
            "encoder_weights": "stored" if store_encoder else "base",
            "base_encoder": {"name": self.encoder.config.model_name, "checksum": self.encoder.base_checksum},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "sentence_lab": __version__},
            **self.record.to_config(),
        }
        if self.classifier is not None and self.confidence is not None:
            config["confidence"] = self.confidence.to_config()
        with folders.write_folder(folder, is_model_folder) as tmp:
            folders.save_tensors(folders.flatten(self.head_parts()), tmp / HEADS_FILE)
            if self.confidence is not None and self.confidence.references is not None:
                folders.save_tensors(self.confidence.tensors(), tmp / CONFIDENCE_FILE)
            if store_encoder:
                with quiet_transformers():
                    self.encoder.backbone.save_pretrained(tmp / ENCODER_DIR, safe_serialization=True)
                    self.encoder.tokenizer.save_pretrained(tmp / ENCODER_DIR)
            folders.write_json(tmp / CONFIG_FILE, config)
            (tmp / CARD_FILE).write_text(model_card(self.facts(), "sentence-lab", folder=str(folder)))
            if extra is not None:
                extra(tmp)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str | torch.device | None = None,
             base: SentenceEncoder | None = None, trust_base_path: bool = False) -> MultiTaskModel:
        """Load a saved folder: JSON and safetensors only, nothing downloaded, nothing unpickled.

        Refused with a ModelFolderError that names the problem: a folder holding pickle files or
        symbolic links, a config.json that is not one we wrote, heads whose names, shapes or values
        do not match it, and a base encoder that is missing here or has other weights (checksum).
        ``base``: an encoder already in memory; when the folder refers to exactly its pretrained
        weights, the model shares them instead of loading a second copy (the app does this).
        The base encoder a folder names must be one this machine offers (``offered_encoders``):
        a folder never makes us read another folder unless ``trust_base_path`` (the CLI's
        --trust-base-path) says the caller trusts it.
        """
        folder = Path(folder)
        config = read_model_config(folder)
        folders.check_files(folder)
        tensors = folders.read_tensors(folder / HEADS_FILE)  # before the encoder: a broken file fails fast
        encoder_config, heads_config = (_section(folder, config, key, kind)
                                        for key, kind in (("encoder", EncoderConfig), ("heads", HeadsConfig)))
        _check_sizes(folder, encoder_config, heads_config, tensors)  # before any layer is built from them
        confidence = _read_confidence(folder, config, heads_config, tensors)
        if config["encoder_weights"] == "stored":
            backbone, tokenizer = _load_encoder(folder, str(folder / ENCODER_DIR), "its stored encoder")
            encoder = SentenceEncoder(encoder_config, backbone, tokenizer)
            encoder.base_checksum = None  # these weights are not the named base model's
        elif base is not None and (base.config.model_name, base.base_checksum) == (
                config["base_encoder"]["name"], config["base_encoder"]["checksum"]) and base.is_pretrained():
            encoder = base.copy(share_weights=True, config=encoder_config)  # one backbone in memory, not two
        else:
            named = config["base_encoder"]
            if named["name"] not in offered_encoders() and not trust_base_path:
                raise ModelFolderError(
                    f"{folder}: its base encoder {named['name']!r} is not one this machine offers "
                    f"({', '.join(offered_encoders())}); a model folder never makes Sentence Lab read another folder. "
                    "Add the name to SENTENCE_LAB_MODELS, or if you trust this folder, pass --trust-base-path "
                    "(in Python: MultiTaskModel.load(..., trust_base_path=True))")
            backbone, tokenizer = _load_encoder(folder, named["name"], f"its base encoder {named['name']!r}")
            encoder = SentenceEncoder(encoder_config, backbone, tokenizer)
            if encoder.base_checksum != named["checksum"]:
                raise ModelFolderError(
                    f"{folder}: the base encoder {named['name']!r} found here has different weights "
                    f"(checksum {encoder.base_checksum[:12]}…) from the one this model was trained on "
                    f"({named['checksum'][:12]}…)"
                )
        model = cls(encoder, heads_config)
        folders.load_parts(folder / HEADS_FILE, tensors, model.head_parts(), CONFIG_FILE)
        model.record = TrainingRecord.from_config({k: v for k, v in config.items() if k in RECORD_KEYS})
        if confidence is not None:  # else a folder from before the rule: probability only, as __init__ set it
            model.confidence = confidence
        model.eval()
        return model.to(device) if device is not None else model


def _check_sizes(folder: Path, encoder: EncoderConfig, heads: HeadsConfig, tensors: dict[str, Tensor]) -> None:
    """The sizes config.json gives must be the saved tensors' own: a 2 KB config must not make the loader
    build a 15 GB layer (projection_dim 10,000,000) only to find the shapes differ."""
    def rows(name: str) -> int | None:
        return tensors[name].shape[0] if name in tensors and tensors[name].dim() == 2 else None

    # a model with no topics (sentiment only) has no topic head, so no tensor for it
    expected = {"projection.weight": encoder.projection_dim, "classifier.linear.weight": len(heads.class_names) or None}
    for name, size in expected.items():
        if rows(name) != size:
            raise ModelFolderError(f"{folder}: {HEADS_FILE} does not match {CONFIG_FILE} (edited, or from another "
                                   f"model?): {CONFIG_FILE} gives {size!r} for the {name.split('.')[0]}, the tensors "
                                   f"hold {rows(name)!r}")


def _read_confidence(folder: Path, config: dict[str, Any], heads: HeadsConfig,
                     tensors: dict[str, Tensor]) -> ConfidenceRule | None:
    """The unsure rule config.json's "confidence" and CONFIDENCE_FILE describe, checked like the heads are
    (names, shapes, finite values); None for a folder saved before the rule existed (no section, no file)."""
    path = folder / CONFIDENCE_FILE
    if "confidence" not in config:
        if path.exists() or path.is_symlink():
            raise ModelFolderError(f"{folder}: {CONFIDENCE_FILE} is there but {CONFIG_FILE} has no 'confidence' "
                                   "section for it (edited, or from another model?)")
        return None
    if not heads.class_names:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: 'confidence' describes a topic head that this model does not have")
    saved = folders.read_tensors(path) if path.is_file() else None
    dim = tensors["classifier.linear.weight"].shape[1]  # (C, D): the size the heads see (_check_sizes ran)
    try:
        return ConfidenceRule.from_saved(config["confidence"], saved, dim)
    except ValueError as exc:
        raise ModelFolderError(f"{folder}: the unsure rule ({CONFIG_FILE} 'confidence', {CONFIDENCE_FILE}) does not "
                               f"read back (edited, or from another model?): {exc}") from None


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` is a saved Sentence Lab model (so a save may replace it)."""
    return folders.has_json(folder, CONFIG_FILE, format=FORMAT_NAME)


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a saved model, with a clear error for anything that is not one we wrote."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{folder} is not a saved Sentence Lab model: {CONFIG_FILE} is missing")
    config = folders.read_json(path, "model config")
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ModelFolderError(f"{path} is not a Sentence Lab model config (format must be {FORMAT_NAME!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(f"{path}: format_version {config.get('format_version')!r} is not supported "
                               f"(expected {FORMAT_VERSION})")
    for key in ("encoder", "heads", "base_encoder"):
        if not isinstance(config.get(key), dict):
            raise ModelFolderError(f"{path}: {key!r} must be a JSON object, got {type(config.get(key)).__name__}")
    if config.get("encoder_weights") not in ("base", "stored"):
        raise ModelFolderError(f"{path}: encoder_weights must be 'base' or 'stored', got {config.get('encoder_weights')!r}")
    base = config["base_encoder"]
    if config["encoder_weights"] == "base" and not (
            isinstance(base.get("name"), str) and base["name"].strip() and isinstance(base.get("checksum"), str)):
        raise ModelFolderError(f"{path}: base_encoder needs a 'name' and the 'checksum' of the weights it refers to")
    if not (folder / HEADS_FILE).is_file():
        raise MissingFileError(f"{folder}: {HEADS_FILE} is missing")
    return config


def _section(folder: Path, config: dict[str, Any], key: str, kind: type) -> Any:
    """One validated section of config.json; a bad value is named with its section."""
    try:
        return kind.from_dict(config[key])
    except (ValueError, TypeError) as exc:
        raise ModelFolderError(f"{folder / CONFIG_FILE}, {key!r}: {exc}") from None


def _load_encoder(folder: Path, name: str, what: str) -> tuple[nn.Module, Any]:
    """load_backbone without downloads, its failures named as this folder's problem."""
    if what == "its stored encoder" and not Path(name).is_dir():
        raise ModelFolderError(f"{folder}: encoder_weights is 'stored' but the {ENCODER_DIR}/ folder is missing")
    if Path(name).expanduser().is_dir():  # a base encoder named by a path: the same checks as the folder itself
        folders.check_files(Path(name).expanduser())
    try:
        return load_backbone(name, local_only=True)
    except EncoderLoadError as exc:
        raise ModelFolderError(f"{folder}: cannot load {what} from this machine (loading a model never downloads "
                               f"or runs code): {exc.reason}") from None

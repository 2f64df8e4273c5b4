"""MultiTaskModel: one shared SentenceEncoder feeding a topic head and a sentiment head.

Saved as a folder: ``config.json`` + ``heads.safetensors`` (+ ``encoder/`` when the encoder's
weights changed). With the encoder untouched, the folder references the base model by name
and checksum instead of copying it. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import DEFAULT_MODEL, TASKS, EncoderConfig, HeadsConfig
from .encoder import SentenceEncoder, load_backbone, quiet_transformers, state_checksum

FORMAT_NAME = "sentence-lab"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
HEADS_FILE = "heads.safetensors"
CARD_FILE = "README.md"
ENCODER_DIR = "encoder"
# Weight formats that can carry pickled Python objects, i.e. code that runs on load. A folder holding
# one is refused outright, even beside safetensors: it is not what we saved, so it may be tampered with.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz"})
MAX_CONFIG_BYTES = 10_000_000  # a config.json is a few KB; a hostile one must not make us parse gigabytes


class ModelFolderError(ValueError):
    """A folder that cannot be loaded as a Sentence Lab model: unsafe, tampered with, or inconsistent."""


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
    """One text's answer: class probabilities, the top class, and the sentiment on the model's scale."""

    text: str
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    sentiment: float | None = None
    truncated: bool = False  # the text was longer than the encoder's max_length: only its start was read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        self.info: dict[str, Any] = {}  # training settings, data and metrics: saved into config.json

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
                raise ValueError(f"This model has no {task!r} head. Its tasks are: {', '.join(self.tasks) or 'none'}")
        if (features is None) == (pooled is None):
            raise ValueError("Pass exactly one of features or pooled")
        if pooled is None:
            pooled = self.encoder.pooled(features)
        embeddings = self.encoder.project(pooled)  # (B, D)
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
        was_training = self.training
        self.eval()
        try:
            return self(pooled=result.embeddings), result.truncated
        finally:
            self.train(was_training)

    def predict(self, texts: str | Sequence[str], batch_size: int = 32, show_progress_bar: bool = False,
                precision: str = "fp32") -> list[Prediction]:
        """Per text: class probabilities (softmax), the top class name, the sentiment score, and
        whether the text was cut at the encoder's ``max_length`` tokens."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return []
        out, truncated = self._predict_tensors(texts, batch_size, show_progress_bar, precision)
        cut = set(truncated)
        probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy() if out.logits is not None else None
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
            ))
        return predictions

    # -- saving and loading ----------------------------------------------------------------

    def encoder_is_pretrained(self) -> bool:
        """True while the backbone still holds exactly the pretrained weights it was loaded with."""
        return self.encoder.base_checksum is not None and state_checksum(self.encoder.backbone) == self.encoder.base_checksum

    def save(self, folder: str | os.PathLike) -> Path:
        """Write config.json + heads.safetensors (+ encoder/ if its weights changed), atomically.

        The folder is written beside its destination and renamed into place, so an interrupted
        save never leaves a half-written model.
        """
        import transformers

        folder = Path(folder)
        check_replaceable(folder, lambda f: _is_model_folder(f))
        folder.parent.mkdir(parents=True, exist_ok=True)
        store_encoder = not self.encoder_is_pretrained()
        encoder_config = asdict(self.encoder.config) | {"max_length": self.encoder.max_length}
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "encoder": encoder_config,
            "heads": self.heads_config.to_dict(),
            "encoder_weights": "stored" if store_encoder else "base",
            "base_encoder": {"name": self.encoder.config.model_name, "checksum": self.encoder.base_checksum},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "sentence_lab": _version()},
            **self.info,
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a saved model is an ordinary folder
        try:
            tensors = {f"classifier.{k}": v for k, v in self.classifier.state_dict().items()} if self.classifier else {}
            if self.sentiment_head is not None:
                tensors |= {f"sentiment_head.{k}": v for k, v in self.sentiment_head.state_dict().items()}
            if self.encoder.projection is not None:
                tensors |= {f"projection.{k}": v for k, v in self.encoder.projection.state_dict().items()}
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / HEADS_FILE))
            if store_encoder:
                with quiet_transformers():
                    self.encoder.backbone.save_pretrained(tmp / ENCODER_DIR, safe_serialization=True)
                    self.encoder.tokenizer.save_pretrained(tmp / ENCODER_DIR)
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default) + "\n")
            (tmp / CARD_FILE).write_text(model_card(self, "sentence-lab", folder=str(folder)))
            _replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str | torch.device | None = None) -> MultiTaskModel:
        """Load a saved folder: JSON and safetensors only, nothing downloaded, nothing unpickled.

        Refused with a ModelFolderError that names the problem: a folder holding pickle files or
        symbolic links, a config.json that is not one we wrote, heads whose names, shapes or values
        do not match it, and a base encoder that is missing here or has other weights (checksum).
        """
        folder = Path(folder)
        config = read_model_config(folder)
        check_model_files(folder)
        tensors = read_safetensors(folder / HEADS_FILE)  # before the encoder: a broken file fails fast
        encoder_config, heads_config = (_section(folder, config, key, kind)
                                        for key, kind in (("encoder", EncoderConfig), ("heads", HeadsConfig)))
        if config["encoder_weights"] == "stored":
            backbone, tokenizer = _load_encoder(folder, str(folder / ENCODER_DIR), "its stored encoder")
            encoder = SentenceEncoder(encoder_config, backbone, tokenizer)
            encoder.base_checksum = None  # these weights are not the named base model's
        else:
            base = config["base_encoder"]
            backbone, tokenizer = _load_encoder(folder, base["name"], f"its base encoder {base['name']!r}")
            encoder = SentenceEncoder(encoder_config, backbone, tokenizer)
            if encoder.base_checksum != base["checksum"]:
                raise ModelFolderError(
                    f"{folder}: the base encoder {base['name']!r} found here has different weights "
                    f"(checksum {encoder.base_checksum[:12]}…) from the one this model was trained on "
                    f"({base['checksum'][:12]}…)"
                )
        model = cls(encoder, heads_config)
        parts = {"classifier.": model.classifier, "sentiment_head.": model.sentiment_head,
                 "projection.": model.encoder.projection}
        expected = {prefix + k: v for prefix, module in parts.items() if module is not None
                    for k, v in module.state_dict().items()}
        check_heads(folder / HEADS_FILE, tensors, expected)
        for prefix, module in parts.items():
            if module is not None:
                module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        reserved = {"format", "format_version", "encoder", "heads", "encoder_weights", "base_encoder", "versions"}
        model.info = {k: v for k, v in config.items() if k not in reserved}
        model.eval()
        return model.to(device) if device is not None else model


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a saved model, with a clear error for anything that is not one we wrote."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a saved Sentence Lab model: {CONFIG_FILE} is missing")
    if path.is_symlink():
        raise ModelFolderError(f"{path} is a symbolic link; a model folder must hold its own files")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFolderError(f"{path} is {path.stat().st_size:,} bytes; a model config is a few KB")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ModelFolderError(f"{path} is not valid JSON: {reason}") from None
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
        raise FileNotFoundError(f"{folder}: {HEADS_FILE} is missing")
    return config


def check_model_files(folder: Path) -> None:
    """Refuse a folder holding pickle-format files or symbolic links, anywhere inside it."""
    pickles, links = [], []
    for root, dirs, files in os.walk(folder):  # does not follow links to folders
        for name in dirs + files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                links.append(relative)
            elif name in files and path.suffix.lower() in PICKLE_SUFFIXES:
                pickles.append(relative)
    if pickles:
        raise ModelFolderError(
            f"{folder}: refusing to load a folder with pickle files ({', '.join(sorted(pickles)[:5])}): they can run "
            "code when opened. Sentence Lab loads only safetensors and JSON; remove them or save the weights as safetensors")
    if links:
        raise ModelFolderError(f"{folder}: refusing to follow symbolic links ({', '.join(sorted(links)[:5])}); "
                               "a model folder must hold its own files")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFolderError(f"{path} is not a readable safetensors file ({exc})") from None


def check_heads(path: Path, tensors: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """The saved head tensors against those the config's heads need: names, shapes, finite values."""
    problems = [f"{k} is missing" for k in sorted(set(expected) - set(tensors))]
    problems += [f"{k} is not part of this model" for k in sorted(set(tensors) - set(expected))]
    for name in sorted(set(expected) & set(tensors)):
        tensor, want = tensors[name], expected[name]
        if tensor.shape != want.shape:
            problems.append(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(want.shape)}")
        elif not tensor.is_floating_point():
            problems.append(f"{name} holds {tensor.dtype}, expected floating-point weights")
        elif not torch.isfinite(tensor).all():
            problems.append(f"{name} holds NaN or infinite values")
    if problems:
        raise ModelFolderError(f"{path} does not match {CONFIG_FILE} (edited, or from another model?): "
                               + "; ".join(problems[:5]))


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
    try:
        return load_backbone(name, local_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ModelFolderError(f"{folder}: cannot load {what} from this machine (loading a model never downloads "
                               f"or runs code): {reason}") from None


def check_replaceable(folder: Path, is_ours) -> None:
    """Saving replaces ``folder`` whole: allowed only for a missing or empty folder or one of ours
    (``is_ours(folder)``), never for a file or someone's other folder (``--out ~`` must not wipe a home)."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder: choose another place to save to")
    if any(folder.iterdir()) and not is_ours(folder):
        raise FileExistsError(f"{folder} exists and is not a saved Sentence Lab model: refusing to replace it "
                              f"(choose a new or empty folder)")


def _is_model_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _replace_dir(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an existing ``dest`` is swapped out only once ``new`` is complete."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _version() -> str:
    from . import __version__

    return __version__


def model_card(model: MultiTaskModel, fmt: str, folder: str) -> str:
    from .card import model_card as card

    return card(model, fmt, folder)

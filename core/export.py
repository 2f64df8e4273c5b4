"""Take a model out of the lab: a sentence-transformers folder, or one ONNX graph.

    export_sentence_transformers(model, "out/st")   # SentenceTransformer("out/st") gives our embeddings
    export_onnx(model, "out/onnx")                   # token ids -> embedding, probabilities, sentiment

Both keep everything that makes our embeddings ours (pooling, projection, normalisation) and
both keep the heads: the sentence-transformers folder carries them in ``heads.safetensors``
beside a ``sentence_lab.json`` that says how to apply them; the ONNX graph computes them.
Each folder is written beside its destination and renamed into place, with a README.md card and
the list of what was written (sentence_lab_files.json: an export replaces only an earlier export
that holds nothing else).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import folders
from .card import model_card
from .config import EXPORT_FORMATS
from .encoder import quiet_transformers
from .errors import ConfigError, SentenceLabError
from .model import MultiTaskModel
from .runtime import eval_mode

ONNX_FILE = "model.onnx"
EXPORT_INFO_FILE = "sentence_lab.json"

# our pooling names -> sentence-transformers' Pooling(pooling_mode=...)
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "mean_sqrt_len": "mean_sqrt_len_tokens",
              "weighted_mean": "weightedmean", "last_token": "lasttoken"}


def export(model: MultiTaskModel, folder: str | os.PathLike, fmt: str) -> Path:
    """Write ``model`` to ``folder`` in one of EXPORT_FORMATS."""
    writers = {"sentence-lab": model.save, "sentence-transformers": lambda f: export_sentence_transformers(model, f),
               "onnx": lambda f: export_onnx(model, f)}
    if fmt not in writers:
        raise ConfigError(f"Unknown export format {fmt!r}. Valid formats are: {', '.join(EXPORT_FORMATS)}")
    return Path(writers[fmt](folder))


# -- sentence-transformers ----------------------------------------------------------------------


def export_sentence_transformers(model: MultiTaskModel, folder: str | os.PathLike) -> Path:
    """A folder that ``SentenceTransformer(folder)`` loads and that embeds exactly as ``model.encoder`` does.

    Modules: Transformer (the backbone, at the root) -> Pooling -> [Dense: our projection]
    -> [Normalize]. The heads ride along in heads.safetensors (see sentence_lab.json).
    """
    import transformers

    encoder = model.encoder
    with folders.write_folder(folder, is_export_folder) as tmp:
        with quiet_transformers():
            encoder.backbone.save_pretrained(tmp, safe_serialization=True)
            encoder.tokenizer.save_pretrained(tmp)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        folders.write_json(tmp / "sentence_bert_config.json", {"max_seq_length": encoder.max_length, "do_lower_case": False})
        folders.write_json(tmp / "1_Pooling" / "config.json", {"word_embedding_dimension": encoder.hidden_size,
                                                        "pooling_mode": ST_POOLING[encoder.config.pooling]})
        if encoder.projection is not None:
            path = f"{len(modules)}_Dense"
            folders.write_json(tmp / path / "config.json", {"in_features": encoder.projection.in_features,
                                                     "out_features": encoder.projection.out_features,
                                                     "bias": encoder.projection.bias is not None,
                                                     "activation_function": "torch.nn.modules.linear.Identity"})
            folders.save_tensors(folders.flatten({"linear": encoder.projection}), tmp / path / "model.safetensors")
            modules.append({"idx": len(modules), "name": str(len(modules)), "path": path, "type": "sentence_transformers.models.Dense"})
        if encoder.config.normalize:
            (tmp / f"{len(modules)}_Normalize").mkdir()
            modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        folders.write_json(tmp / "modules.json", modules)
        folders.write_json(tmp / "config_sentence_transformers.json", {
            "__version__": {"pytorch": torch.__version__, "transformers": transformers.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
        heads = folders.flatten(model.head_parts(projection=False))  # the projection is the Dense module above
        if heads:
            folders.save_tensors(heads, tmp / "heads.safetensors")
        folders.write_json(tmp / EXPORT_INFO_FILE, _export_info(model, "sentence-transformers"))
        _write_card(model, tmp, "sentence-transformers", folder)
    return Path(folder)


# -- ONNX -------------------------------------------------------------------------------------------


class OnnxGraph(nn.Module):
    """What the ONNX file computes: (input_ids, attention_mask) -> embeddings[, probabilities][, sentiment].

    Probabilities are the softmax of the topic logits; sentiment is clipped to the model's
    scale, as ``MultiTaskModel.predict`` reports it.
    """

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.outputs = ["embeddings"] + (["probabilities"] if model.classifier is not None else []) + \
                       (["sentiment"] if model.sentiment_head is not None else [])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        out = self.model(self.model.encoder.features(input_ids, attention_mask))
        result = [out.embeddings]
        if out.logits is not None:
            result.append(torch.softmax(out.logits, dim=-1))
        if out.sentiment is not None:
            result.append(self.model.clip_sentiment(out.sentiment))
        return tuple(result)


def export_onnx(model: MultiTaskModel, folder: str | os.PathLike, opset: int = 17) -> Path:
    """model.onnx (token ids -> embeddings, probabilities, sentiment) + the tokenizer + sentence_lab.json."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise SentenceLabError("ONNX export needs the onnx package: pip install -r requirements.txt") from None
    if model.encoder.device.type != "cpu":
        model = copy.deepcopy(model).cpu()  # trace on the CPU without moving a model that others may be using
    graph = OnnxGraph(model)
    # Sentences of different lengths: the example must have padding, or the traced graph would
    # drop the attention mask (transformers skips an all-ones mask).
    example = model.encoder.collate(model.encoder.tokenize(["an example sentence", "a second, longer example sentence"])[0])
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes |= {name: {0: "batch"} for name in graph.outputs}
    with folders.write_folder(folder, is_export_folder) as tmp:
        with eval_mode(model), torch.no_grad(), quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks that hold for every input
            torch.onnx.export(graph, (example["input_ids"], example["attention_mask"]), str(tmp / ONNX_FILE),
                              input_names=["input_ids", "attention_mask"], output_names=graph.outputs,
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        with quiet_transformers():
            model.encoder.tokenizer.save_pretrained(tmp)
        _limit_tokenizer(tmp, model.encoder.max_length)
        folders.write_json(tmp / EXPORT_INFO_FILE, _export_info(model, "onnx") | {"onnx": {
            "file": ONNX_FILE, "inputs": ["input_ids", "attention_mask"], "outputs": graph.outputs, "opset": opset}})
        _write_card(model, tmp, "onnx", folder)
    return Path(folder)


# -- shared -------------------------------------------------------------------------------------------


def is_export_folder(folder: Path) -> bool:
    """Whether ``folder`` is an earlier export (one that an export may replace, while it holds nothing else)."""
    return (folder / EXPORT_INFO_FILE).is_file()


def _export_info(model: MultiTaskModel, fmt: str) -> dict[str, Any]:
    encoder = model.encoder
    return {
        "format": fmt,
        "base_encoder": encoder.config.model_name,
        "pooling": encoder.config.pooling,
        "normalize": encoder.config.normalize,
        "projection_dim": encoder.config.projection_dim,
        "max_length": encoder.max_length,
        "class_names": model.class_names if model.classifier is not None else [],
        "sentiment_range": list(model.heads_config.sentiment_range) if model.sentiment_head is not None else None,
        "heads": {"classifier": "probabilities = softmax(classifier.weight @ embedding + classifier.bias)",
                  "sentiment_head": "sentiment = clip(sentiment_head.linear.weight @ embedding + bias, *sentiment_range)"},
        **{k: v for k, v in model.record.to_config().items() if k in ("training", "metrics")},
    }


def _write_card(model: MultiTaskModel, tmp: Path, fmt: str, folder: str | os.PathLike) -> None:
    (tmp / "README.md").write_text(model_card(model.facts(), fmt, folder=str(folder)))


def _limit_tokenizer(folder: Path, max_length: int) -> None:
    """The saved tokenizer truncates where the encoder does (all-MiniLM-L6-v2: 256, not BERT's 512)."""
    path = folder / "tokenizer_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        config["model_max_length"] = max_length
        folders.write_json(path, config)

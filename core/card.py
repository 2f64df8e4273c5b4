"""The README.md model card written into every saved or exported model folder.

It says what a reader needs before trusting the folder: the base encoder and how sentences
become vectors, what was frozen, what it was trained on, what it scored, and how to load it.
"""

from __future__ import annotations

import os
from typing import Any

from .model import MultiTaskModel

_LOAD = {
    "sentence-lab": """```python
from core.model import MultiTaskModel

model = MultiTaskModel.load("{folder}")
model.predict(["The striker scored twice in the final minutes."])   # label, probabilities, sentiment
model.encoder.encode(["any sentence"])                              # embeddings
```

or from the command line: `python -m core predict --model {folder} "any sentence"`.""",
    "sentence-transformers": """```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{folder}")
embeddings = model.encode(["any sentence"])   # pooling, projection and normalisation included
```

The heads are in `heads.safetensors` (see `sentence_lab.json` for class names and scale):

```python
import torch
from safetensors.torch import load_file

heads = load_file("{folder}/heads.safetensors")
e = torch.as_tensor(embeddings)
probabilities = torch.softmax(e @ heads["classifier.linear.weight"].T + heads["classifier.linear.bias"], -1)
sentiment = (e @ heads["sentiment_head.linear.weight"].T + heads["sentiment_head.linear.bias"]).squeeze(-1)
# clip sentiment to sentiment_range from sentence_lab.json, as the lab reports it
```""",
    "onnx": """```python
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{folder}")
session = ort.InferenceSession("{folder}/model.onnx")
batch = tokenizer(["any sentence", "another one"], padding=True, truncation=True, return_tensors="np")
outputs = session.run(None, {{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}})
# outputs: embeddings (B, D), then probabilities (B, classes) and sentiment (B,) when the model has those heads
```""",
}


def model_card(model: MultiTaskModel, fmt: str = "sentence-lab", folder: str = "MODEL_FOLDER") -> str:
    """Markdown for a model folder in format ``fmt`` ("sentence-lab", "sentence-transformers", "onnx")."""
    enc = model.encoder.config
    info = model.info
    training: dict[str, Any] = _dict(info.get("training"))
    config: dict[str, Any] = _dict(training.get("config"))
    weights = "pretrained, unchanged" if model.encoder_is_pretrained() else "fine-tuned here (stored in this folder)"
    lines = [
        "# Sentence Lab model",
        "",
        f"Format: **{fmt}**. Made with Sentence Lab: multi-task heads (topic, sentiment) on a sentence encoder.",
        "",
        "## Encoder",
        "",
        f"- Base encoder: `{enc.model_name}` ({weights})",
        f"- Pooling: {enc.pooling}; L2 normalisation: {'on' if enc.normalize else 'off'}; "
        f"projection: {enc.projection_dim or 'none'}; max tokens: {model.encoder.max_length} (longer text is truncated)",
        f"- Embedding size: {model.encoder.embedding_dim}",
        "",
        "## Heads",
        "",
        f"- Topic classes: {', '.join(model.class_names) if model.classifier is not None else 'no topic head'}",
        f"- Sentiment: {'scale %g to %g' % tuple(model.heads_config.sentiment_range) if model.sentiment_head is not None else 'no sentiment head'}",
        "",
        "## Training",
        "",
    ]
    if not training:
        lines += ["Not trained in the lab (heads as initialised or loaded).", ""]
    else:
        freeze = "gradual unfreezing (one more top layer per epoch)" if config.get("gradual_unfreeze") else f"preset `{config.get('freeze')}`"
        lines += [
            f"- Freezing: {freeze}; layer-wise LR decay: {config.get('layer_lr_decay') or 'none'}",
            f"- Epochs: {config.get('epochs')} (best epoch {_plus1(training.get('best_epoch'))}); "
            f"learning rate {config.get('learning_rate')} heads, {config.get('encoder_learning_rate')} encoder; "
            f"batch {config.get('batch_size')}; seed {config.get('seed')}",
            f"- Task weights: topic {config.get('classification_weight')}, sentiment {config.get('sentiment_weight')}",
        ]
        data = _dict(training.get("data"))
        for split in ("train", "validation"):
            if isinstance(data.get(split), dict):
                d = data[split]
                lines.append(f"- {split.title()} data: {d.get('rows')} rows ({d.get('labelled')} with a topic, "
                             f"{d.get('with_sentiment')} with sentiment)")
        for split, files in _dict(info.get("data")).items():
            if isinstance(files, list):
                lines.append(f"- {split.title()} files: {', '.join(f'`{f}`' for f in files)}")
        lines.append(f"- Time: {training.get('seconds')} s, {training.get('steps')} steps")
        lines.append("")
    lines += ["## Metrics", ""]
    rows = _metric_rows(info.get("metrics"))
    if rows:
        lines += ["| data | accuracy | macro-F1 | Pearson | Spearman | MSE |", "|---|---|---|---|---|---|"]
        for name, m in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in ("accuracy", "macro_f1", "pearson", "spearman", "mse")) + " |")
    else:
        lines.append("None recorded (`python -m core evaluate --model FOLDER --csv FILE --record` adds them).")
    lines += ["", "## How to load", "", _LOAD[fmt].format(folder=_display(folder)), ""]
    return "\n".join(lines)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _metric_rows(metrics: Any) -> list[tuple[str, dict[str, Any]]]:
    """{"validation": {...}, "test": {"file": {...}}} -> [("validation", {...}), ("test: file", {...})]."""
    rows = []
    for split, values in _dict(metrics).items():
        if not isinstance(values, dict):
            continue
        if any(isinstance(v, dict) for v in values.values()):
            rows += [(f"{split}: {name}", v) for name, v in values.items() if isinstance(v, dict)]
        else:
            rows.append((split, values))
    return rows


def _display(folder: str) -> str:
    """A path a reader can use: relative to the working folder when inside it, else the folder's name."""
    if not os.path.isabs(folder):
        return folder
    relative = os.path.relpath(folder)
    return os.path.basename(folder) if relative.startswith("..") else relative


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def _plus1(value: Any) -> Any:
    return value + 1 if isinstance(value, int) else "—"

"""The README.md model card written into every saved or exported model folder.

It says what a reader needs before trusting the folder: the base encoder and how sentences
become vectors, what was frozen, what it was trained on, what it scored, and how to load it.
It renders plain facts (``ModelFacts``, which ``MultiTaskModel.facts()`` gives), so it never
needs the model itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .config import EncoderConfig
from .record import TrainingRecord


@dataclass
class ModelFacts:
    """What a card (and an export's sentence_lab.json) says about a model."""

    encoder: EncoderConfig
    max_length: int  # tokens read per text
    embedding_dim: int
    encoder_pretrained: bool  # the backbone still holds the base model's weights
    class_names: list[str]  # empty: no topic head
    sentiment_range: tuple[float, float] | None  # None: no sentiment head
    record: TrainingRecord
    confidence: dict[str, Any] | None = None  # the unsure rule (ConfidenceRule.to_config()); None: no topic head

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


STSB_TEST = "stsb/sts-test.csv"  # where the CLI records a trained encoder's STS-B figures
STSB_BASE = 0.8203  # all-MiniLM-L6-v2's own STS-B test Spearman (python -m core evaluate-sts)


def model_card(facts: ModelFacts, fmt: str = "sentence-lab", folder: str = "MODEL_FOLDER") -> str:
    """Markdown for a model folder in format ``fmt`` ("sentence-lab", "sentence-transformers", "onnx")."""
    enc, record = facts.encoder, facts.record
    weights = "pretrained, unchanged" if facts.encoder_pretrained else "fine-tuned here (stored in this folder)"
    lines = [
        "# Sentence Lab model",
        "",
        f"Format: **{fmt}**. Made with Sentence Lab: multi-task heads (topic, sentiment) on a sentence encoder.",
        "",
        "## Encoder",
        "",
        f"- Base encoder: `{enc.model_name}` ({weights})",
        f"- Pooling: {enc.pooling}; L2 normalisation: {'on' if enc.normalize else 'off'}; "
        f"projection: {enc.projection_dim or 'none'}; max tokens: {facts.max_length} (longer text is truncated)",
        f"- Embedding size: {facts.embedding_dim}",
        "",
        "## Heads",
        "",
        f"- Topic classes: {', '.join(facts.class_names) or 'no topic head'}",
        f"- Sentiment: {'scale %g to %g' % tuple(facts.sentiment_range) if facts.sentiment_range else 'no sentiment head'}",
        *_unsure_lines(facts.confidence, fmt),
        "",
        "## Training",
        "",
    ]
    config = record.config
    if config is None:
        lines += ["Not trained in the lab (heads as initialised or loaded).", ""]
    else:
        freeze = ("gradual unfreezing (one more top layer per epoch)" if config.gradual_unfreeze
                  else f"preset `{config.freeze}`")
        run = f"{record.epochs_run} run, " if record.epochs_run is not None else ""
        lines += [
            f"- Freezing: {freeze}; layer-wise LR decay: {config.layer_lr_decay or 'none'}",
            f"- Epochs: {config.epochs} ({run}best epoch {_plus1(record.best_epoch)}); "
            f"learning rate {config.learning_rate} heads, {config.encoder_learning_rate} encoder; "
            f"batch {config.batch_size}; seed {config.seed}",
            f"- Task weights: topic {config.classification_weight}, sentiment {config.sentiment_weight}",
        ]
        if config.freeze != "encoder" or config.gradual_unfreeze:  # the encoder learned
            held = ("each text's" if config.keep_sentiment_rows == 1 else
                    f"each text's (sentiment-only texts at {config.keep_sentiment_rows:g} of that)")
            kept = (f"{held} embedding held near the frozen encoder's (weight {config.keep_similarity:g})"
                    if config.keep_similarity else "no term keeping the embeddings near the frozen encoder's")
            first = "topic head fitted on the frozen encoder first; " if config.topic_head_first else ""
            lines.append(f"- Encoder training: {first}{kept}; precision {config.precision}")
        stsb = _dict(_dict(_dict(record.metrics).get("test")).get(STSB_TEST))
        if "spearman" in stsb:
            lines.append(f"- General similarity: STS-B test Spearman {stsb['spearman']:.4f} of this encoder "
                         f"(all-MiniLM-L6-v2 as released: {STSB_BASE:.4f})")
        if record.head_fit:
            lines.append(f"- Heads fitted exactly on the frozen encoder's embeddings (topic: L-BFGS to convergence; "
                         f"sentiment: closed form), L2 penalty {record.head_fit.get('l2', '?')}; final fit on "
                         f"{record.head_fit.get('final_fit', '?')}")
        for split, d in (("train", record.train_data), ("validation", record.validation_data)):
            if d is not None:
                lines.append(f"- {split.title()} data: {d.rows} rows ({d.labelled} with a topic, "
                             f"{d.with_sentiment} with sentiment)")
        for split, files in record.files.items():
            what = ("STS pairs learned beside the tasks (cosine of each pair fitted to its score)" if split == "sts_pairs"
                    else f"{split.title()} files")
            lines.append(f"- {what}: {', '.join(f'`{f}`' for f in files)}")
        lines.append(f"- Time: {round(record.seconds, 2)} s, {record.steps} steps")
        lines.append("")
    lines += ["## Metrics", ""]
    rows = _metric_rows(record.metrics)
    if rows:
        lines += ["| data | accuracy | macro-F1 | Pearson | Spearman | MSE |", "|---|---|---|---|---|---|"]
        for name, m in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in ("accuracy", "macro_f1", "pearson", "spearman", "mse")) + " |")
    else:
        lines.append("None recorded (`python -m core evaluate --model FOLDER --csv FILE --record` adds them).")
    lines += ["", "## How to load", "", _LOAD[fmt].format(folder=_display(folder)), ""]
    return "\n".join(lines)


def _unsure_lines(rule: dict[str, Any] | None, fmt: str) -> list[str]:
    """What the card says about when a topic answer is marked unsure (core.confidence)."""
    if not rule:
        return []
    line = f"- Unsure topic: when the top topic's probability is under {rule['min_probability']:.0%}"
    if rule.get("references"):
        line += (f", or when the sentence's cosine similarity to the nearest of {rule['references']} reference points "
                 f"(k-means of {rule['rows']:,} topic-labelled training rows) is under {rule['min_similarity']:.3f}, "
                 f"which {rule['percentile']:g}% of held-out training rows fall under")
    line += " (the most probable topic is still given)"
    if fmt != "sentence-lab" and rule.get("references"):
        line += "; the reference points stay in the sentence-lab folder, this export does not carry them"
    return [line]


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

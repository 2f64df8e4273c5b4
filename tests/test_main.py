"""main.py, the take-home's guided tour, runs end to end on the real model; docs/task3.md holds Task 3's answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADINGS = ("Task 1: Sentence Transformer Implementation", "Task 2: Multi-Task Learning Expansion",
            "Task 3: Training Considerations", "Task 4: Training Loop Implementation")
PRESETS = ("none", "all", "encoder", "classification_head", "sentiment_head")


@pytest.fixture(scope="module")
def tour() -> str:
    """The stdout of one ``python main.py`` run (about 20 s on two CPU cores)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"main.py exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no match for {pattern!r} in:\n{text}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.slow  # one real-model run of main.py, shared by the module
def test_tour_shows_the_four_tasks_in_order(tour):
    positions = [tour.find(h) for h in HEADINGS]
    assert all(p >= 0 for p in positions), [h for h, p in zip(HEADINGS, positions) if p < 0]
    assert positions == sorted(positions)
    for where in ("core/encoder.py", "core/model.py", "core/freezing.py", "core/training.py", "docs/task3.md"):
        assert where in tour


@pytest.mark.slow  # one real-model run of main.py, shared by the module
def test_task1_paraphrases_are_closer_than_unrelated_sentences(tour):
    assert "shape (4, 384)" in tour
    paraphrase = _number(r"^paraphrase similarity .*?: (-?[\d.]+)", tour)
    unrelated = _number(r"^unrelated similarity .*?: (-?[\d.]+)", tour)
    assert paraphrase > 0.6 > 0.2 > unrelated  # all-MiniLM-L6-v2: about 0.74 against about -0.04
    assert "cls pooling" in tour


@pytest.mark.slow  # one real-model run of main.py, shared by the module
def test_task2_predicts_topics_and_sentiment(tour):
    for topic in ("Sports", "Business", "Sci/Tech", "World"):  # one sentence of each, in the shipped model's classes
        assert re.search(rf"topic {re.escape(topic)}\s+p=0\.\d+\s+sentiment [+-]\d\.\d+", tour), topic
    assert "forward -> MultiTaskOutput: embeddings (4, 384), logits (4, 4), sentiment (4,)" in tour


@pytest.mark.slow  # one real-model run of main.py, shared by the module
def test_task3_counts_trainable_parameters_per_preset(tour):
    counts = {p: (_number(rf"^{p}\s+([\d,]+) /", tour), _number(rf"^{p}\s+[\d,]+ / ([\d,]+)", tour)) for p in PRESETS}
    totals = {total for _, total in counts.values()}
    assert len(totals) == 1 and totals.pop() > 22_000_000
    trainable = {p: t for p, (t, _) in counts.items()}
    assert trainable["all"] == 0
    assert 0 < trainable["encoder"] < 10_000  # the two heads only
    assert trainable["encoder"] < trainable["classification_head"] < trainable["none"]
    assert trainable["encoder"] < trainable["sentiment_head"] < trainable["none"]
    gradual = _number(r"^gradual \(top 2\)\s+([\d,]+) /", tour)
    assert trainable["encoder"] < gradual < trainable["none"]


@pytest.mark.slow  # one real-model run of main.py, shared by the module
def test_task4_trains_and_reports_validation_metrics(tour):
    assert "synthetic data: 400 rows (320 train, 80 validation)" in tour
    assert re.search(r"data\[0\]: text '.+', label \d \(\w", tour)
    assert _number(r"^\s+accuracy\s+([\d.]+)", tour) > 0.9  # the synthetic topics are easy on a frozen encoder
    assert _number(r"^\s+pearson\s+(-?[\d.]+)", tour) > 0.5
    for name in ("macro_f1", "mse", "mae", "spearman"):
        assert re.search(rf"^\s+{name}\s+-?[\d.]+$", tour, re.MULTILINE), name
    epochs = re.findall(r"^\s+(\d)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", tour, re.MULTILINE)
    assert [int(e) for e, _ in epochs] == [1, 2, 3, 4, 5]
    assert float(epochs[-1][1]) < float(epochs[0][1])  # the training loss went down


def test_task3_answers_document():
    doc = (ROOT / "docs" / "task3.md").read_text(encoding="utf-8")
    assert "\n## Which parts to freeze\n" in doc
    section = doc.split("\n## Which parts to freeze\n", 1)[1].split("\n## ", 1)[0]
    for scenario in ("entire network frozen", "only the encoder frozen", "only one task head frozen"):
        assert scenario in section.lower(), scenario
    for preset in PRESETS:
        assert f"`{preset}`" in section, preset
    assert "## Transfer learning" in doc and "all-MiniLM-L6-v2" in doc

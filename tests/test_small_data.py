"""A person's own small CSV (24 rows, 4 topics, sentiment -1..1), through the CLI and the app with their
defaults, on the real model: unseen sentences get the topic a logistic-regression probe on the same rows
gives, and the sentiment sign a ridge probe gives (the heads on a frozen encoder are those probes)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.test_cli import run_cli

pytestmark = pytest.mark.slow

ROWS = [  # (text, topic, sentiment)
    ("The striker scored a stunning winner in the final minute.", "Sports", 0.9),
    ("Our team lost again after a dreadful defensive display.", "Sports", -0.8),
    ("The marathon was cancelled, leaving runners bitterly disappointed.", "Sports", -0.6),
    ("A brilliant comeback gave the club its first title in decades.", "Sports", 1.0),
    ("The coach praised the players for a solid, steady performance.", "Sports", 0.4),
    ("Fans booed as the champions crashed out in the first round.", "Sports", -0.7),
    ("Shares soared after the company reported record profits.", "Business", 0.9),
    ("The bank cut hundreds of jobs as losses mounted.", "Business", -0.9),
    ("Investors welcomed the merger, lifting the stock sharply.", "Business", 0.7),
    ("The retailer warned of weak sales and falling margins.", "Business", -0.6),
    ("Inflation eased slightly, giving households some relief.", "Business", 0.3),
    ("The airline filed for bankruptcy after years of debt.", "Business", -1.0),
    ("The new phone has a superb camera and a battery that lasts days.", "Sci/Tech", 0.9),
    ("The software update is buggy and keeps crashing my laptop.", "Sci/Tech", -0.8),
    ("Scientists celebrated as the probe landed safely on the comet.", "Sci/Tech", 0.8),
    ("The chip shortage delayed the console launch again, frustrating buyers.", "Sci/Tech", -0.5),
    ("Researchers built a faster, cleaner battery for electric cars.", "Sci/Tech", 0.6),
    ("A security flaw exposed millions of users' passwords.", "Sci/Tech", -0.9),
    ("The peace deal brought hope to a region torn by war.", "World", 0.8),
    ("Dozens were killed when a bomb exploded in the crowded market.", "World", -1.0),
    ("Leaders agreed on a historic climate pact at the summit.", "World", 0.7),
    ("Thousands fled as floods destroyed villages across the country.", "World", -0.9),
    ("The election passed peacefully, and the result was accepted by all.", "World", 0.5),
    ("Talks collapsed and the border conflict escalated overnight.", "World", -0.7),
]
UNSEEN = [
    "The goalkeeper made a wonderful save to win the cup.",
    "The tennis star suffered a humiliating defeat.",
    "Profits jumped and the shares hit an all-time high.",
    "The factory closed, and its workers lost their jobs.",
    "The laptop's gorgeous screen and speed impressed every reviewer.",
    "Hackers stole data from the app, and users are furious.",
    "A ceasefire finally brought calm to the capital.",
    "The earthquake left thousands homeless and grieving.",
    "The rookie's hat-trick thrilled the home crowd.",
    "The currency collapsed, wiping out people's savings.",
    "The space telescope sent back breathtaking pictures.",
    "Protesters were arrested as the government cracked down.",
]


def _csv(tmp_path) -> str:
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "sentiment"])
        writer.writerows(ROWS)
    return str(path)


def _probe_differences(predictions: list[dict]) -> tuple[int, int]:
    """Unseen sentences whose topic / sentiment sign differ from scikit-learn's probes on the same 24 rows."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from core import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(normalize=True)  # what the heads see by default, in the CLI and the app
    X, unseen = encoder.encode([r[0] for r in ROWS]), encoder.encode(UNSEEN)
    topics = LogisticRegression(C=1.0, max_iter=2000).fit(X, [r[1] for r in ROWS]).predict(unseen)
    signs = np.sign(Ridge(alpha=1.0).fit(X, [r[2] for r in ROWS]).predict(unseen))
    assert list(topics).count("Sports") >= 2  # the probes themselves get the obvious ones right
    return (sum(p["label"] != t for p, t in zip(predictions, topics)),
            sum(np.sign(p["sentiment"]) != s for p, s in zip(predictions, signs)))


def test_a_small_csv_through_the_cli_gives_the_probes_answers(tmp_path):
    run_cli("train", "--csv", _csv(tmp_path), "--out", tmp_path / "model", "--quiet")  # the CLI's defaults
    ours = json.loads(run_cli("predict", "--model", tmp_path / "model", "--json", "--quiet", *UNSEEN).stdout)
    topic_misses, sign_misses = _probe_differences(ours)
    print(f"\nCLI, 24-row CSV: {topic_misses} topic and {sign_misses} sign differences from the probes in 12")
    assert topic_misses <= 1 and sign_misses == 0, [(p["text"], p["label"], p["sentiment"]) for p in ours]


def test_a_small_csv_in_the_app_with_the_pages_defaults_gives_the_probes_answers(tmp_path):
    from ui.classify_tab import ClassifyTab
    from ui.inputs import TrainForm
    from ui.state import Limits, Session, Shared, load_shared_models
    from ui.train_tab import TrainTab

    shared = Shared(*load_shared_models(), Limits())
    session = Session()
    *_, (_, _, status, _, note, _, confusion, _) = TrainTab(shared).run(TrainForm(source="csv", csv_file=_csv(tmp_path)),
                                                                       session)
    assert "fitted exactly" in status and "your model" in note
    assert sum(map(sum, confusion.data[0].z)) == 24  # where the topics go wrong: over the same 24 predictions
    assert "by leave-one-out cross-validation over all 24 rows (too few rows for a held-out split" in status
    _, _, ours = ClassifyTab(shared).classify("\n".join(UNSEEN), session)
    topic_misses, sign_misses = _probe_differences(ours)
    print(f"\napp, 24-row CSV: {topic_misses} topic and {sign_misses} sign differences from the probes in 12")
    assert topic_misses <= 1 and sign_misses == 0, [(p["text"], p["label"], p["sentiment"]) for p in ours]

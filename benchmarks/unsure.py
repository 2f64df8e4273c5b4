"""The unsure rule (core.confidence) on the shipped model: off-topic sentences, AG News, and the tricky cases.

    python benchmarks/unsure.py            # measure the rule assets/default_model carries
    python benchmarks/unsure.py --write    # first build its reference from AG News train and save it there

--write builds what ``train()`` builds at the end of a run, for a model trained before the rule
existed: 2,000 topic-labelled rows of ``ag_news/train.csv`` (500 per topic, seeded with the
model's own seed), embedded with the real encoder, summarised into reference points with the
threshold they imply. It adds them to the folder (confidence.safetensors, config.json's
"confidence", the card's line, the file list) and leaves the trained heads byte for byte as they were.

Then it prints: the ten off-topic sentences that the acceptance statement counts (chosen before any
figure was seen, and not used to choose anything), the four example sentences, DEV_OFF_TOPIC (the
held-out set the rule's settings were chosen on), negation / sarcasm / other languages, and on the
AG News test file the share marked unsure and the accuracy on all rows vs on the rows not marked
unsure (also on headlines alone: short in-domain text, the rule's hardest case). --out writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core import folders  # noqa: E402
from core.card import model_card  # noqa: E402
from core.confidence import MAX_ROWS, fit_rule  # noqa: E402
from core.config import DEFAULT_HEADS_DIR  # noqa: E402
from core.datasets import find_datasets_dir  # noqa: E402
from core.model import CARD_FILE, CONFIDENCE_FILE, CONFIG_FILE, HEADS_FILE, MultiTaskModel, is_model_folder  # noqa: E402

# The acceptance statement's ten (food, music, weather, ...): reported, never used to choose a setting.
OFF_TOPIC = [
    "The pizza was amazing.",
    "I've been listening to that jazz album on repeat all week.",
    "It looks like it will rain all afternoon, so bring an umbrella.",
    "My cat knocked a glass of water off the kitchen table again.",
    "Grandma's apple pie recipe needs a pinch of cinnamon.",
    "We spent the weekend hiking in the mountains with friends.",
    "Happy birthday! I hope your day is full of cake and laughter.",
    "Please remember to water the tomato plants before you leave.",
    "This sweater is so soft and keeps me warm in winter.",
    "I can't find my car keys anywhere this morning.",
]
# The held-out off-topic set the rule's settings (points per topic, percentile) were chosen on.
DEV_OFF_TOPIC = [
    "This soup needs more salt.", "I had pancakes with maple syrup for breakfast.",
    "The sushi at that little place downtown is the best.", "Let the dough rest for an hour before baking.",
    "She plays the violin beautifully.", "The band's new song is stuck in my head.", "I love singing in the shower.",
    "It's freezing outside today.", "The sunset over the lake was gorgeous.", "Fog rolled in over the hills this morning.",
    "My dog loves chasing squirrels in the park.", "The puppy fell asleep on my lap.", "I need to do the laundry tonight.",
    "The couch is too big for our living room.", "Don't forget to buy milk and eggs.",
    "My sister is getting married next spring.", "I stayed up too late reading a novel.",
    "The baby finally slept through the night.", "I'm learning to knit a scarf.", "We built a sandcastle at the beach.",
    "Painting with watercolors relaxes me.", "Hi, how are you doing today?", "Thanks so much for the lovely gift!",
    "See you tomorrow at lunch.", "I feel a bit tired and sleepy.", "That joke made me laugh so hard.",
    "The roses in the garden are blooming.", "These shoes are really comfortable.", "Where did I leave my glasses?",
    "The coffee shop on the corner opens at seven.", "My favourite color is blue.", "Can you pass the salt, please?",
    "The kids are playing hide and seek.", "I brushed my teeth and went to bed.", "This candle smells like vanilla.",
]
EXAMPLES = {
    "The striker scored twice as United won the cup final.": "Sports",
    "Shares of the chip maker plunged after weak quarterly earnings.": "Business",
    "NASA's new telescope captured stunning images of a distant galaxy.": "Sci/Tech",
    "Peace talks collapsed as the two governments traded bitter accusations.": "World",
}
# Negation, sarcasm, other languages: what a reader might hope for, beside each.
TRICKY = {
    "The striker did not score and United did not win the cup final.": "Sports",
    "Shares of the chip maker did not fall despite weak earnings.": "Business",
    "Oh great, another quarter of record losses for the bank. Just wonderful.": "Business",
    "Sure, NASA's telescope will definitely find aliens next week.": "Sci/Tech",
    "I don't care about football at all.": "unsure or Sports",
    "Oh wonderful, it's raining on my day off again.": "unsure",
    "The pizza was not good at all.": "unsure",
    "Die Pizza war fantastisch und der Kellner sehr freundlich.": "unsure",
    "Me encanta escuchar música los domingos por la mañana.": "unsure",
    "J'aime beaucoup le fromage et le vin rouge.": "unsure",
    "Der Stürmer erzielte zwei Tore im Pokalfinale.": "Sports or unsure",
    "Las acciones del fabricante de chips cayeron tras los malos resultados trimestrales.": "Business or unsure",
    "Le gouvernement a annoncé de nouvelles élections législatives.": "World or unsure",
}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def stratified(rows: list[dict[str, str]], classes: list[str], total: int, seed: int) -> list[dict[str, str]]:
    """``total`` rows, as many of each topic (seeded)."""
    rng = random.Random(seed)
    picked = []
    for c in classes:
        of_class = [r for r in rows if r["label"] == c]
        picked += rng.sample(of_class, min(len(of_class), total // len(classes)))
    return picked


def vectors(model: MultiTaskModel, texts: list[str]) -> torch.Tensor:
    """(N, D) the vectors the heads see, as training embeds them."""
    return model.predict_tensors(texts, batch_size=64).embeddings


def write_reference(model: MultiTaskModel, folder: Path, data: Path) -> None:
    """Build the shipped model's rule and add it to ``folder``: every other byte of the folder stays.

    Not ``model.save``: the folder was saved by an earlier version, and saving again would also rewrite
    its training record in today's terms (settings that run did not have). Its heads.safetensors is copied
    as it is, config.json gains only "confidence", and the card only its line about the rule.
    """
    seed = model.record.config.seed if model.record.config is not None else 42
    sample = stratified(read_rows(data / "ag_news" / "train.csv"), model.class_names, MAX_ROWS, seed)
    labels = torch.tensor([model.class_names.index(r["label"]) for r in sample])
    print(f"embedding {len(sample)} rows of ag_news/train.csv ...", flush=True)
    model.confidence = fit_rule(vectors(model, [r["text"] for r in sample]), labels, len(model.class_names), seed)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["confidence"] = model.confidence.to_config()
    card = model_card(model.facts(), "sentence-lab", folder=str(folder))
    def others(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("- Unsure topic:")]

    if others(card) != others((folder / CARD_FILE).read_text()):
        raise SystemExit("refusing: the card would change beyond the rule's line")
    heads = (folder / HEADS_FILE).read_bytes()
    with folders.write_folder(folder, is_model_folder) as tmp:  # atomic; the file list is written too
        (tmp / HEADS_FILE).write_bytes(heads)
        folders.write_json(tmp / CONFIG_FILE, config)
        folders.save_tensors(model.confidence.tensors(), tmp / CONFIDENCE_FILE)
        (tmp / CONFIDENCE_FILE).chmod(0o644)  # safetensors writes 0600; the image's app user must read it
        (tmp / CARD_FILE).write_text(card)
    print(f"saved {len(model.confidence.references)} reference points, min_similarity "
          f"{model.confidence.min_similarity}, into {folder / CONFIDENCE_FILE}")


def readings(model: MultiTaskModel, texts: list[str]) -> list[dict]:
    """Each text's topic, top probability, similarity to the nearest reference, and unsure reason."""
    similarity = model.confidence.nearest(vectors(model, texts))
    out = []
    for i, p in enumerate(model.predict(texts)):
        out.append({"text": p.text, "label": p.label, "top": max(p.probabilities.values()),
                    "similarity": None if similarity is None else round(float(similarity[i]), 3),
                    "unsure": p.unsure, "reason": p.unsure_reason})
    return out


def show(title: str, rows: list[dict], expected: list[str] | None = None) -> None:
    print(f"\n## {title}: {sum(r['unsure'] for r in rows)}/{len(rows)} unsure\n")
    for i, r in enumerate(rows):
        reading = "UNSURE" if r["unsure"] else "sure"
        hope = f"  (expected: {expected[i]})" if expected else ""
        print(f"- {r['text'][:70]:70s} -> {r['label']:8s} {r['top']:4.0%}  sim {r['similarity']}  {reading}{hope}")


def on_test_file(model: MultiTaskModel, rows: list[dict[str, str]], what: str) -> dict:
    """Share of rows marked unsure; accuracy on all rows, on the sure ones and on the unsure ones."""
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    out = model.predict_tensors(texts, batch_size=64)
    probs = torch.softmax(out.logits.float(), dim=-1)
    unsure = torch.tensor([r is not None for r in model.confidence.judge(out.embeddings, probs)])
    right = torch.tensor([model.class_names[i] == g for i, g in zip(probs.argmax(-1).tolist(), gold)])
    figures = {"rows": len(rows), "unsure_share": float(unsure.float().mean()),
               "accuracy_all": float(right.float().mean()),
               "accuracy_sure": float(right[~unsure].float().mean()) if (~unsure).any() else None,
               "accuracy_unsure": float(right[unsure].float().mean()) if unsure.any() else None}
    print(f"\n## AG News test, {what}: {figures['unsure_share']:.1%} of {len(rows)} rows unsure; accuracy "
          f"{figures['accuracy_all']:.4f} on all rows, {figures['accuracy_sure']:.4f} on the sure ones, "
          f"{figures['accuracy_unsure']:.4f} on the unsure ones")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_HEADS_DIR)
    parser.add_argument("--data", type=Path, default=find_datasets_dir(), help="the shared datasets folder")
    parser.add_argument("--write", action="store_true", help="build the reference from AG News train and save it")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.data is None:
        raise SystemExit("the shared datasets folder was not found: pass --data ../shared/datasets")
    model = MultiTaskModel.load(args.model)
    if args.write:
        write_reference(model, args.model, args.data)
        model = MultiTaskModel.load(args.model)  # measure what was saved
    rule = model.confidence
    print(f"rule: top topic under {rule.min_probability:.0%}" + (
        f", or similarity to the nearest of {len(rule.references)} points under {rule.min_similarity}"
        if rule.references is not None else " (no reference points: probability only)"))
    results = {"off_topic": readings(model, OFF_TOPIC), "examples": readings(model, list(EXAMPLES)),
               "dev_off_topic": readings(model, DEV_OFF_TOPIC), "tricky": readings(model, list(TRICKY))}
    show("Off-topic, the acceptance ten", results["off_topic"])
    show("Example topic sentences", results["examples"], list(EXAMPLES.values()))
    show("Off-topic, held out for choosing the settings", results["dev_off_topic"])
    show("Negation, sarcasm, other languages", results["tricky"], list(TRICKY.values()))
    test = read_rows(args.data / "ag_news" / "test.csv")
    results["ag_news_test"] = on_test_file(model, test, "title + description")
    headlines = [r | {"text": r["text"].split(". ", 1)[0]} for r in test]
    results["ag_news_test_headlines"] = on_test_file(model, headlines, "headlines alone")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

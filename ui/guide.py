"""The Guide tab: what embeddings, pooling, normalisation, the heads and freezing mean, in plain words.

The part on freezing is the "Which parts to freeze" section of docs/task3.md, the take-home's
written Task 3 answers: one text, read by people in the app and in the repository alike.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.plots import METRIC_HELP

TASK3 = Path(__file__).resolve().parent.parent / "docs" / "task3.md"
FREEZING_HEADING = "## Which parts to freeze"


def doc_section(path: Path, heading: str) -> str:
    """The Markdown from ``heading`` up to the next heading of the same level (or a note where it is missing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return f"{heading}\n\n(The text is in {path.name}, which is missing here.)\n"
    start = text.find(heading + "\n")
    if start < 0:
        return f"{heading}\n\n(The section is missing from {path.name}.)\n"
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else len(text)].strip() + "\n"


INTRO = """
## What is an embedding?

A computer cannot compare meanings directly, so we turn each sentence into a list of numbers,
its **embedding** (here 384 numbers). The model that does this, the **encoder**, was trained on
millions of sentence pairs so that sentences that *mean* similar things get similar numbers,
even when they share no words: *“A cat is sleeping on the sofa”* lands next to *“The kitten
naps on the couch”*. Think of every sentence as a point on a huge map; nearby points are close
in meaning. The **Compare** tab draws that map squashed to two dimensions.

## Pooling: from many word vectors to one sentence vector

The encoder first gives one vector per *token* (a word or a piece of a word). **Pooling** folds
them into one vector for the whole sentence:

- **mean**: the average of all tokens. What this model was trained with, and usually the best.
- **cls**: only the special first token. Good for models trained that way; weaker here.
- **max**: for each number, the largest value over the tokens: picks up strong single words.
- **mean_sqrt_len**: the sum divided by the square root of the length; long sentences weigh more.
- **weighted_mean**: later tokens count more than earlier ones.
- **last_token**: only the final token; meant for left-to-right (GPT-style) models.

## Normalisation

With **normalisation on**, every sentence vector is scaled to length 1, so only its direction
counts. The similarity score is then the **cosine similarity**: 1 for the same meaning, around
0 for unrelated sentences. With it **off**, the score is a plain dot product that also grows
with the vectors' lengths, so the numbers have no fixed scale. Turn it on when you compare.

## Topic and sentiment

On top of the shared encoder sit two small **heads**: a *topic* head that gives a probability
for each topic (they add up to 100%), and a *sentiment* head that gives one score from −1 (very
negative) through 0 (neutral) to +1 (very positive). The shipped model learned topics from AG
News headlines (World, Sports, Business, Sci/Tech) and sentiment from movie reviews (SST).

## How sure is the model? What it knows, where it fails

A topic head must always pick one of its topics, even for *“This lasagna recipe needs more
garlic.”*, which is no news at all. So a topic is shown as **Unsure**, with the model's best guess
in brackets, in two cases:

- **Its top topic is a weak guess**: under a third of the way from a blind guess to certainty,
  which is 50% for four topics (67% for two).
- **The sentence is unlike what the head learnt from**: its vector is further from every one of
  up to 16 summary points per topic of the training sentences than 97 in 100 held-out training
  sentences are. The cut-off comes from the training data itself, so a model you train gets its
  own. The probability alone is not enough: *“I'm learning to knit a scarf.”* gets World 84%.

On the shipped model this marks 9 of 10 everyday sentences (food, music, weather, pets...) as
unsure, while the Classify tab's four news examples stay sure and right (95–98%). On AG News test
headlines 5.7% are unsure; the model is right 90% of the time on the rest, 63% on those.

**What the shipped model knows:** the topic of English news and the mood of English movie-review
sentences. **Where it fails:**

- **Sarcasm:** *“Oh great, another Monday.”* reads positive.
- **Negation, sometimes:** *“Not bad at all.”* reads neutral rather than positive.
- **Other languages:** *“Der Bundestag hat das neue Gesetz beschlossen.”* gets an unsure topic,
  and its mood is a guess: the encoder learnt from English.
- **Anything that is not news:** its topic is unsure, or, now and then, a confident wrong one
  (*“The baby finally slept through the night.”*: World 68%).
"""

SETTINGS = """
## Settings and your data

**Settings in plain words.** An *epoch* is one pass over your data. The *learning rate* is the
size of each correction: too small and nothing seems to happen, too large and the loss jumps
around (0.01–0.05 suits the heads; the encoder always gets a much smaller 0.00002). The *batch
size* is how many rows are looked at per correction. *Task weights* say how much each task
counts when both are learned together. The **loss** curve should go down; if the *validation*
curve (rows held out, never trained on) goes up while the *training* curve keeps falling, the
model is memorising instead of learning.

## Your own data

Upload a CSV with a header row: a `text` column, and a `label` column (the topic's name) and/or
a `sentiment` column (a number). Each row needs at least one of the two. For example:

```
text,label,sentiment
"The match ended in a draw.",Sports,0.1
"Profits soared this quarter.",Business,0.8
```

With few rows (under 200) and the encoder frozen, the scores come from *cross-validation*: each
row is predicted by a model fitted without it, so every row counts, rather than judging on the
handful a split would hold out. With the encoder learning on so few rows, the status says the
scores are rough.

## Built-in data

- **Synthetic sentences**: made up on the spot, four news topics and a sentiment. Some are
  negated ("was no triumph"), some mix two topics, a few carry a wrong label: not every setting
  gets everything right.
- **Review sentences**: 2,979 real one-line reviews of products, movies and restaurants, each
  positive or negative (Kotzias et al. 2015, CC BY 4.0). The site is easy to tell; the sentiment
  is where letting the encoder learn pays.
- **BBC News articles**: 2,225 real articles in five topics, no sentiment.

## Your runs

Every run you make is kept in the table under **Your runs** (the last 20), with its scores on
the held-out rows and its curve on one plot. **Use this run** makes any of them your model
again. A run that changed the encoder is big (90 MB), so the page keeps its weights only while
it is in use, or while it is **pinned** (one at a time); runs that trained only the heads are
always kept. **Compare strategies** runs the ticked settings one after another on the same
rows and seed, so their scores can be compared fairly.

What you train stays in your browser session: other visitors keep seeing the shipped model, and
your model is gone when you close the page, so download it if you want to keep it. On a busy
server an encoder you trained may also be let go after a while unused, or to make room for other
visitors: you are told so at your next click, the shipped model answers again, and runs that
trained only the heads are still there.
"""

WORDS = """
## Words you will see

""" + "\n".join(f"- **{name}**: {words}." for name, words in {
    **METRIC_HELP,
    "Precision and recall (per topic)": "of the sentences the model called Sports, the share that were Sports; "
                                        "of the real Sports sentences, the share it found",
    "Confusion matrix": "a table of true topic (rows) against predicted topic (columns): the cells off the "
                        "diagonal are the mistakes, and which topics get mixed up",
    "Held-out rows (Val)": "rows kept aside and never trained on, so the scores say how the model does on "
                           "sentences it has not seen",
    "Heads": "the small layers on top of the encoder that turn a sentence vector into a topic or a sentiment",
    "Learning rate (LR)": "the size of each correction during training; layer-wise LR decay gives the lower "
                          "encoder layers smaller ones",
    "Tokens": "the pieces of words the encoder reads; it reads the first 256 of a text, about 190 words",
    "bf16": "16-bit numbers this processor handles natively; the app uses them only where every vector stays "
            "within 0.001 cosine of exact 32-bit",
    "AG News": "English news headlines and their first lines in four topics (World, Sports, Business, "
               "Sci/Tech); the shipped topic head learnt from 5,404 of them",
    "SST": "the Stanford Sentiment Treebank, English movie-review sentences scored by people: what the shipped "
           "sentiment head learnt from",
}.items()) + "\n"

GUIDE = INTRO + "\n\n" + doc_section(TASK3, FREEZING_HEADING) + SETTINGS + WORDS


def render() -> None:
    """The Guide's text in the current ``gr.Tab``."""
    gr.Markdown(GUIDE, elem_id="guide")

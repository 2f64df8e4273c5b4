"""The Compare tab: sentences -> a similarity heat-map, the pairs in words, a 2-D map, the vectors."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from core import plots
from core.config import POOLING_MODES
from core.metrics import ranked_pairs

from .inputs import sentences, shown_in_page
from .state import Shared
from .style import REFUSED, TABLE_CHARS

EXAMPLE_SENTENCES = """A man is playing a guitar.
Someone is playing a musical instrument.
The stock market fell sharply today.
Shares dropped after the central bank raised interest rates.
A cat is sleeping on the sofa.
The kitten naps on the couch."""

POOLING_HELP = {
    "mean": "average of all tokens (recommended)",
    "cls": "the first, special token only",
    "max": "strongest value of each feature",
    "mean_sqrt_len": "sum ÷ √length",
    "weighted_mean": "later tokens count more",
    "last_token": "the final token only",
}
PAIR_COLUMNS = ["Score", "Sentence A", "Sentence B"]  # the score first: long sentences never push it away


class EmbedTab:
    """The tab's handlers over the shared base encoder; pooling and normalisation views share its weights."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def _encoder(self, pooling: str, normalize: bool):
        return self.shared.encoder.with_settings(pooling=pooling, normalize=bool(normalize))

    def embed(self, text: str, pooling: str, normalize: bool, request: gr.Request = None) -> tuple[Any, str, dict[str, Any]]:
        """Sentences -> a 2-D map, the embedding size and truncation notes, and the vectors."""
        shared = self.shared
        shared.visitors.started(request)
        with shown_in_page():
            given = sentences(text, shared.limits)
            with shared.tokenizer_lock:
                encoder = self._encoder(pooling, normalize)
                result = encoder.embed(given.lines, precision=shared.precision)
            dim, limit = result.embeddings.shape[1], encoder.max_length
            truncated = sorted(set(result.truncated) | set(given.cut))
            info = [f"**Each sentence became {dim} numbers** ({pooling} pooling, "
                    f"{'normalised to length 1' if normalize else 'not normalised'}, computed in {shared.precision}{PRECISION_WORDS.get(shared.precision, '')})."]
            for i in truncated:
                if i in given.cut:
                    info.append(f"**Cut short:** sentence {i + 1} is longer than {shared.limits.max_chars:,} characters; "
                                f"it was cut there, and only its first {limit} tokens were read.")
                else:
                    info.append(f"**Cut short:** sentence {i + 1} has {result.num_tokens[i]} tokens; "
                                f"only its first {limit} were read.")
            if not truncated:
                info.append(f"No sentence was cut short (the limit is {limit} tokens, roughly {limit * 3 // 4} words).")
            vectors = {"dimension": dim, "pooling": pooling, "normalize": bool(normalize), "precision": shared.precision,
                       "max_tokens": limit, "truncated": truncated, "num_tokens": result.num_tokens,
                       "embeddings": np.round(result.embeddings, 6).tolist()}
            return plots.sentence_map(given.lines, result.embeddings), "<br>".join(info), vectors

    def compare(self, text: str, pooling: str, normalize: bool, request: gr.Request = None) -> tuple[Any, str, pd.DataFrame]:
        """Sentences -> the similarity heat-map, the most and least similar pairs in words, all pairs ranked."""
        self.shared.visitors.started(request)
        with shown_in_page():
            lines = sentences(text, self.shared.limits).lines
            with self.shared.tokenizer_lock:
                vectors = self._encoder(pooling, normalize).encode(lines, precision=self.shared.precision)
            scores = vectors @ vectors.T  # (N, N) dot products; cosine similarity when normalised
            pairs = ranked_pairs(scores)
            table = pd.DataFrame([(round(s, 4), lines[i], lines[j]) for s, i, j in pairs], columns=PAIR_COLUMNS)
            heatmap = plots.similarity_heatmap(lines, scores, normalized=bool(normalize))
            return heatmap, pairs_in_words(lines, pairs, bool(normalize)), table


def quoted(text: str, width: int = 90) -> str:
    """A sentence in quotes, cut to ``width`` characters; the whole of it shows on hover."""
    short = plots.short_label(text, width)
    if short == text:
        return f"“{html.escape(text)}”"
    return f"<span title=\"{html.escape(' '.join(text.split())[:2000])}\">“{html.escape(short)}”</span>"


def pairs_in_words(lines: list[str], pairs: list[tuple[float, int, int]], normalize: bool) -> str:
    """The most and least similar pair, and how to read the scores."""
    if not pairs:
        return "Add a second line to compare sentences with each other."

    def pair(score: float, i: int, j: int) -> str:
        words = f", *{plots.similarity_word(score)}*" if normalize else ""
        return f"{quoted(lines[i])} and {quoted(lines[j])}: **{score:.2f}**{words}"

    if normalize:
        said = [f"**Most alike:** {pair(*pairs[0])}.", f"**Least alike:** {pair(*pairs[-1])}.",
                "Scores are cosine similarities: 1 means the same meaning, around 0 means unrelated."]
    else:
        said = [f"**Highest score:** {pair(*pairs[0])}.", f"**Lowest score:** {pair(*pairs[-1])}.",
                "Without normalisation a score mixes meaning with vector length, so it has no fixed scale. "
                "Switch normalisation on to read scores as cosine similarity (1 = same meaning)."]
    return f"{said[0]}<br>{said[1]}<br><small>{said[2]}</small>"


# Chosen only where each vector keeps a cosine of at least 0.999 to exact 32-bit (core.precision).
PRECISION_WORDS = {"bf16": ": 16-bit numbers this processor handles natively, faster than 32-bit and within 0.001 "
                           "cosine of it", "fp16": ": 16-bit numbers on the graphics card, within 0.001 cosine of 32-bit"}


def cleared() -> tuple[Any, ...]:
    """What the tab shows after a refused input: the plots say so, the rest is empty."""
    gone = plots.message_figure(REFUSED)
    return gone, "", pd.DataFrame(columns=PAIR_COLUMNS), gone, "", None


def render(shared: Shared, demo: gr.Blocks) -> EmbedTab:
    """Lay the tab out in the current ``gr.Tab`` and wire it: ``/compare``, then ``/embed`` on success."""
    tab = EmbedTab(shared)
    with gr.Row():
        with gr.Column(scale=3):
            embed_text = gr.Textbox(EXAMPLE_SENTENCES, lines=7, max_lines=20, label="Sentences, one per line",
                                    elem_id="embed-text")
        with gr.Column(scale=2):
            pooling = gr.Radio([(f"{m}: {POOLING_HELP.get(m, '')}", m) for m in POOLING_MODES], value="mean",
                               label="Pooling: how word vectors become one sentence vector", elem_id="pooling")
            normalize = gr.Checkbox(True, label="Normalise (length 1: scores become cosine similarity)",
                                    elem_id="normalize")
            compare_btn = gr.Button("Compare sentences", variant="primary", elem_id="compare-btn")
    pairs_md = gr.Markdown(label="Most and least similar", elem_id="pairs")
    with gr.Row():
        heatmap = gr.Plot(label="Similarity heat-map", elem_id="heatmap")
        sentence_map = gr.Plot(label="Map of the sentences", elem_id="sentence-map")
    embed_info = gr.Markdown(label="Embedding size and truncation", elem_id="embed-info")
    with gr.Accordion("All pairs, ranked", open=False):
        pairs_table = gr.Dataframe(pd.DataFrame(columns=PAIR_COLUMNS), label="Pairs (click a cut sentence to read it all)",
                                   interactive=False, wrap=True, max_chars=TABLE_CHARS, elem_id="pairs-table",
                                   column_widths=["24%", "38%", "38%"])
    with gr.Accordion("The vectors (JSON)", open=False):
        vectors_json = gr.JSON(label="Embeddings")

    # Embed runs after Compare succeeds: one click, one message for a bad input. Progress (and an error)
    # shows on the text beside the plots, so a bad input never blanks a figure already drawn.
    inputs = [embed_text, pooling, normalize]
    compared = gr.on([compare_btn.click, pooling.change, normalize.change, demo.load], tab.compare, inputs,
                     [heatmap, pairs_md, pairs_table], api_name="compare", show_progress_on=[pairs_md])
    compared.success(tab.embed, inputs, [sentence_map, embed_info, vectors_json], api_name="embed",
                     show_progress_on=[embed_info])
    # A refused input clears what answered the previous one, so nothing on screen seems to answer it.
    compared.failure(cleared, None, [heatmap, pairs_md, pairs_table, sentence_map, embed_info, vectors_json],
                     api_visibility="private", queue=False, show_progress="hidden")
    return tab

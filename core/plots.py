"""Plotly figure builders for the app: pure ``data -> go.Figure`` functions that never raise.

Each builder is wrapped by ``failsafe``: if drawing fails, the caller gets a figure that says
so instead of an exception, so one broken plot never breaks the page around it. The plain
words that go with a score (``similarity_word``, ``sentiment_word``) live here too, so the
figures and the text beside them say the same thing. Nothing here imports gradio.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Callable, Mapping, ParamSpec, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from .outputs import Prediction

logger = logging.getLogger(__name__)

P = ParamSpec("P")

# Colours: one per task, the same in every figure; topic = indigo, sentiment = orange.
TASK_COLOURS = {"classification": "#4f46e5", "sentiment": "#ea580c", "total": "#64748b"}
TASK_NAMES = {"classification": "topic", "sentiment": "sentiment", "total": "total"}
NEGATIVE, NEUTRAL, POSITIVE = "#dc2626", "#94a3b8", "#16a34a"
PALETTE = ["#4f46e5", "#ea580c", "#16a34a", "#db2777", "#0891b2", "#ca8a04", "#7c3aed", "#dc2626", "#0d9488", "#64748b"]
FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=13)


def message_figure(message: str, height: int = 320) -> go.Figure:
    """An empty figure that shows ``message`` in its middle (placeholders and failures)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#475569"))
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False),
                      margin=dict(l=20, r=20, t=20, b=20), plot_bgcolor="white", paper_bgcolor="white", font=FONT)
    return fig


def failsafe(builder: Callable[P, go.Figure]) -> Callable[P, go.Figure]:
    """Turn any exception inside ``builder`` into a figure that explains what could not be drawn."""

    @functools.wraps(builder)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> go.Figure:
        try:
            return builder(*args, **kwargs)
        except Exception as exc:  # a plot must never take the page down with it
            logger.exception("plot %s failed", builder.__name__)
            return message_figure(f"Could not draw this plot ({type(exc).__name__}: {exc})")

    return wrapper


def short_label(text: str, width: int = 34) -> str:
    """One line of at most ``width`` characters, cut with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def numbered_labels(sentences: Sequence[str], width: int = 30) -> list[str]:
    """'1. First sentence…' labels: numbered, so two equal sentences still get their own row."""
    return [f"{i}. {short_label(s, width)}" for i, s in enumerate(sentences, 1)]


# -- words for numbers -------------------------------------------------------------------------


def similarity_word(score: float) -> str:
    """Plain words for a cosine similarity (normalised embeddings of all-MiniLM-L6-v2)."""
    if score >= 0.8:
        return "nearly the same meaning"
    if score >= 0.6:
        return "closely related"
    if score >= 0.4:
        return "somewhat related"
    if score >= 0.2:
        return "loosely related"
    return "unrelated"


def sentiment_position(score: float, scale: tuple[float, float] = (-1.0, 1.0)) -> float:
    """A score on the model's scale mapped onto -1..+1 (the shipped model's own scale)."""
    lo, hi = scale
    return max(-1.0, min(1.0, 2 * (score - lo) / (hi - lo) - 1))


def sentiment_word(score: float, scale: tuple[float, float] = (-1.0, 1.0)) -> str:
    """negative / neutral / positive; the middle fifth of the scale counts as neutral."""
    position = sentiment_position(score, scale)
    if position <= -0.2:
        return "negative"
    if position >= 0.2:
        return "positive"
    return "neutral"


def _sentiment_colour(word: str) -> str:
    return {"negative": NEGATIVE, "positive": POSITIVE}.get(word, NEUTRAL)


# -- Embed & compare -------------------------------------------------------------------------


@failsafe
def similarity_heatmap(sentences: Sequence[str], scores: np.ndarray, *, normalized: bool = True) -> go.Figure:
    """Pairwise scores as a heat-map whose rows and columns are the sentences.

    Args:
        sentences: N texts, in the order of ``scores``.
        scores: (N, N) similarity matrix (dot products; cosine similarities when normalised).
        normalized: cosine scores use a fixed 0..1 colour scale; raw dot products their own span.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(sentences), len(sentences)) or not len(sentences):
        raise ValueError(f"scores has shape {scores.shape}, expected ({len(sentences)}, {len(sentences)})")
    labels = numbered_labels(sentences, 28)
    full = [[f"{a}<br>{b}" for b in sentences] for a in sentences]
    fig = go.Figure(go.Heatmap(
        z=scores.tolist(), x=labels, y=labels, customdata=full,  # lists, not typed arrays: any plotly.js reads them
        colorscale="Blues", zmin=0.0 if normalized else None, zmax=1.0 if normalized else None,
        texttemplate="%{z:.2f}", textfont=dict(size=12),
        hovertemplate="%{customdata}<br><b>score %{z:.3f}</b><extra></extra>",
        colorbar=dict(title=dict(text="cosine" if normalized else "dot product", side="right"), thickness=14),
    ))
    size = max(360, min(720, 130 + 62 * len(sentences)))
    fig.update_layout(
        title=dict(text="How alike are the sentences? (1 = same meaning)" if normalized
                   else "Dot products of unnormalised vectors (no fixed scale)", x=0.01, font=dict(size=15)),
        height=size, margin=dict(l=10, r=10, t=48, b=10), font=FONT, plot_bgcolor="white", paper_bgcolor="white",
        yaxis=dict(autorange="reversed", automargin=True), xaxis=dict(tickangle=-35, automargin=True, side="bottom"),
    )
    return fig


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) vectors onto their two main directions.

    Returns:
        (N, 2) coordinates and the share of the spread (variance) each direction explains, (2,).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), 2)), np.zeros(2)
    _, singular, vt = np.linalg.svd(x, full_matrices=False)  # rows of vt: directions, largest first
    coords = x @ vt[:2].T  # (N, k) with k = min(2, N, D)
    variance = singular**2
    share = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    if coords.shape[1] < 2:  # pad so callers always get two columns
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        share = np.pad(share, (0, 2 - len(share)))
    return coords, share


@failsafe
def sentence_map(sentences: Sequence[str], embeddings: np.ndarray) -> go.Figure:
    """A 2-D map of the sentences: PCA of their embeddings; close points mean similar vectors.

    Points carry their number; the legend gives the sentence behind each number.
    """
    if len(sentences) != len(embeddings):
        raise ValueError(f"{len(sentences)} sentences but {len(embeddings)} embeddings")
    coords, share = pca_2d(embeddings)
    fig = go.Figure()
    for i, (sentence, label) in enumerate(zip(sentences, numbered_labels(sentences, 44))):
        fig.add_trace(go.Scatter(
            x=[float(coords[i, 0])], y=[float(coords[i, 1])], mode="markers+text", name=label, text=[str(i + 1)],
            textposition="top center", textfont=dict(size=13, color="#1e293b"), customdata=[sentence],
            hovertemplate="%{customdata}<extra></extra>",
            marker=dict(size=14, color=PALETTE[i % len(PALETTE)], line=dict(width=1.5, color="white")),
        ))

    def span(v: np.ndarray) -> list[float]:
        margin = 0.2 * (float(np.ptp(v)) or 1.0)
        return [float(v.min()) - margin, float(v.max()) + margin]

    fig.update_layout(
        title=dict(text="Map of the sentences (closer = more alike)", x=0.01, font=dict(size=15)),
        height=max(420, 300 + 22 * len(sentences)), margin=dict(l=10, r=10, t=48, b=10), font=FONT,
        plot_bgcolor="#f8fafc", paper_bgcolor="white",
        legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0, font=dict(size=12)),
        xaxis=dict(title=f"direction 1 ({100 * share[0]:.0f}% of the spread)", range=span(coords[:, 0]),
                   zeroline=False, showticklabels=False),
        yaxis=dict(title=f"direction 2 ({100 * share[1]:.0f}%)", range=span(coords[:, 1]),
                   zeroline=False, showticklabels=False),
    )
    return fig


# -- Classify + sentiment -------------------------------------------------------------------------


@failsafe
def prediction_figure(predictions: Sequence[Prediction], class_names: Sequence[str],
                      sentiment_range: tuple[float, float] = (-1.0, 1.0)) -> go.Figure:
    """Per sentence one row: topic probabilities (bars over all classes) and a sentiment bar on -1..+1.

    Args:
        predictions: ``MultiTaskModel.predict`` output (text, label, probabilities, sentiment).
        class_names: the model's classes, in the order the bars are drawn.
        sentiment_range: the model's sentiment scale; the bar always shows it as -1..+1.
    """
    if not predictions:
        return message_figure("No sentences to show.")
    has_topic = bool(class_names) and any(p.probabilities for p in predictions)
    has_sentiment = any(p.sentiment is not None for p in predictions)
    cols = [c for c, present in (("topic", has_topic), ("sentiment", has_sentiment)) if present]
    if not cols:
        return message_figure("This model has neither a topic head nor a sentiment head.")
    titles = []
    for p in predictions:
        for col in cols:
            sentence = f"<b>{short_label(p.text, 60)}</b><br>" if col == cols[0] else ""  # the row's first title
            if col == "topic":
                titles.append(f"{sentence}topic: {p.label} ({100 * p.probabilities[p.label]:.0f}%)")
            else:
                position = sentiment_position(p.sentiment, sentiment_range)
                titles.append(f"{sentence}sentiment: {sentiment_word(p.sentiment, sentiment_range)} ({position:+.2f})")
    fig = make_subplots(rows=len(predictions), cols=len(cols), subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.5 / len(predictions), column_widths=[0.6, 0.4] if len(cols) == 2 else None)
    for row, p in enumerate(predictions, 1):
        col = 1
        if has_topic:
            probs = [p.probabilities.get(c, 0.0) for c in class_names]
            colours = [TASK_COLOURS["classification"] if c == p.label else "#cbd5e1" for c in class_names]
            fig.add_trace(go.Bar(x=probs, y=list(class_names), orientation="h", marker_color=colours,
                                 text=[f"{100 * v:.0f}%" for v in probs], textposition="outside", cliponaxis=False,
                                 hovertemplate="%{y}: %{x:.1%}<extra></extra>", showlegend=False), row=row, col=col)
            fig.update_xaxes(range=[0, 1.18], tickformat=".0%", showgrid=False, row=row, col=col, tickvals=[0, 0.5, 1])
            fig.update_yaxes(autorange="reversed", row=row, col=col)
            col += 1
        if has_sentiment:
            position = sentiment_position(p.sentiment, sentiment_range) if p.sentiment is not None else 0.0
            word = sentiment_word(p.sentiment, sentiment_range) if p.sentiment is not None else "none"
            fig.add_trace(go.Bar(x=[position], y=[""], orientation="h", marker_color=_sentiment_colour(word), width=0.5,
                                 text=[f"{position:+.2f} {word}"], textposition="outside", cliponaxis=False,
                                 hovertemplate=f"sentiment {position:+.2f} ({word})<extra></extra>", showlegend=False),
                          row=row, col=col)
            for x0, x1, colour in ((-1.0, -0.2, NEGATIVE), (-0.2, 0.2, NEUTRAL), (0.2, 1.0, POSITIVE)):  # gauge bands
                fig.add_vrect(x0=x0, x1=x1, fillcolor=colour, opacity=0.08, line_width=0, layer="below",
                              row=row, col=col)
            fig.update_xaxes(range=[-1.35, 1.35], tickvals=[-1, 0, 1], ticktext=["−1 negative", "0", "+1 positive"],
                             zeroline=True, zerolinecolor="#475569", zerolinewidth=2, showgrid=False, row=row, col=col)
            fig.update_yaxes(showticklabels=False, row=row, col=col)
    for i, annotation in enumerate(fig.layout.annotations):  # subplot titles, row-major: align to each plot's left
        axis = fig.layout["xaxis" if i == 0 else f"xaxis{i + 1}"]
        annotation.update(font=dict(size=13), xanchor="left", align="left", x=axis.domain[0])
    per_row = 60 + 26 * max(len(class_names), 2) if has_topic else 150
    fig.update_layout(height=80 + per_row * len(predictions), margin=dict(l=10, r=30, t=70, b=20), font=FONT,
                      plot_bgcolor="white", paper_bgcolor="white", bargap=0.25)
    return fig


# -- Train -----------------------------------------------------------------------------------------

Curves = Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]  # split -> task -> [(epoch, loss), ...]


@failsafe
def loss_curves(curves: Curves, *, total_epochs: int | None = None) -> go.Figure:
    """Training and validation loss per task: one line per (task, split).

    Args:
        curves: {"train": {"classification": [(x, loss), ...], "sentiment": [...]}, "validation": {...}}
            where x counts epochs (fractional for training steps).
        total_epochs: fixes the x axis to the whole run, so the curve visibly grows into it.
    """
    fig = go.Figure()
    for split, dash, mode in (("train", "solid", "lines"), ("validation", "dot", "lines+markers")):
        for task, points in curves.get(split, {}).items():
            if not points:
                continue
            name = TASK_NAMES.get(task, task)
            fig.add_trace(go.Scatter(
                x=[x for x, _ in points], y=[y for _, y in points], mode=mode, name=f"{name} · {split}",
                line=dict(color=TASK_COLOURS.get(task, "#0f172a"), dash=dash, width=1.5 if split == "train" else 2),
                marker=dict(size=7), hovertemplate=f"{name} {split}<br>epoch %{{x:.2f}}: %{{y:.4f}}<extra></extra>",
            ))
    if not fig.data:
        return message_figure("Press Start: the loss curves draw here while the model learns.", height=380)
    return _curves_layout(fig, "Loss (lower is better)", "loss", 380, [0, total_epochs] if total_epochs else None)


def _curves_layout(fig: go.Figure, title: str, y_title: str, height: int, x_range: list[float] | None = None) -> go.Figure:
    """The look every curve plot shares: title top left, legend above, epochs along, loss from zero up."""
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=15)), height=height, font=FONT,
        margin=dict(l=10, r=10, t=48, b=10), plot_bgcolor="#f8fafc", paper_bgcolor="white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
        xaxis=dict(title="epoch", range=x_range, gridcolor="#e2e8f0"),
        yaxis=dict(title=y_title, rangemode="tozero", gridcolor="#e2e8f0"),
    )
    return fig


@failsafe
def runs_figure(runs: Mapping[str, Sequence[tuple[float, float]]], *, active: str | None = None) -> go.Figure:
    """Held-out loss per epoch of several runs on one plot, so strategies can be compared.

    Args:
        runs: run name -> [(epoch, held-out loss), ...]; a run with one point (a baseline, an exact fit) is a marker.
        active: the run in use, drawn thicker.
    """
    fig = go.Figure()
    for i, (name, points) in enumerate(runs.items()):
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[x for x, _ in points], y=[y for _, y in points], mode="lines+markers", name=name,
            line=dict(color=PALETTE[i % len(PALETTE)], width=4 if name == active else 2), marker=dict(size=8),
            hovertemplate=f"{name}<br>epoch %{{x}}: held-out loss %{{y:.4f}}<extra></extra>",
        ))
    if not fig.data:
        return message_figure("Your runs appear here, one line each, so you can compare them.", height=300)
    return _curves_layout(fig, "Your runs: held-out loss (lower is better)", "held-out loss", 340)


__all__ = ["message_figure", "failsafe", "short_label", "numbered_labels", "similarity_word", "sentiment_word",
           "sentiment_position", "similarity_heatmap", "pca_2d", "sentence_map", "prediction_figure", "loss_curves",
           "runs_figure", "Curves"]

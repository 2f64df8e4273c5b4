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
FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=13, color="#334155")
# One look for every figure, in light and in dark mode: the paper is transparent so the page's own
# background shows through, and grid lines are a translucent slate that reads on white and on black.
# The page's CSS (ui/style.py) lightens the text in dark mode; plotly cannot see the mode itself.
GRID = "rgba(148, 163, 184, 0.35)"
TEMPLATE = go.layout.Template(layout=dict(
    font=FONT, paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(148, 163, 184, 0.07)",
    xaxis=dict(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True),
    yaxis=dict(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True),
    hoverlabel=dict(font=dict(family=FONT["family"])),
))


def message_figure(message: str, height: int = 320) -> go.Figure:
    """An empty figure that shows ``message`` in its middle (placeholders and failures)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15))
    fig.update_layout(template=TEMPLATE, height=height, xaxis=dict(visible=False), yaxis=dict(visible=False),
                      margin=dict(l=20, r=20, t=20, b=20), plot_bgcolor="rgba(0,0,0,0)")
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


def topic_words(p: Prediction) -> str:
    """A prediction's topic as the app writes it: "Sports 95%", or "Unsure (Business? 37%)"."""
    if not p.label:
        return "—"
    share = f"{100 * p.probabilities[p.label]:.0f}%"
    return f"Unsure ({p.label}? {share})" if p.unsure else f"{p.label} {share}"


def percent(share: float) -> str:
    """A share as the app writes every percentage: one decimal, none when it is whole ("93.1%", "90%")."""
    text = f"{100 * share:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


# One line per figure the app shows, where it shows it and in the Guide: the same words everywhere.
METRIC_HELP = {
    "Accuracy": "the share of held-out sentences whose topic is right (100% best)",
    "Macro-F1": "topic accuracy that counts every topic equally, so a rare topic the model misses pulls it "
                "down (100% best)",
    "MAE": "the mean absolute error, how far the sentiment is off on average on the −1…+1 scale (0 best)",
    "Pearson": "whether the predicted sentiment rises and falls with the true one (1 best, 0 no relation)",
    "Loss": "the number training makes smaller; compare it within one task, lower is better",
}


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
    n = len(sentences)
    # Legible at every size, down to a 390 px phone: the rows carry short numbered sentences, the columns
    # only their numbers. Scores are written in the cells while there is room for them (up to 8 sentences,
    # about 30 px a cell on a phone); past that the rows too carry only numbers (the map beside lists the
    # sentences), the colour bar tells the scale and hover gives each score.
    written = n <= 8
    fig = go.Figure(go.Heatmap(
        z=scores.tolist(), x=[str(i) for i in range(1, n + 1)],
        y=numbered_labels(sentences, 22) if written else [f"{i}." for i in range(1, n + 1)],
        customdata=[[f"{a}<br>{b}" for b in sentences] for a in sentences],  # lists: any plotly.js reads them
        colorscale="Blues", zmin=0.0 if normalized else None, zmax=1.0 if normalized else None,
        texttemplate=("%{z:.2f}" if normalized else "%{z:.3g}") if written else "",
        textfont=dict(size=12 if n <= 5 else 10), xgap=1, ygap=1, showscale=not written,
        hovertemplate="%{customdata}<br><b>score %{z:.3f}</b><extra></extra>",
        colorbar=dict(title=dict(text="cosine" if normalized else "dot product", side="right"), thickness=12),
    ))
    fig.update_layout(
        title=dict(text="How alike? 1 = same meaning" if normalized
                   else "Dot products (no fixed scale)", x=0.01, font=dict(size=15)),
        height=max(320, min(760, 120 + 40 * n)), margin=dict(l=10, r=10, t=48, b=10), template=TEMPLATE,
        plot_bgcolor="rgba(0,0,0,0)",  # "category": labels such as "3." must not be read as numbers
        yaxis=dict(type="category", autorange="reversed", automargin=True, showgrid=False),
        xaxis=dict(type="category", automargin=True, side="bottom", showgrid=False, title="sentence number", tickangle=0),
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


_PLACES = {"top center": (0, 1), "bottom center": (0, -1), "middle right": (1, 0), "middle left": (-1, 0),
           "top right": (1, 1), "top left": (-1, 1), "bottom right": (1, -1), "bottom left": (-1, -1)}


def label_places(coords: np.ndarray, gap: float = 0.045) -> list[str]:
    """A text position per point so that no two number labels land on each other (greedy, in order).

    Coordinates are scaled to 0..1 on each axis; a label sits ``gap`` from its point in one of eight
    directions, the first one whose spot is clear of every point and every label placed so far.
    """
    xy = np.asarray(coords, dtype=float)[:, :2]
    span = np.ptp(xy, axis=0)
    xy = (xy - xy.min(axis=0)) / np.where(span > 0, span, 1.0)
    taken = [tuple(p) for p in xy]  # markers are obstacles too
    places = []
    for x, y in xy:
        spots = {name: (x + dx * gap, y + dy * gap) for name, (dx, dy) in _PLACES.items()}
        clear = [name for name, (sx, sy) in spots.items()
                 if all(abs(sx - tx) >= gap or abs(sy - ty) >= gap * 0.8 for tx, ty in taken)]
        name = clear[0] if clear else "top center"
        places.append(name)
        taken.append(spots[name])
    return places


@failsafe
def sentence_map(sentences: Sequence[str], embeddings: np.ndarray) -> go.Figure:
    """A 2-D map of the sentences: PCA of their embeddings; close points mean similar vectors.

    Points carry their number; the legend gives the sentence behind each number.
    """
    if len(sentences) != len(embeddings):
        raise ValueError(f"{len(sentences)} sentences but {len(embeddings)} embeddings")
    coords, share = pca_2d(embeddings)
    places = label_places(coords)
    fig = go.Figure()
    for i, (sentence, label) in enumerate(zip(sentences, numbered_labels(sentences, 44))):
        fig.add_trace(go.Scatter(
            x=[float(coords[i, 0])], y=[float(coords[i, 1])], mode="markers+text", name=label, text=[str(i + 1)],
            textposition=places[i], textfont=dict(size=13), customdata=[sentence],
            hovertemplate="%{customdata}<extra></extra>",
            marker=dict(size=14, color=PALETTE[i % len(PALETTE)], line=dict(width=1.5, color="white")),
        ))

    def span(v: np.ndarray) -> list[float]:
        margin = 0.2 * (float(np.ptp(v)) or 1.0)
        return [float(v.min()) - margin, float(v.max()) + margin]

    fig.update_layout(  # no axis titles: on a phone they ran into the legend; the subtitle says what the axes are
        title=dict(text=f"Closer = more alike<br><sup>the map's two directions keep {100 * share[:2].sum():.0f}% "
                        "of the vectors' spread</sup>", x=0.01, font=dict(size=15)),
        height=max(420, 300 + 22 * len(sentences)), margin=dict(l=10, r=10, t=56, b=10), template=TEMPLATE,
        legend=dict(orientation="h", yanchor="top", y=-0.04, xanchor="left", x=0, font=dict(size=12)),
        xaxis=dict(range=span(coords[:, 0]), zeroline=False, showticklabels=False),
        yaxis=dict(range=span(coords[:, 1]), zeroline=False, showticklabels=False),
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
            sentence = f"<b>{short_label(p.text, 44)}</b><br>" if col == cols[0] else ""  # the row's first title
            if col == "topic":
                titles.append(f"{sentence}topic: {topic_words(p)}")
            else:
                position = sentiment_position(p.sentiment, sentiment_range)  # short: a phone gives it ~100 px
                titles.append(f"{sentiment_word(p.sentiment, sentiment_range)} {position:+.2f}")
    fig = make_subplots(rows=len(predictions), cols=len(cols), subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.5 / len(predictions), column_widths=[0.6, 0.4] if len(cols) == 2 else None)
    for row, p in enumerate(predictions, 1):
        col = 1
        if has_topic:
            probs = [p.probabilities.get(c, 0.0) for c in class_names]
            top = "#94a3b8" if p.unsure else TASK_COLOURS["classification"]  # an unsure guess is not drawn as an answer
            colours = [top if c == p.label else "#cbd5e1" for c in class_names]
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
                                 hovertemplate=f"sentiment {position:+.2f} ({word})<extra></extra>", showlegend=False),
                          row=row, col=col)
            for x0, x1, colour in ((-1.0, -0.2, NEGATIVE), (-0.2, 0.2, NEUTRAL), (0.2, 1.0, POSITIVE)):  # gauge bands
                fig.add_vrect(x0=x0, x1=x1, fillcolor=colour, opacity=0.08, line_width=0, layer="below",
                              row=row, col=col)
            fig.update_xaxes(range=[-1.35, 1.35], tickvals=[-1, 0, 1], ticktext=["−1", "0", "+1"],
                             zeroline=True, zerolinecolor="#94a3b8", zerolinewidth=2, showgrid=False, row=row, col=col)
            fig.update_yaxes(showticklabels=False, row=row, col=col)
    for i, annotation in enumerate(fig.layout.annotations):  # subplot titles, row-major: align to each plot's left
        axis = fig.layout["xaxis" if i == 0 else f"xaxis{i + 1}"]
        annotation.update(font=dict(size=13), xanchor="left", align="left", x=axis.domain[0])
    per_row = 60 + 26 * max(len(class_names), 2) if has_topic else 150
    fig.update_layout(height=80 + per_row * len(predictions), margin=dict(l=10, r=30, t=70, b=20),
                      template=TEMPLATE, plot_bgcolor="rgba(0,0,0,0)", bargap=0.25)
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
    return _curves_layout(fig, "Loss per epoch (lower is better)", 380, [0, total_epochs] if total_epochs else None)


def _curves_layout(fig: go.Figure, title: str, height: int, x_range: list[float] | None = None) -> go.Figure:
    """The look every curve plot shares: title top left (it names the axes), legend below, loss from zero up.

    No axis titles: on a phone they ran into the tick labels and the legend.
    """
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=15)), height=height, template=TEMPLATE,
        margin=dict(l=10, r=10, t=48, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.08, xanchor="left", x=0),
        xaxis=dict(range=x_range), yaxis=dict(rangemode="tozero"),
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
    return _curves_layout(fig, "Held-out loss per epoch, lower is better", 340)


@failsafe
def confusion_figure(classes: Sequence[str], matrix: Sequence[Sequence[int]] | np.ndarray, *,
                     note: str = "") -> go.Figure:
    """Where the topics go wrong: a heat-map of counts, true topic down the rows, predicted topic across.

    Args:
        classes: the C topic names, in the order of ``matrix``.
        matrix: (C, C) row counts, ``matrix[i][j]`` = rows of topic i predicted as topic j; the diagonal is right.
        note: one short line under the title, where the counts come from ("60 held-out rows").
    """
    counts = np.asarray(matrix, dtype=float)
    n = len(classes)
    if counts.shape != (n, n) or not n:
        raise ValueError(f"matrix has shape {counts.shape}, expected ({n}, {n})")
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    # Legible down to a 390 px phone (~300 px of figure). Names are cut short (hover has them whole). The
    # columns carry them while they fit side by side (~40 characters); past that, or when two cut names are the
    # same, the rows carry numbered names and the columns only the numbers. Counts are written in the cells
    # while a cell has room for them (~25 px at 8 topics: two digits); past that the colour bar gives the scale.
    labels = [short_label(c, 14 if n <= 4 else 12) for c in classes]
    numbered = len(set(labels)) < n or sum(map(len, labels)) > 40
    rows = [f"{i}. {label}" for i, label in enumerate(labels, 1)] if numbered else labels
    columns = [str(i) for i in range(1, n + 1)] if numbered else labels
    written = n <= 6 or (n <= 8 and counts.max() < 100)
    fig = go.Figure(go.Heatmap(
        z=counts.astype(int).tolist(), x=columns, y=rows, colorscale="Blues", zmin=0,
        customdata=[[[str(t), str(p), percent(shares[i, j])] for j, p in enumerate(classes)]
                    for i, t in enumerate(classes)],  # lists: any plotly.js reads them
        texttemplate="%{z}" if written else "", textfont=dict(size=13 if n <= 5 else 11), xgap=1, ygap=1,
        # the colour bar lies under the matrix: beside it, it took a third of a phone's width from the cells
        showscale=not written, colorbar=dict(title=dict(text="rows", side="top"), thickness=10, len=0.6,
                                             lenmode="fraction", orientation="h", x=0, xanchor="left", y=-0.1,
                                             yanchor="top", tickangle=0),
        hovertemplate=("true <b>%{customdata[0]}</b>, predicted <b>%{customdata[1]}</b><br>"
                       "%{z} rows: %{customdata[2]} of the true topic's<extra></extra>"),
    ))
    for i in range(n):  # the diagonal, outlined: where every row would be if every answer were right
        fig.add_shape(type="rect", x0=i - 0.5, x1=i + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=dict(color=TASK_COLOURS["classification"], width=1.5))
    fig.update_layout(  # no axis titles: on a phone they ran into the tick labels; the title names the axes
        title=dict(text="Rows: true topic · columns: predicted" + (f"<br><sup>{note}</sup>" if note else ""),
                   x=0.01, font=dict(size=15)),
        height=max(300, min(700, 150 + 44 * n)) + (0 if written else 50),
        margin=dict(l=10, r=10, t=60 if note else 48, b=10 if written else 60),
        template=TEMPLATE, plot_bgcolor="rgba(0,0,0,0)",
        yaxis=dict(type="category", autorange="reversed", automargin=True, showgrid=False),
        xaxis=dict(type="category", automargin=True, side="bottom", showgrid=False,
                   tickangle=0 if numbered else None, tickfont=dict(size=11) if n > 9 else None),
    )
    return fig


__all__ = ["message_figure", "failsafe", "short_label", "numbered_labels", "similarity_word", "sentiment_word",
           "sentiment_position", "topic_words", "percent", "METRIC_HELP", "similarity_heatmap", "pca_2d", "label_places", "sentence_map", "prediction_figure", "loss_curves",
           "runs_figure", "confusion_figure", "Curves"]

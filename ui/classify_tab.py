"""The Classify tab: per sentence the topic probabilities and the sentiment, with the visitor's model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from core import plots

from .inputs import bad_input, sentences, shown_in_page
from .state import Session, Shared, model_note
from .style import REFUSED, TABLE_CHARS

EXAMPLE_CLASSIFY = """The striker scored twice as United won the cup final.
Shares of the chip maker plunged after weak quarterly earnings.
NASA's new telescope captured stunning images of a distant galaxy.
Peace talks collapsed as the two governments traded bitter accusations."""
CLASSIFY_COLUMNS = ["Sentence", "Topic", "Sentiment"]  # three, so a phone shows them all; the JSON has every number


class ClassifyTab:
    """The tab's handlers: the visitor's own model when they trained one, else the shipped one."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def classify(self, text: str, session: Session, request: gr.Request = None) -> tuple[Any, pd.DataFrame, list[dict[str, Any]]]:
        """Sentences -> per sentence the topic probabilities and the sentiment, with this visitor's model."""
        self.shared.visitors.started(request)
        with shown_in_page():
            given = sentences(text, self.shared.limits)
            self.shared.seen(session, request)
            self.shared.used(session)
            model = session.model_in_use(self.shared)
            if model is None:
                raise bad_input("There is no model yet: the shipped one is missing. Train one in the Train tab.",
                                title="No model")
            predictions = model.predict(given.lines, precision=self.shared.precision)
            for i in given.cut:
                predictions[i].truncated = True
            scale = model.heads_config.sentiment_range
            rows = [(("✂ " if p.truncated else "") + plots.short_label(p.text, 2000),  # the JSON holds it all
                     f"{p.label} {100 * p.probabilities[p.label]:.0f}%" if p.label else "—",
                     f"{plots.sentiment_word(p.sentiment, scale)} {plots.sentiment_position(p.sentiment, scale):+.2f}"
                     if p.sentiment is not None else "—")
                    for p in predictions]
            figure = plots.prediction_figure(predictions, model.class_names, scale)
            return figure, pd.DataFrame(rows, columns=CLASSIFY_COLUMNS), [p.to_dict() for p in predictions]

    def note(self, session: Session) -> str:
        """Which model answered, in words: after a classify, as the server may have let the visitor's go."""
        return model_note(session, self.shared.default_model)

    def use_default_model(self, session: Session) -> tuple[str, Session]:
        """Back to the shipped model (the Train tab forgets the download on the same click)."""
        session.use_shipped()
        return model_note(session, self.shared.default_model), session


@dataclass
class ClassifyParts:
    """What the Train tab updates or listens to on this tab."""

    model_note: gr.Markdown
    default_btn: gr.Button
    back_to_shipped: Any  # the event of default_btn: listeners chained on it see the shipped model in use


def render(shared: Shared, session: gr.State) -> ClassifyParts:
    """Lay the tab out in the current ``gr.Tab`` and wire it: ``/classify``."""
    tab = ClassifyTab(shared)
    with gr.Row(equal_height=True):
        note = gr.Markdown(model_note(Session(), shared.default_model), label="Model in use", elem_id="model-note")
        default_btn = gr.Button("Use the shipped model", size="sm", variant="secondary", scale=0, elem_id="default-btn")
    classify_text = gr.Textbox(EXAMPLE_CLASSIFY, lines=5, max_lines=20, label="Sentences, one per line",
                               elem_id="classify-text")
    classify_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
    classify_table = gr.Dataframe(
        pd.DataFrame(columns=CLASSIFY_COLUMNS), interactive=False, wrap=True, elem_id="classify-table",
        label=("At a glance (click a cut sentence to read it all; ✂ marks one longer than the model reads, "
               f"{shared.encoder.max_length} tokens: only its start counted)"),
        max_chars=TABLE_CHARS, column_widths=["50%", "25%", "25%"])
    classify_plot = gr.Plot(label="Topic probabilities and sentiment", elem_id="classify-plot")
    with gr.Accordion("Raw predictions (JSON)", open=False):
        classify_json = gr.JSON(label="Predictions")

    classified = gr.on([classify_btn.click, classify_text.submit], tab.classify, [classify_text, session],
                       [classify_plot, classify_table, classify_json], api_name="classify",
                       show_progress_on=[classify_table])
    classified.success(tab.note, session, note, api_visibility="private", queue=False, show_progress="hidden")
    classified.failure(lambda: (plots.message_figure(REFUSED), pd.DataFrame(columns=CLASSIFY_COLUMNS), None), None,
                       [classify_plot, classify_table, classify_json], api_visibility="private", queue=False,
                       show_progress="hidden")  # nothing on screen answers the refused input
    back = default_btn.click(tab.use_default_model, session, [note, session], api_visibility="private")
    return ClassifyParts(model_note=note, default_btn=default_btn, back_to_shipped=back)

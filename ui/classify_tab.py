"""The Classify tab: per sentence the topic probabilities and the sentiment, with the visitor's model."""

from __future__ import annotations

import csv
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core import folders, plots
from core.errors import ConfigError, ModelFolderError, SentenceLabError
from core.model import MultiTaskModel
from core.outputs import Prediction
from core.scoring import guess_text_column, scan_csv, score_csv

from .inputs import bad_input, sentences, shown_in_page
from .state import Session, Shared, model_note
from .style import REFUSED, TABLE_CHARS

CLI_BATCH_SIZE = 32  # python -m core predict's default: the page's scored file is the CLI's, row for row
PREVIEW_ROWS = 10
NEW_MODEL = "Another model is in use now: press Classify for its answers."

EXAMPLE_CLASSIFY = """The striker scored twice as United won the cup final.
Shares of the chip maker plunged after weak quarterly earnings.
NASA's new telescope captured stunning images of a distant galaxy.
Peace talks collapsed as the two governments traded bitter accusations."""
# What the shipped model knows and where it fails, with sentences measured on it (tests/test_app.py checks them).
KNOWS = ("<small>**What the shipped model knows:** the topic of English news (World, Sports, Business, Sci/Tech) "
         "and the mood of English movie-review sentences. **Unsure** means its top topic is a weak guess or the "
         "sentence is unlike the news it learnt from (“This lasagna recipe needs more garlic.”); its best guess "
         "follows in brackets. **Where it fails:** sarcasm (“Oh great, another Monday.” reads positive), some "
         "negation (“Not bad at all.” reads neutral), and other languages (their topic is unsure, their mood "
         "a guess). The Guide says more.</small>")
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
            model = self._model(session, request)
            predictions = model.predict(given.lines, precision=self.shared.precision)
            for i in given.cut:
                predictions[i].truncated = True
            scale = model.heads_config.sentiment_range
            rows = [glance(p, scale) for p in predictions]
            figure = plots.prediction_figure(predictions, model.class_names, scale)
            return figure, pd.DataFrame(rows, columns=CLASSIFY_COLUMNS), [p.to_dict() for p in predictions]

    def _model(self, session: Session, request: gr.Request | None) -> MultiTaskModel:
        """The model this visitor's request is answered with (the server may have let theirs go: seen says so)."""
        self.shared.seen(session, request)
        self.shared.used(session)
        model = session.model_in_use(self.shared)
        if model is None:
            raise bad_input("There is no model yet: the shipped one is missing. Train one in the Train tab.",
                            title="No model")
        return model

    def note(self, session: Session) -> str:
        """Which model answered, in words: after a classify, as the server may have let the visitor's go."""
        return model_note(session, self.shared.default_model)

    def columns(self, file: Any) -> Any:
        """The text column choice for an uploaded CSV: its header, with the text column guessed."""
        if file is None:
            return gr.Dropdown(choices=[], value=None)
        with shown_in_page():
            path, limit = _path(file), self.shared.limits.max_score_rows
            try:
                scan = scan_csv(path, max_rows=limit)
            except SentenceLabError as exc:
                guess = guess_text_column(path) if "no 'text' or 'sentence' column" in str(exc) else None
                if guess is None:
                    raise bad_input(str(exc), title="Problem with the file") from None
                scan = scan_csv(path, text_column=guess, max_rows=limit)  # and the rest of the file is checked
                gr.Info(f"No column is named 'text': “{guess}” looks like the text (its cells are the longest). "
                        "Pick another one if it is not.")
            return gr.Dropdown(choices=scan.header, value=scan.text_column)

    def score(self, file: Any, column: str | None, session: Session, request: gr.Request = None,
              progress: gr.Progress = gr.Progress()) -> tuple[pd.DataFrame, str | None, str]:
        """A whole CSV scored with the model in use: the first rows to look at, and the file with every row."""
        self.shared.visitors.started(request)
        with shown_in_page():
            if file is None:
                raise bad_input("Choose a CSV file to score.", title="No file")
            model = self._model(session, request)
            source = _path(file)
            out = session.scored_file(f"{source.stem[:80]}-scored.csv")
            limit = self.shared.limits.max_score_rows
            try:
                # fp32 and the CLI's batch size: the same file, row for row, as python -m core predict --csv
                summary = score_csv(model, source, out, text_column=column or None, batch_size=CLI_BATCH_SIZE,
                                    max_rows=limit, precision="fp32",
                                    progress=lambda done, total: progress(done / max(total, 1),
                                                                         desc=f"Scored {done:,} of {total:,} rows"))
            except SentenceLabError as exc:
                raise bad_input(str(exc), title="Problem with the file") from None
            words = (f"**Scored {summary.scored:,} of {summary.rows:,} rows**"
                     + (f"; {summary.blank:,} with a blank text left as they were" if summary.blank else "")
                     + (f"; {summary.truncated:,} cut at {model.encoder.max_length} tokens" if summary.truncated else "")
                     + f". The file keeps every column and adds {', '.join(summary.columns_added)}. "
                     f"Its first rows:")
            return preview(out, summary.text_column, summary.columns_added, model), str(out), words

    def picker(self, session: Session) -> Any:
        """The model list as it is now (runs come and go in the Train tab)."""
        return gr.Dropdown(choices=session.choices(), value=session.chosen())

    def choose(self, choice: str, session: Session, request: gr.Request = None) -> tuple[str, Any, Session]:
        """Make the chosen model the one in use; no model is lost by choosing another."""
        with shown_in_page():
            self.shared.seen(session, request)
            if choice == "shipped" or not choice:
                session.use_shipped()
            else:
                try:
                    session.use_run(int(str(choice).removeprefix("run:")), self.shared)
                except ValueError as exc:
                    raise bad_input(str(exc), title="That model is not here any more") from None
                self.shared.used(session)
            return model_note(session, self.shared.default_model), self.picker(session), session

    def upload(self, file: Any, session: Session, request: gr.Request = None) -> tuple[str, Any, Session]:
        """A saved model zip (the Train tab's download) becomes one of the visitor's models, checked like any
        folder: JSON and safetensors only, no links, sizes and checksums that match, a base encoder this host offers."""
        with shown_in_page():
            self.shared.seen(session, request)
            if file is None:
                raise bad_input("Choose a model zip to upload.", title="No file")
            path = Path(file if isinstance(file, str) else file.name)
            with tempfile.TemporaryDirectory(prefix="sentence-lab-upload-") as tmp:
                try:
                    folder = folders.extract_zip(path, Path(tmp), max_bytes=self.shared.limits.max_upload_bytes * 4)
                    model = MultiTaskModel.load(folder, base=self.shared.encoder).eval()
                except (ModelFolderError, ConfigError, OSError) as exc:
                    raise bad_input(f"{path.name} is not a model this page can use: {exc}",
                                    title="Not a usable model") from None
            session.add_upload(model, path.name)
            self.shared.used(session)
            return model_note(session, self.shared.default_model), self.picker(session), session


def _path(file: Any) -> Path:
    return Path(file if isinstance(file, str) else file.name)


def preview(scored: Path, text_column: str, added: list[str], model: MultiTaskModel) -> pd.DataFrame:
    """The first rows of a scored file, as the At-a-glance table shows sentences (the file has every number)."""
    with open(scored, newline="", encoding="utf-8") as f:
        rows = list(itertools.islice(csv.DictReader(f), PREVIEW_ROWS))
    topic = added[:3] if model.classifier is not None else None  # topic, its confidence, unsure: in that order
    mood = added[-2] if model.sentiment_head is not None else None  # before "truncated"
    scale = model.heads_config.sentiment_range

    def answer(r: dict[str, str]) -> Prediction:  # the row's added cells read back; a blank text has none
        text = r[text_column]
        if not text.strip():
            return Prediction(text, None)
        return Prediction(text, r[topic[0]] if topic else None, {r[topic[0]]: float(r[topic[1]])} if topic else {},
                          float(r[mood]) if mood else None, unsure=bool(topic) and r[topic[2]] == "true")

    return pd.DataFrame([glance(answer(r), scale) for r in rows], columns=CLASSIFY_COLUMNS)


def glance(p: Prediction, scale: tuple[float, float]) -> tuple[str, str, str]:
    """A prediction as one row of the At-a-glance table (and of a scored file's preview)."""
    mood = (f"{plots.sentiment_word(p.sentiment, scale)} {plots.sentiment_position(p.sentiment, scale):+.2f}"
            if p.sentiment is not None else "—")
    return ("✂ " if p.truncated else "") + plots.short_label(p.text, 2000), plots.topic_words(p), mood  # JSON: all


@dataclass
class ClassifyParts:
    """What the Train tab updates or listens to on this tab."""

    model_note: gr.Markdown
    picker: gr.Dropdown
    picked: list[Any]  # the events of choosing or uploading a model: the Train tab drops its download, marks the run


def render(shared: Shared, session: gr.State) -> ClassifyParts:
    """Lay the tab out in the current ``gr.Tab`` and wire it: ``/classify``."""
    tab = ClassifyTab(shared)
    note = gr.Markdown(model_note(Session(), shared.default_model), label="Model in use", elem_id="model-note")
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(Session().choices(), value="shipped", label="Model: the shipped one, or one of yours",
                             elem_id="model-picker", scale=3, interactive=True)
        upload = gr.UploadButton("Upload a model (.zip)", file_types=[".zip"], size="sm", scale=1,
                                 elem_id="model-upload")
    classify_text = gr.Textbox(EXAMPLE_CLASSIFY, lines=5, max_lines=20, label="Sentences, one per line",
                               elem_id="classify-text")
    classify_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
    gr.Markdown(KNOWS, elem_id="model-knows")
    classify_table = gr.Dataframe(
        pd.DataFrame(columns=CLASSIFY_COLUMNS), interactive=False, wrap=True, elem_id="classify-table",
        label=("At a glance (click a cut sentence to read it all; ✂ marks one longer than the model reads, "
               f"{shared.encoder.max_length} tokens: only its start counted)"),
        max_chars=TABLE_CHARS, column_widths=["50%", "25%", "25%"])
    classify_plot = gr.Plot(label="Topic probabilities and sentiment", elem_id="classify-plot")
    with gr.Accordion("Raw predictions (JSON)", open=False):
        classify_json = gr.JSON(label="Predictions")
    with gr.Accordion("Score your own spreadsheet (CSV)", open=False, elem_id="score-section"):
        gr.Markdown(f"<small>Upload a CSV with a header row and pick the column that holds the text. Every row is "
                    f"scored with the model in use (up to {shared.limits.max_score_rows:,} rows here); the file you "
                    "get back keeps your columns and adds the topic, how sure it is, every topic's probability, "
                    "and the sentiment. The command line does the same for files of any size: "
                    "`python -m core predict --csv IN.csv --out OUT.csv`.</small>")
        with gr.Row(equal_height=True):
            score_file = gr.File(label="Your CSV", file_types=[".csv"], elem_id="score-file", scale=2)
            score_column = gr.Dropdown([], label="Text column", elem_id="score-column", scale=1, interactive=True,
                                       allow_custom_value=True)  # an API caller names it; the file is checked
        score_btn = gr.Button("Score the file", variant="secondary", elem_id="score-btn")
        score_note = gr.Markdown(elem_id="score-note")
        score_preview = gr.Dataframe(pd.DataFrame(columns=CLASSIFY_COLUMNS), interactive=False, wrap=True,
                                     label="The first rows", elem_id="score-preview", max_chars=TABLE_CHARS,
                                     column_widths=["50%", "25%", "25%"])
        score_out = gr.File(label="The scored file", elem_id="score-out", interactive=False)

    classified = gr.on([classify_btn.click, classify_text.submit], tab.classify, [classify_text, session],
                       [classify_plot, classify_table, classify_json], api_name="classify",
                       show_progress_on=[classify_table])
    classified.success(tab.note, session, note, api_visibility="private", queue=False, show_progress="hidden")
    classified.failure(lambda: (plots.message_figure(REFUSED), pd.DataFrame(columns=CLASSIFY_COLUMNS), None), None,
                       [classify_plot, classify_table, classify_json], api_visibility="private", queue=False,
                       show_progress="hidden")  # nothing on screen answers the refused input
    score_file.upload(tab.columns, score_file, score_column, api_visibility="private", show_progress_on=[score_column])
    scored = score_btn.click(tab.score, [score_file, score_column, session], [score_preview, score_out, score_note],
                             api_name="score_csv", show_progress_on=[score_note])
    scored.failure(lambda: (pd.DataFrame(columns=CLASSIFY_COLUMNS), None, ""), None,
                   [score_preview, score_out, score_note], api_visibility="private", queue=False, show_progress="hidden")
    chosen = picker.input(tab.choose, [picker, session], [note, picker, session], api_visibility="private")
    uploaded = upload.upload(tab.upload, [upload, session], [note, picker, session], api_visibility="private",
                             show_progress_on=[note])
    for picked in (chosen, uploaded):  # the answers on screen were the previous model's
        picked.success(lambda: (plots.message_figure(NEW_MODEL), pd.DataFrame(columns=CLASSIFY_COLUMNS), None), None,
                       [classify_plot, classify_table, classify_json], api_visibility="private", queue=False,
                       show_progress="hidden")
    return ClassifyParts(model_note=note, picker=picker, picked=[chosen, uploaded])


def refresh_on(tab: gr.Tab, shared: Shared, session: gr.State, parts: ClassifyParts) -> None:
    """Opening the tab shows the models as they are now (a run may have ended in the Train tab)."""
    handlers = ClassifyTab(shared)
    tab.select(lambda s: (handlers.note(s), handlers.picker(s)), session, [parts.model_note, parts.picker],
               api_visibility="private", queue=False, show_progress="hidden")

"""Sentence Lab in the browser: embed & compare, classify + sentiment, live training, a guide.

    python app.py        # serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860)

The composition root: load the shared encoder and shipped model, build the page from the tabs
in ``ui/``, queue, launch. Each tab's layout and handlers live in its own module. Public API
(``gradio_client``): ``/embed``, ``/compare``, ``/classify``, ``/train``, ``/stop``; every other
event is private. A host bounds the work one run may do through environment variables
(``ui.state.Limits``).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import gradio as gr

from core import MultiTaskModel, SentenceEncoder
from ui import classify_tab, embed_tab, guide, train_tab
from ui.state import Limits, Session, Shared, load_shared_models
from ui.style import CSS, HEADER, THEME

logger = logging.getLogger("sentence_lab.app")
SESSION_HOURS = 4  # a visitor's model lives this long after their last visit


def build_app(encoder: SentenceEncoder | None = None, default_model: MultiTaskModel | None = None,
              limits: Limits | None = None) -> gr.Blocks:
    """The Sentence Lab page. Loads the encoder and the shipped model unless they are given."""
    if encoder is None:
        encoder, default_model = load_shared_models()
    shared = Shared(encoder, default_model, limits or Limits.from_env())
    with gr.Blocks(title="Sentence Lab", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        # Deep-copied for each visitor; Session.close runs when the session expires.
        session = gr.State(Session(), time_to_live=SESSION_HOURS * 3600, delete_callback=Session.close)
        gr.Markdown(HEADER, elem_id="header")
        with gr.Tab("Embed & compare", id="embed"):
            embed_tab.render(shared, demo)
        with gr.Tab("Classify + sentiment", id="classify"):
            classify = classify_tab.render(shared, session)
        with gr.Tab("Train", id="train"):
            train_tab.render(shared, session, classify, demo)
        with gr.Tab("Guide", id="guide"):
            guide.render()
    # Embed, compare and classify each answer one request at a time (2 vCPUs), beside at most max_runs
    # training runs; a full queue tells the next visitor so instead of growing without bound.
    demo.queue(default_concurrency_limit=1, max_size=shared.limits.max_queue)
    return demo


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (docker stop) closes the server like Ctrl+C: downloads get cleaned up


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    limits = Limits.from_env()
    demo = build_app(limits=limits)
    logger.info("models loaded in %.1f s", time.perf_counter() - started)
    # Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them itself). Gradio
    # refuses bigger uploads itself (HTTP 413), before a handler sees them.
    demo.launch(theme=THEME, css=CSS, show_error=True, footer_links=["api"], max_file_size=limits.max_upload_bytes)


if __name__ == "__main__":
    main()

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
from starlette.middleware import Middleware

from ui import classify_tab, embed_tab, guide, train_tab
from ui.fairness import Admission, UploadLimit
from ui.state import Limits, Session, Shared, load_shared_models
from ui.style import CSS, HEAD, HEADER, THEME

logger = logging.getLogger("sentence_lab.app")
SESSION_HOURS = 4  # a visitor's model lives this long after their last visit


def build_app(shared: Shared | None = None) -> gr.Blocks:
    """The Sentence Lab page over ``shared`` (by default: the encoder and shipped model loaded, the limits
    from the environment)."""
    shared = shared or Shared(*load_shared_models(), Limits.from_env())
    with gr.Blocks(title="Sentence Lab", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        # Deep-copied for each visitor; Session.close runs when the session expires.
        session = gr.State(Session(), time_to_live=SESSION_HOURS * 3600, delete_callback=Session.close)
        gr.Markdown(HEADER, elem_id="header")
        with gr.Tab("Compare", id="embed"):
            embed_tab.render(shared, demo)
        with gr.Tab("Classify", id="classify") as classify_page:
            classify = classify_tab.render(shared, session)
        classify_tab.refresh_on(classify_page, shared, session, classify)
        with gr.Tab("Train", id="train"):
            train_tab.render(shared, session, classify, demo)
        with gr.Tab("Guide", id="guide"):
            guide.render()
    # A visitor who closes the page lets their trained encoders go at once (their State goes an hour later).
    demo.unload(shared.visitor_left)
    # Embed, compare and classify each answer one request at a time (2 vCPUs), beside at most max_runs
    # training runs; a full queue tells the next visitor so instead of growing without bound.
    demo.queue(default_concurrency_limit=1, max_size=shared.limits.max_queue)
    return demo


def guards(demo: gr.Blocks, shared: Shared) -> list[Middleware]:
    """What stands in front of Gradio for fairness (ui.fairness): the per-visitor bounds on the queue, counted
    for the public events and Compare strategies, and on uploads."""
    runs = {"train", "compare_strategies"}
    def shown_on(inputs: list) -> int:  # a refusal shows above the first text or number field (Train: the seed)
        return next((i for i, block in enumerate(inputs) if isinstance(block, (gr.Textbox, gr.Number))), 0)

    events = {index: (fn.api_name in runs, len(fn.inputs), shown_on(fn.inputs))
              for index, fn in demo.fns.items() if fn.api_name in runs | {"embed", "compare", "classify", "score_csv"}}
    api = demo.get_api_info()["named_endpoints"]
    calls = {name: (name in runs, [p["parameter_name"] for p in api[f"/{name}"]["parameters"]])
             for name in ("embed", "compare", "classify", "score_csv", "train")}
    return [Middleware(Admission, visitors=shared.visitors, events=events, calls=calls),
            Middleware(UploadLimit, per_minute=shared.limits.uploads_per_minute)]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (docker stop) closes the server like Ctrl+C: downloads get cleaned up


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    shared = Shared(*load_shared_models(), Limits.from_env())
    demo = build_app(shared)
    logger.info("models loaded in %.1f s", time.perf_counter() - started)
    # Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them itself). Gradio
    # refuses bigger uploads itself (HTTP 413), before a handler sees them; the guards bound how often.
    demo.launch(theme=THEME, css=CSS, head=HEAD, show_error=True, footer_links=["api"],
                max_file_size=shared.limits.max_upload_bytes, app_kwargs={"middleware": guards(demo, shared)})


if __name__ == "__main__":
    main()

"""Start the app as a user does (``python app.py``) on a free loopback port, for the app and browser tests.

A plain helper, not a conftest: ``with running_app() as server: ... server.url``. The server runs
offline (HF_HUB_OFFLINE, no analytics) and its output goes to test-artifacts/ (ignored by git).
Below it, what the tests that drive it through ``gradio_client`` share: the /train defaults and
small readers of its outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class AppServer:
    url: str
    seconds_to_ready: float  # from process start to the page answering 200
    log: Path
    pid: int = 0  # the server process (its memory is read by the soak benchmark)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@contextlib.contextmanager
def running_app(name: str = "app-server", env: dict[str, str] | None = None,
                timeout: float = 180.0) -> Iterator[AppServer]:
    """Run ``python app.py`` until the block ends; fail with the server's log if it never gets ready.

    Its output goes to test-artifacts/<name>.log.
    """
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"{name}.log"
    environment = os.environ | {
        "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        # Every test visitor comes from 127.0.0.1: the per-visitor bounds are tested on their own (test_fairness).
        "SENTENCE_LAB_REQUESTS_PER_MINUTE": "100000", "SENTENCE_LAB_MAX_WAITING": "1000",
        "SENTENCE_LAB_UPLOADS_PER_MINUTE": "100000",
    } | (env or {})
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"python app.py exited with {process.returncode} before serving:\n{_tail(log)}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"python app.py did not serve {url} within {timeout:.0f} s:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        yield AppServer(url=url, seconds_to_ready=time.monotonic() - started, log=log, pid=process.pid)
    finally:
        process.terminate()  # SIGTERM, as `docker stop`: the app closes like Ctrl+C and cleans up after itself
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- driving it with gradio_client ---------------------------------------------------------------------

AG_NEWS = {"World", "Sports", "Business", "Sci/Tech"}  # the shipped model's topics
# The /train endpoint's parameters, in order, with the page's defaults.
TRAIN_DEFAULTS = dict(source="synthetic", size=300, seed=0, csv_file=None, preset="encoder", gradual=False,
                      lr_decay=1.0, epochs=12, learning_rate=0.02, batch_size=16, topic_weight=1.0,
                      sentiment_weight=1.0, base_model="sentence-transformers/all-MiniLM-L6-v2")
SENTENCES = "\n".join(["The striker scored twice as United won the cup final.",
                       "Shares of the chip maker plunged after weak earnings."])


def figure(plot_output: dict) -> dict:
    """The plotly JSON inside a gr.Plot output."""
    assert plot_output["type"] == "plotly"
    return json.loads(plot_output["plot"])


def heatmap_scores(plot_output: dict) -> np.ndarray:
    (trace,) = [t for t in figure(plot_output)["data"] if t["type"] == "heatmap"]
    return np.array(trace["z"], dtype=float)


def train_args(**changes) -> list:
    return list((TRAIN_DEFAULTS | changes).values())


def classify(client: Any, text: str = SENTENCES) -> list[dict]:
    return client.predict(text, api_name="/classify")[2]


def wait_for(job, predicate, timeout: float = 120.0):
    """The first streamed output that satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for output in job.outputs():
            if predicate(output):
                return output
        if job.done():
            break
        time.sleep(0.1)
    raise AssertionError(f"no streamed output matched; last: {job.outputs()[-1:]!r}")

"""One visitor cannot crowd out the others: runs per page, requests and uploads per minute, trained encoders held.

The bounds are unit-tested on ui.fairness and ui.state; then one app with tight settings is driven as
a script would drive it (gradio_client and raw HTTP), from one address.
"""

from __future__ import annotations

import time

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError

from tests.app_server import classify, running_app, train_args
from ui.fairness import Visitors, address


def visitor(host: str, forwarded: str | None = None) -> gr.Request:
    return gr.Request(headers={"x-forwarded-for": forwarded} if forwarded else {}, client={"host": host})


def test_a_visitor_gets_so_many_requests_a_minute_and_so_many_waiting(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("ui.fairness.time.monotonic", lambda: clock[0])
    visitors = Visitors(per_minute=3, waiting=2)
    me = visitor("10.0.0.1")
    assert visitors.admit("10.0.0.1") is None and visitors.admit("10.0.0.1") is None
    assert visitors.admit("10.0.0.1").startswith("You already have 2 requests waiting on this server (at most 2")
    assert visitors.admit("10.0.0.2") is None  # another address is not held up
    visitors.started(me)
    assert visitors.admit("10.0.0.1") is None  # one began, so one more may wait
    visitors.started(me)
    visitors.started(me)
    clock[0] += 30
    assert "at most 3 a minute for each visitor. Try again in 30 s" in visitors.admit("10.0.0.1")
    clock[0] += 31
    assert visitors.admit("10.0.0.1") is None  # the first three are over a minute old


def test_the_address_is_the_peer_unless_a_proxy_is_trusted(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SENTENCE_LAB_TRUST_PROXY", raising=False)
    assert address({"x-forwarded-for": "6.6.6.6"}, "10.0.0.1") == "10.0.0.1"  # a header anyone can send
    monkeypatch.setenv("SPACE_ID", "someone/sentence-lab")  # on a Hugging Face Space the proxy sets it
    assert address({"x-forwarded-for": "1.2.3.4, 10.0.0.9"}, "10.0.0.1") == "1.2.3.4"


@pytest.mark.app
@pytest.mark.slow
def test_a_tight_server_refuses_a_second_run_extra_requests_and_uploads_and_lets_trained_encoders_go():
    env = {"SENTENCE_LAB_REQUESTS_PER_MINUTE": "8", "SENTENCE_LAB_UPLOADS_PER_MINUTE": "2",
           "SENTENCE_LAB_MAX_TRAINED_ENCODERS": "1", "SENTENCE_LAB_MAX_WAITING": "1000"}
    with running_app("fairness-server", env=env) as server:
        first, second = Client(server.url, verbose=False), Client(server.url, verbose=False)
        run = train_args(preset="none", size=40, epochs=1, batch_size=8)
        job = first.submit(*run, api_name="/train")  # 1
        time.sleep(1.0)
        with pytest.raises(ValidationError, match="A run of yours is already going or waiting in this page"):
            first.predict(*run, api_name="/train")  # refused when it asks to join the queue: not counted
        assert "Done" in job.result(timeout=300)[2]
        classify(first)  # 2
        second.predict(*run, api_name="/train")  # 3: a second trained encoder, past the cap of 1
        classify(first)  # 4: the shipped model again (its visitor is told so)
        second.close()  # the page is closed: Gradio's unload
        deadline = time.monotonic() + 30
        while "a visitor left: let go of 1" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = server.log.read_text()
        assert "let go of 1 session(s)' trained encoders (cap 1" in log and "a visitor left: let go of 1" in log

        with httpx.Client(base_url=server.url) as http:
            sent = [http.post("gradio_api/upload", files={"files": ("a.csv", b"text,label\nA cat.,pets\n")})
                    for _ in range(3)]
            # Plain HTTP with too few values: Gradio's own answer named "<gradio.components.textbox.Textbox
            # object at 0x...>"; it is refused before it queues, with the parameters' names (not counted).
            short = http.post("gradio_api/call/embed", json={"data": ["One sentence."]})
            huge = http.post("gradio_api/call/classify", content=b'{"data": ["' + b"a" * (17 * 2**20) + b'"]}',
                             headers={"content-type": "application/json"}, timeout=60)
        assert [r.status_code for r in sent] == [200, 200, 429]
        assert "at most 2 a minute" in sent[2].json()["detail"]
        assert huge.status_code == 413 and "at most 16 MB a request" in huge.json()["detail"]  # not read, not counted
        assert short.status_code == 422
        assert short.json()["detail"] == "/embed takes 3 values, in this order: text, pooling, normalize; got 1"

        answered = 0
        with pytest.raises(ValidationError, match="this server answers at most 8 a minute for each visitor"):
            for _ in range(8):
                classify(first)
                answered += 1
        assert answered == 4  # 4 + the 4 above: the ninth request within a minute is refused
        with httpx.Client(base_url=server.url) as http:  # plain HTTP calls count too
            raw = http.post("gradio_api/call/classify", json={"data": ["A sentence."]})
        assert raw.status_code == 422 and "this server answers at most 8 a minute" in raw.json()["detail"]

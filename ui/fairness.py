"""One visitor may not crowd out the others: requests per minute, requests waiting, uploads per minute.

A visitor is an address: the connecting one, or on a Hugging Face Space (or behind another proxy,
with SENTENCE_LAB_TRUST_PROXY=1) the first one in X-Forwarded-For. A session hash would not do: a
script makes a new one for every request. The counts live in memory, bounded in how many
addresses they remember.

Two ASGI middlewares sit in front of Gradio: ``Admission`` on its queue (``Visitors.admit`` when a
request asks to join, before it waits; ``Visitors.started`` when its handler begins) and
``UploadLimit`` on its upload route, which does not go through the queue.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable

import gradio as gr

MINUTE = 60.0
REMEMBERED = 10_000  # addresses remembered at most; the least recently seen is forgotten first
# A request that joined the queue but never started (its visitor's page closed first) stops counting as
# waiting after this long: the longest a request waits is a few runs of max_seconds each.
WAITING_FORGOTTEN_AFTER = 15 * MINUTE
# A queued request's JSON body: 32 sentences of 20,000 characters are ~1 MB even with every character
# escaped; Gradio would read (and parse) any size.
MAX_BODY_BYTES = 16 * 2**20


def behind_proxy() -> bool:
    """On a Hugging Face Space (SPACE_ID is set there) or when the host says so, trust X-Forwarded-For."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("SENTENCE_LAB_TRUST_PROXY", "") == "1"


def address(headers: Any, client_host: str | None) -> str:
    """The visitor's address: the proxy's X-Forwarded-For first hop where one is trusted, else the peer."""
    if behind_proxy():
        forwarded = (headers.get("x-forwarded-for") or "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return client_host or "unknown"


class _Windows:
    """Times of recent events per key, in a bounded, least-recently-used map."""

    def __init__(self) -> None:
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def recent(self, key: str, now: float, within: float) -> deque[float]:
        times = self._times.setdefault(key, deque())
        self._times.move_to_end(key)
        while times and now - times[0] > within:
            times.popleft()
        while len(self._times) > REMEMBERED:
            self._times.popitem(last=False)
        return times


class Visitors:
    """Per visitor: at most ``per_minute`` requests a minute and ``waiting`` requests in the queue at once;
    per page (Gradio session): one training run, going or waiting."""

    def __init__(self, per_minute: int, waiting: int) -> None:
        self.per_minute, self.waiting = per_minute, waiting
        self._requests, self._waiting = _Windows(), _Windows()
        self._runs: OrderedDict[str, float] = OrderedDict()  # session hash -> when its run joined the queue
        self._lock = threading.Lock()

    def admit(self, key: str, page: str | None = None, run: bool = False) -> str | None:
        """Let a request from address ``key`` (page ``page``; ``run``: a training run) join the queue: None,
        or the bound it would pass, in words."""
        now = time.monotonic()
        with self._lock:
            if run and page is not None and now - self._runs.get(page, -math.inf) < WAITING_FORGOTTEN_AFTER:
                return "A run of yours is already going or waiting in this page: wait for it, or press Stop."
            requests = self._requests.recent(key, now, MINUTE)
            waiting = self._waiting.recent(key, now, WAITING_FORGOTTEN_AFTER)
            if len(requests) >= self.per_minute:
                wait = MINUTE - (now - requests[0])
                return (f"Too many requests from your address: this server answers at most {self.per_minute} "
                        f"a minute for each visitor. Try again in {max(wait, 1):.0f} s.")
            if len(waiting) >= self.waiting:
                return (f"You already have {len(waiting)} requests waiting on this server (at most "
                        f"{self.waiting} for each visitor): wait for them to finish.")
            requests.append(now)
            waiting.append(now)
            if run and page is not None:
                self._runs[page] = now
                while len(self._runs) > REMEMBERED:
                    self._runs.popitem(last=False)
        return None

    def started(self, request: gr.Request | None) -> None:
        """A request's handler began: it no longer waits."""
        if request is None:
            return
        key, now = address(request.headers, getattr(request.client, "host", None)), time.monotonic()
        with self._lock:
            waiting = self._waiting.recent(key, now, WAITING_FORGOTTEN_AFTER)
            if waiting:
                waiting.popleft()

    def run_waiting(self, page: str | None) -> bool:
        """Whether page ``page`` has a run that joined the queue and has not ended."""
        with self._lock:
            return page in self._runs and time.monotonic() - self._runs[page] < WAITING_FORGOTTEN_AFTER

    def run_ended(self, page: str | None) -> None:
        """Page ``page``'s run (or comparison) is over: it may start another."""
        with self._lock:
            self._runs.pop(page, None)


class Admission:
    """ASGI middleware in front of Gradio's queue: a request over its visitor's bounds is refused when it asks
    to join (HTTP 422, in the form gradio_client reports as a ValidationError and the page shows on one of
    the event's inputs), before it waits or takes a worker.

    ``events``: fn_index -> (whether it is a training run, its number of inputs, the input that shows a
    refusal: the first one a visitor sees), for the events that count; the page's small private events
    (the setup preview, showing fields) do not.

    ``calls``: API name -> (whether it is a training run, its parameter names), for the same events called
    over plain HTTP (``POST /gradio_api/call/<name>``), which Gradio queues without a join request; a
    call with the wrong number of values is told their names (Gradio's own message shows object reprs).
    """

    def __init__(self, app: Callable, visitors: Visitors, events: dict[int, tuple[bool, int, int]],
                 calls: dict[str, tuple[bool, list[str]]]) -> None:
        self.app, self.visitors, self.events, self.calls = app, visitors, events, calls

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "").rstrip("/") if scope["type"] == "http" and scope["method"] == "POST" else ""
        call = re.search(r"/call/([^/]+)$", path)
        if not (path.endswith("/queue/join") or (call and call.group(1) in self.calls)):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:  # read no further: the largest request the page makes is ~1 MB
                return await _reply(send, 413, {"detail": f"The request is over {MAX_BODY_BYTES // 2**20} MB: this "
                                                          "server takes at most "
                                                          f"{MAX_BODY_BYTES // 2**20} MB a request."})
        try:
            payload = json.loads(body)
            event = self.events.get(int(payload["fn_index"])) if not call else None
            page = payload.get("session_hash") if not call else None
        except (ValueError, TypeError, KeyError, AttributeError):
            payload, event, page = None, None, None  # Gradio answers a malformed request itself
        if call and isinstance(payload, dict):
            run, names = self.calls[call.group(1)]
            values = payload.get("data")
            if not isinstance(values, list) or len(values) != len(names):
                got = len(values) if isinstance(values, list) else "no list"
                return await _reply(send, 422, {"detail": f"/{call.group(1)} takes {len(names)} values, in this order: "
                                                          f"{', '.join(names)}; got {got}"})
            event = (run, 0, 0)
        if event is not None:
            refusal = self.visitors.admit(_scope_address(scope), str(page) if page is not None else None,
                                          run=event[0])
            if refusal is not None and call:
                return await _reply(send, 422, {"detail": refusal})
            if refusal is not None:
                at = event[2]
                detail = [{"__type__": "validate", "is_valid": i != at, "message": refusal if i == at else "",
                           "parameter_name": "request" if i == at else f"parameter_{i}"} for i in range(max(event[1], 1))]
                return await _reply(send, 422, {"detail": detail})
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _scope_address(scope: dict) -> str:
    """``address`` of a raw ASGI request: its headers decoded, its peer from ``scope["client"]``."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    return address(headers, (scope.get("client") or [None])[0])


async def _reply(send: Callable, status: int, content: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": json.dumps(content).encode()})


class UploadLimit:
    """ASGI middleware: at most ``per_minute`` file uploads a minute from one visitor (HTTP 429 past it).

    Gradio already refuses a file over the size cap (413); this bounds how often one may be sent.
    """

    def __init__(self, app: Callable, per_minute: int) -> None:
        self.app, self.per_minute = app, per_minute
        self._uploads = _Windows()
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/upload"):
            key, now = _scope_address(scope), time.monotonic()
            with self._lock:
                uploads = self._uploads.recent(key, now, MINUTE)
                refused = len(uploads) >= self.per_minute
                if not refused:
                    uploads.append(now)
            if refused:
                wait = max(MINUTE - (now - uploads[0]), 1)
                return await _reply(send, 429, {"detail": f"Too many uploads from your address: at most "
                                                          f"{self.per_minute} a minute on this server. Try again in "
                                                          f"{wait:.0f} s."}, [(b"retry-after", str(int(wait)).encode())])
        await self.app(scope, receive, send)

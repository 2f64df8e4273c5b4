"""Load: eight visitors classify while a ninth trains the whole encoder for the server's 30 s limit.

One ``python app.py`` on loopback (LIMITED_ENV: runs end by themselves after 30 s), driven by
gradio_client from threads, one Client (one session) per visitor. Every call must be answered,
nobody may see the trainer's model, and a tenth visitor who starts a run meanwhile waits in the
queue with their place shown, then trains. The median classify latency while the run trains (one
visitor alone, then eight at once) is printed (``pytest -s``) and written to test-artifacts/load.json. Bounded: each visitor stops after
MAX_CALLS calls or when the run ends, and the whole test after DEADLINE_S.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import Status

from tests.app_server import AG_NEWS, ARTIFACTS, classify, train_args, wait_for
from tests.helpers import LIMITED_ENV

pytestmark = [pytest.mark.app, pytest.mark.slow]

VISITORS = 8
MAX_CALLS = 60  # per visitor
DEADLINE_S = 150.0  # for the whole test, start to end
RUN_LIMIT_S = float(LIMITED_ENV["SENTENCE_LAB_MAX_SECONDS"])
PETS = {"cats": ["cat", "kitten", "tabby"], "dogs": ["dog", "puppy", "beagle"], "birds": ["parrot", "sparrow", "owl"]}
DOINGS = ["sleeps on the sofa", "plays in the garden", "eats its breakfast", "looks out of the window",
          "chases a fly", "makes a lot of noise", "waits by the door", "hides under the bed"]


def pets_csv(path, rows: int = 400):
    """Topics that the shipped model does not have: whoever sees them sees the trainer's model."""
    names = sorted(PETS)
    lines = ["text,label"]
    for i in range(rows):
        label = names[i % 3]
        animal = PETS[label][(i // 3) % 3]
        lines.append(f"My {animal} {DOINGS[(i // 9) % len(DOINGS)]} (note {i}).,{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Visitor(threading.Thread):
    """Classifies the same sentences over and over until told to stop; records each call."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, verbose=False)
        self.stop = stop
        self.calls: list[tuple[float, float, list[dict] | None, str | None]] = []  # (start, seconds, answer, error)

    def run(self) -> None:
        while not self.stop.is_set() and len(self.calls) < MAX_CALLS:
            started = time.monotonic()
            try:
                answer, error = classify(self.client), None
            except Exception as exc:  # noqa: BLE001 -- recorded, and the test fails on it
                answer, error = None, f"{type(exc).__name__}: {exc}"
            self.calls.append((started, time.monotonic() - started, answer, error))


def test_eight_visitors_classify_while_one_trains(limited_server, tmp_path):
    began = time.monotonic()
    baseline = classify(Client(limited_server.url, verbose=False))
    trainer = Client(limited_server.url, verbose=False)
    # The whole encoder learns (the heaviest run there is), on 400 rows, until the server's 30 s limit.
    run = trainer.submit(*train_args(source="csv", csv_file=handle_file(str(pets_csv(tmp_path / "pets.csv"))),
                                     preset="none", epochs=100, batch_size=4, learning_rate=0.0002),
                         api_name="/train")
    wait_for(run, lambda out: "step" in out[2], timeout=120)
    training_from = time.monotonic()

    alone, solo = Client(limited_server.url, verbose=False), []  # one visitor, no queue in front: the service time
    for _ in range(5):
        started = time.monotonic()
        answer = classify(alone)
        solo.append(time.monotonic() - started)
        assert [set(p["probabilities"]) for p in answer] == [AG_NEWS, AG_NEWS]
    stop = threading.Event()
    visitors = [Visitor(limited_server.url, stop) for _ in range(VISITORS)]
    for v in visitors:
        v.start()
    # A visitor who wants to train too: one run at a time, so they wait in the queue and see their place.
    waiting = Client(limited_server.url, verbose=False)
    queued = waiting.submit(*train_args(size=40, epochs=1), api_name="/train")
    places = []
    while not run.done() and time.monotonic() - began < DEADLINE_S:
        status = queued.status()
        if status.code == Status.IN_QUEUE:
            places.append((status.rank, status.queue_size))
        time.sleep(0.5)
    training_until = time.monotonic()
    stop.set()
    for v in visitors:
        v.join(timeout=max(1.0, DEADLINE_S - (time.monotonic() - began)))

    _, _, status, model_zip, note, *_ = run.result(timeout=60)
    assert f"Stopped at this server's limit of {RUN_LIMIT_S:g} s per run" in status, status
    assert training_until - training_from >= RUN_LIMIT_S / 2, "the run should have trained for most of its 30 s"
    assert all(set(p["probabilities"]) == set(PETS) for p in classify(trainer)), "the trainer uses their model"

    calls = [c for v in visitors for c in v.calls]
    errors = [c[3] for c in calls if c[3]]
    assert not errors, f"{len(errors)} of {len(calls)} calls failed, first: {errors[0]}"
    assert all(not v.is_alive() for v in visitors)
    for v in visitors:  # every visitor got answers, and only ever the shipped model's
        assert v.calls, "a visitor was never answered"
        for _, _, answer, _ in v.calls:
            assert [set(p["probabilities"]) for p in answer] == [AG_NEWS, AG_NEWS]
            for a, b in zip(answer, baseline):
                assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
                assert a["sentiment"] == pytest.approx(b["sentiment"], abs=1e-5)

    during = [seconds for started, seconds, _, _ in calls if training_from <= started and started + seconds <= training_until]
    assert len(during) >= VISITORS, "too few calls landed while the run trained to measure anything"
    median = statistics.median(during)
    assert places and all(isinstance(rank, int) and rank >= 0 and size >= 1 for rank, size in places), places
    _, _, queued_status, *_ = queued.result(timeout=120)
    assert "Done" in queued_status, queued_status

    report = {"visitors": VISITORS, "calls": len(calls), "calls_during_training": len(during),
              "median_classify_s_during_training": round(median, 4),
              "median_classify_s_one_visitor_during_training": round(statistics.median(solo), 4),
              "p90_classify_s_during_training": round(statistics.quantiles(during, n=10)[-1], 4),
              "training_seconds": round(training_until - training_from, 1), "queue_places_seen": places[:5],
              "test_seconds": round(time.monotonic() - began, 1)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload: {len(during)} classify calls by {VISITORS} visitors during {report['training_seconds']} s of "
          f"training; median {1000 * median:.0f} ms, p90 {1000 * report['p90_classify_s_during_training']:.0f} ms "
          f"(one visitor alone: median {1000 * statistics.median(solo):.0f} ms)")
    assert median < 5.0, f"classify became unresponsive while a run trained: median {median:.2f} s"
    assert time.monotonic() - began < DEADLINE_S + 60

"""Stop pressed at any moment, a run that fails, a save that crashes: the visitor keeps a usable model.

Twenty runs go through the app's own Train handler (``ui.train_tab.TrainTab``, in-process, on a tiny
encoder), each stopped at a random point of its stream: before the first step, mid-epoch, at an
epoch's end, or after it finished. Each time the visitor's model is either the previous one,
untouched, or the partly trained one; it predicts, and the partly trained one's download loads and
predicts the same. The same seed gives the same model. Then a few Stops through the running app,
as a browser sends them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
import random
import re
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client

from core import folders, plots
from core.config import HeadsConfig
from core.encoder import SentenceEncoder, state_checksum
from core.model import MultiTaskModel
from tests.app_server import AG_NEWS, classify, train_args, wait_for
from ui import train_tab
from ui.classify_tab import ClassifyTab
from ui.inputs import TrainForm
from ui.state import Limits, Session, Shared

pytestmark = [pytest.mark.app, pytest.mark.slow]

CLASSES = ["Business", "Sci/Tech", "Sports", "World"]
TEXTS = "The striker scored twice in the cup final.\nShares fell sharply after the results."
RUNS = 20


@pytest.fixture(scope="module")
def lab(tiny_encoder_dir) -> train_tab.TrainTab:
    """The Train tab's handlers over a tiny encoder that loads by name, with tiny shipped heads."""
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir), pooling="mean", normalize=True, max_length=64)
    torch.manual_seed(0)
    shipped = MultiTaskModel(copy.deepcopy(encoder), HeadsConfig(class_names=CLASSES)).eval()
    return train_tab.TrainTab(Shared(encoder, shipped, Limits(max_rows=200, max_seconds=120)))


@pytest.fixture
def every_step_streams(monkeypatch):
    monkeypatch.setattr(train_tab, "STREAM_EVERY_S", 0.0)  # one output per training step: Stop can land on any of them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model gains nothing from more, and loses much on a busy machine
    yield
    torch.set_num_threads(threads)


def start(lab: train_tab.TrainTab, session: Session, seed: int, preset: str = "encoder", epochs: int = 2):
    """The Train handler's stream for a short synthetic run (48 training rows, 6 steps per epoch)."""
    form = TrainForm(source="synthetic", size=60, seed=seed, preset=preset, epochs=epochs, learning_rate=0.05,
                     batch_size=8)
    return lab.run(form, session)


def weights(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_classify(lab: train_tab.TrainTab, session: Session) -> list[dict]:
    _, table, predictions = ClassifyTab(lab.shared).classify(TEXTS, session)
    assert len(predictions) == 2 == len(table)
    for p in predictions:
        assert set(p["probabilities"]) == set(CLASSES) and sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert np.isfinite(p["sentiment"])
    return predictions


def test_stop_at_random_steps_leaves_the_previous_or_the_partly_trained_model(lab, every_step_streams, tmp_path):
    rng = random.Random(7)
    session = Session()
    encoder_before = state_checksum(lab.shared.encoder.backbone)
    outcomes = []
    for run in range(RUNS):
        previous = session.model
        before = weights(previous if previous is not None else lab.shared.default_model)
        preset = "none" if run % 4 == 3 else "encoder"  # heads only; every fourth run the whole encoder (a copy)
        # The first runs stop right after "Preparing" or the start event, before any step; the rest anywhere.
        stop_after = run if run < 2 else rng.randrange(2, 22)  # a run streams 19 outputs
        outputs = []
        for i, output in enumerate(start(lab, session, seed=run, preset=preset)):
            outputs.append(output)
            if i == stop_after:
                lab.stop(session)  # what the Stop button runs
        status, download = outputs[-1][2], outputs[-1][3]
        assert not session.running and not session.stop.is_set()

        if "before the first step" in status:
            outcomes.append("previous")
            assert session.model is previous, f"run {run}: stopped before learning anything, yet the model changed"
            assert same_weights(before, weights(previous if previous is not None else lab.shared.default_model))
            assert not outputs[-1][6].data and outputs[-1][7].empty  # nothing learned: nothing to break down
        else:
            assert session.model is not previous, f"run {run}: {status}"
            stopped = re.search(r"\*\*Stopped\*\* after (\d+) steps", status)
            if stopped:  # every output after the first two is one training step, epoch end or validation
                outcomes.append("partial")
                steps = 12 if preset == "none" else 2 * 25  # 48 rows / batch 8, 2 epochs; or L-BFGS's most
                assert 1 <= int(stopped.group(1)) <= stop_after - 1 and int(stopped.group(1)) < steps, status
            else:
                outcomes.append("finished")
                assert "Done" in status, status
            # The download is the model in use: it loads and predicts the same.
            folder = tmp_path / f"run-{run}"
            with zipfile.ZipFile(download) as archive:
                archive.extractall(folder)
            loaded = MultiTaskModel.load(folder / "sentence-lab-model")
            ours, theirs = session.model.predict(TEXTS.splitlines()), loaded.predict(TEXTS.splitlines())
            for a, b in zip(ours, theirs):
                assert a.label == b.label and a.sentiment == pytest.approx(b.sentiment, abs=1e-5)
                assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
            config = json.loads((folder / "sentence-lab-model" / "config.json").read_text())
            assert config["encoder_weights"] == ("base" if preset == "encoder" else "stored")
            # Where its topics go wrong, stopped or not: on the 12 held-out rows, or on all 60 when a finished
            # exact fit cross-validated (its final heads learned from the held-out rows too).
            confusion, topics = outputs[-1][6], outputs[-1][7]
            assert np.sum(confusion.data[0].z) == (60 if "cross-validation" in status else 12), status
            assert set(topics["Topic"]) <= set(CLASSES) and topics["Rows"].sum() == np.sum(confusion.data[0].z)
        check_classify(lab, session)
    print(f"\nStop at random steps, {RUNS} runs: " + ", ".join(f"{outcomes.count(k)} {k}" for k in sorted(set(outcomes))))
    assert outcomes.count("previous") >= 2 and outcomes.count("partial") >= 10, outcomes
    assert state_checksum(lab.shared.encoder.backbone) == encoder_before, "no run may touch the shared encoder"


def test_a_run_that_fails_half_way_keeps_the_previous_model(lab, every_step_streams, monkeypatch):
    session = Session()
    list(start(lab, session, seed=1, epochs=1))
    previous, before = session.model, weights(session.model)
    real_train = train_tab.train

    def failing_train(*args, **kwargs):
        for n, event in enumerate(real_train(*args, **kwargs)):
            if n == 4:
                raise RuntimeError("the disk is on fire")
            yield event

    monkeypatch.setattr(train_tab, "train", failing_train)
    with pytest.raises(gr.Error, match=r"The server could not finish this \(RuntimeError: the disk is on fire\)"):
        list(start(lab, session, seed=2, preset="none"))
    assert session.model is previous and same_weights(before, weights(session.model))
    assert not session.running
    check_classify(lab, session)


def test_a_run_that_diverges_says_so_and_never_becomes_the_visitors_model(lab):
    session = Session()
    list(start(lab, session, seed=1, epochs=1))
    previous, before, runs = session.model, weights(session.model), list(session.runs)
    with pytest.raises(gr.Error, match=r"training diverged at epoch 1, step \d+: the loss became (nan|inf)\. Lower the "
                                       r"learning rate \(now 1e\+30 for the heads, 2e-05 for the encoder\)"):
        list(lab.run(TrainForm(size=60, seed=2, preset="none", epochs=1, learning_rate=1e30, batch_size=8), session))
    assert session.model is previous and same_weights(before, weights(session.model)) and session.runs == runs
    assert not session.running
    check_classify(lab, session)


def test_a_crash_while_saving_leaves_no_half_written_model(lab, every_step_streams, monkeypatch, tmp_path):
    session = Session()
    list(start(lab, session, seed=3, epochs=1))
    saved = session.model.save(tmp_path / "model")
    good = (saved / "heads.safetensors").read_bytes()

    def crash(tensors, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")  # the crash comes mid-write
        raise OSError("No space left on device")

    monkeypatch.setattr(folders, "save_file", crash)
    with pytest.raises(OSError, match="No space left on device"):
        session.model.save(saved)
    assert (saved / "heads.safetensors").read_bytes() == good, "the old model was replaced by a half-written one"
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "a temporary folder was left behind"
    MultiTaskModel.load(saved).predict(["Still loads."])

    # Through the app: the run's model is kept and in use; only its download is missing, and said so.
    outputs = list(start(lab, session, seed=4, epochs=1))
    status, download = outputs[-1][2], outputs[-1][3]
    assert "Done" in status and "The download could not be prepared (OSError: No space left on device)" in status
    assert download is None and session.model is not None
    assert session.export_dir is not None and list(session.export_dir.iterdir()) == []  # nothing half-written
    check_classify(lab, session)


def test_the_same_seed_gives_the_same_model_through_the_app(lab, every_step_streams):
    models = []
    for seed in (11, 11, 12):
        session = Session()
        list(start(lab, session, seed=seed, preset="none"))
        models.append(weights(session.model))
    assert same_weights(models[0], models[1]), "the same seed on the same machine must give the same model"
    assert not same_weights(models[0], models[2])


def test_downloads_live_in_the_apps_own_temporary_folder_and_go_with_the_session(lab, every_step_streams):
    session = Session()
    outputs = list(start(lab, session, seed=5, epochs=1))
    download = Path(outputs[-1][3])
    assert download.is_file() and download.parent == session.export_dir
    assert session.export_dir.parent == lab.shared.exports  # one folder per visitor, under the server's own
    assert [p.name for p in session.export_dir.iterdir()] == ["sentence-lab-model.zip"]  # the folder itself is gone
    folder = session.export_dir
    session.close()  # Gradio calls this when the visitor's session expires
    assert not folder.exists() and session.model is None


# -- Stop through the running app -----------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 1.5, 4.0])
def test_stop_through_the_app_keeps_a_usable_model(limited_server, delay):
    client = Client(limited_server.url, verbose=False)
    shipped = classify(client)
    job = client.submit(*train_args(size=200, epochs=40, batch_size=4, learning_rate=0.0005, preset="none"),
                        api_name="/train")
    wait_for(job, lambda out: "Preparing" in out[2])  # the run has begun: 0 s lands before its first step
    time.sleep(delay)
    reply = client.predict(api_name="/stop")
    _, _, status, model_zip, note, *_ = job.result(timeout=300)
    print(f"\nStop after {delay} s: {reply!r} -> {status.split('<br>')[0]}")
    after = classify(client)
    assert all(set(p["probabilities"]) == AG_NEWS for p in after)
    assert "No run is going" not in reply  # it waited, or loaded its data, or ran: Stop is heard in each
    if "before the first step" in status or "before it started" in status:
        assert [p["probabilities"] for p in after] == [p["probabilities"] for p in shipped]
        assert "the shipped model" in note
    else:
        assert "**Stopped** after" in status and model_zip and "your model" in note.lower()
        assert [p["probabilities"] for p in after] != [p["probabilities"] for p in shipped]
    assert "No run is going" in client.predict(api_name="/stop")
    other = classify(Client(limited_server.url, verbose=False))  # another visitor: still the shipped model
    for a, b in zip(other, shipped, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


# -- runs that start from the model in use ------------------------------------------------------------------


def test_everything_frozen_measures_the_model_in_use_and_keeps_it(lab):
    from core.training import evaluate

    session = Session()
    outputs = list(lab.run(TrainForm(size=60, preset="all"), session))
    status = outputs[-1][2]
    assert status.startswith("**Baseline:** nothing was trained") and session.model is None  # the shipped one stays
    _, val_set = TrainForm(size=60).data(lab.shared)[0].split(train_tab.VAL_FRACTION, seed=0)
    accuracy = evaluate(lab.shared.default_model, val_set)["accuracy"]
    assert f"topic accuracy {plots.percent(accuracy)}" in status
    # Where the model in use goes wrong, on the same held-out rows
    confusion = evaluate(lab.shared.default_model, val_set, breakdown=True)["confusion"]
    assert [list(row) for row in outputs[-1][6].data[0].z] == confusion["matrix"]
    assert list(outputs[-1][6].data[0].y) == confusion["classes"] == CLASSES


def test_a_head_frozen_run_starts_from_the_model_in_use_and_keeps_that_head(lab):
    session = Session()
    shipped = weights(lab.shared.default_model)
    list(lab.run(TrainForm(size=60, preset="classification_head", epochs=1, batch_size=8), session))
    mine = weights(session.model)
    heads = [k for k in shipped if k.startswith("classifier.")]
    assert heads and all(torch.equal(shipped[k], mine[k]) for k in heads)  # bit-identical
    assert not torch.equal(shipped["sentiment_head.linear.weight"], mine["sentiment_head.linear.weight"])
    assert same_weights(shipped, weights(lab.shared.default_model)), "the shipped model itself is untouched"


def test_runs_are_kept_side_by_side_any_can_be_used_again_and_memory_stays_bounded(lab):
    from ui.state import MAX_RUNS

    session = Session()
    probabilities = {}
    for run in range(MAX_RUNS + 2):  # every third trains the encoder: only the run in use may keep those weights
        preset = "none" if run % 3 == 2 else "encoder"
        list(lab.run(TrainForm(size=40, seed=run, preset=preset, epochs=1, batch_size=8), session))
        probabilities[session.active_run] = check_classify(lab, session)
        held = [r for r in session.runs if r.model is not None]
        assert [r.number for r in held] == ([session.active_run] if preset == "none" else []), "one encoder at most"
    assert len(session.runs) == MAX_RUNS and session.runs[0].number == 3  # the two oldest are forgotten
    assert all(r.heads is not None or r.model is None or r.number == session.active_run for r in session.runs)

    table, figure, _ = lab.show_runs(session)
    assert list(table["Run"]) == [f"#{n}" for n in range(3, MAX_RUNS + 3)] and list(table["In use"]).count("✓") == 1
    assert len(figure.data) == MAX_RUNS

    heads_only = session.runs[1]  # run #4: heads on the shared encoder, rebuilt when used again
    session.use_run(heads_only.number, lab.shared)
    again = check_classify(lab, session)
    for a, b in zip(again, probabilities[heads_only.number]):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    encoder_run = next(r for r in session.runs if r.heads is None and r.model is None)
    with pytest.raises(ValueError, match=f"Run #{encoder_run.number} trained the encoder, and its weights were let go"):
        session.use_run(encoder_run.number, lab.shared)


def test_a_pinned_encoder_run_stays_usable_and_one_pin_at_a_time_bounds_the_weights_kept(lab):
    session = Session()

    def held() -> list[int]:
        return [r.number for r in session.runs if r.model is not None]

    for seed in range(3):  # three runs that train the encoder: #1, #2, #3
        list(lab.run(TrainForm(size=40, seed=seed, preset="none", epochs=1, batch_size=8), session))
        if seed == 0:
            first = check_classify(lab, session)
            table = lab.pin_run(1, session)[0]  # the page's button
            assert list(table["In use"]) == ["✓ pinned"]
    assert held() == [1, 3]  # the pinned run and the one in use: two encoders at most
    session.use_run(1, lab.shared)  # its own weights, as they were
    for a, b in zip(check_classify(lab, session), first):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    assert held() == [1]  # #3 was neither pinned nor in use any more
    with pytest.raises(ValueError, match="Run #3's encoder weights were already let go; run it again, then pin it"):
        session.pin(3)
    with pytest.raises(ValueError, match="Run #2 trained the encoder, and its weights were let go"):
        session.use_run(2, lab.shared)

    list(lab.run(TrainForm(size=40, seed=3, preset="none", epochs=1, batch_size=8), session))  # run #4
    assert held() == [1, 4] and "is pinned" in session.pin(4)  # the pin moves, and #1 is let go
    assert [r.number for r in session.runs if r.pinned] == [4] and held() == [4]
    session.use_shipped()
    assert held() == [4]  # pinned: kept while the shipped model is in use
    assert session.pin(4) == "Run #4 is unpinned." and held() == []

    list(lab.run(TrainForm(size=40, seed=4, preset="encoder", epochs=1, batch_size=8), session))
    assert "always kept, no pin needed" in session.pin(5)


def test_compare_strategies_runs_each_on_the_same_split_and_stop_ends_them_all(lab, every_step_streams):
    from dataclasses import asdict

    session = Session()
    form = asdict(TrainForm(size=60, epochs=1, batch_size=8))
    outputs = list(lab.compare(session, ["none", "encoder", "sentiment_head"], **form))
    # In COMPARE_ORDER; the head-frozen one starts from the encoder-frozen run (heads just fitted on this data).
    assert [r.strategy for r in session.runs] == ["nothing frozen", "encoder frozen", "sentiment head frozen"]
    assert {r.data for r in session.runs} == {"60 synthetic sentences"} and "Done" in outputs[-1][2]

    # Both head-frozen runs start from that same model, not one from the other: the last one's frozen
    # sentiment head is the encoder-frozen run's, bit for bit, although the run before it trained that head.
    both = Session()
    list(lab.compare(both, ["encoder", "classification_head", "sentiment_head"], **form))
    fitted, last = both.runs[0].heads, both.model
    assert [r.strategy for r in both.runs] == ["encoder frozen", "topic head frozen", "sentiment head frozen"]
    for key, value in last.sentiment_head.state_dict().items():
        assert torch.equal(value, fitted[f"sentiment_head.{key}"]), key
    assert not torch.equal(last.classifier.linear.weight, fitted["classifier.linear.weight"])  # this one learned

    stopping = Session()
    second = asdict(TrainForm(size=60, epochs=2, batch_size=8))
    for i, _ in enumerate(lab.compare(stopping, ["none", "classification_head"], **second)):
        if i == 5:
            lab.stop(stopping)  # mid-way through the first strategy: the second never starts
    assert [r.strategy for r in stopping.runs] == ["nothing frozen"] and not stopping.running
    with pytest.raises(gr.Error, match="Tick at least one freezing strategy"):
        list(lab.compare(Session(), [], **form))


def test_the_setup_preview_refuses_gradual_unfreezing_with_a_frozen_head(lab):
    from dataclasses import asdict

    _, params = lab.describe_setup(**asdict(TrainForm(size=40, preset="sentiment_head", gradual=True)))
    assert params.startswith("**Check the settings:** gradual unfreezing starts from a frozen encoder")
    _, params = lab.describe_setup(**asdict(TrainForm(size=40, preset="none", gradual=True)))
    assert "opens one more encoder layer each epoch" in params


def test_the_server_keeps_a_bounded_number_of_trained_encoders_and_tells_the_visitor_who_lost_one(lab, monkeypatch):
    """Past the host's cap the least recently used session lets its trained encoder go, as does one idle too
    long or whose visitor left; that visitor is told at their next request, and the shipped model answers."""
    shared = Shared(lab.shared.encoder, lab.shared.default_model, Limits(max_rows=200, max_trained_encoders=2))
    tab, classify_tab = train_tab.TrainTab(shared), ClassifyTab(shared)
    visitors = {key: Session() for key in "abcd"}
    for key, visitor in visitors.items():
        visitor.key = key
    clock = [1000.0]
    monkeypatch.setattr("ui.state.time.monotonic", lambda: clock[0])

    def train(key: str, preset: str = "none") -> None:
        clock[0] += 1
        list(tab.run(TrainForm(size=40, seed=0, preset=preset, epochs=1, batch_size=8), visitors[key]))

    train("a", "encoder")  # heads only: shares the base encoder, costs nothing against the cap
    train("a")
    train("b")
    assert shared.holders.held() == 2 and not visitors["a"].notice
    train("c")  # a third trained encoder: a, the least recently used, lets its go
    a = visitors["a"]
    assert shared.holders.held() == 2 and a.own_encoders() == 0 and a.model is None and a.active_run is None
    assert "to make room for other visitors (this server keeps 2 trained encoders" in a.notice
    assert a.runs[0].heads is not None  # its heads-only run is kept, and can be used again
    clock[0] += 1
    with pytest.warns(UserWarning, match=r"The encoder weights your run #2 trained were let go to make room"):
        classify_tab.classify(TEXTS, a)  # told once, with the shipped model's answer
    assert a.notice == "" and a.model_in_use(shared) is shared.default_model
    assert "the shipped model" in classify_tab.note(a)  # the page's note follows (it said "your model" before)
    a.use_run(1, shared)

    clock[0] += 1
    classify_tab.classify(TEXTS, visitors["b"])  # b is now more recent than c
    train("d")
    assert visitors["c"].own_encoders() == 0 and visitors["b"].own_encoders() == 1 and "make room" in visitors["c"].notice
    shared.visitor_left(gr.Request(session_hash="b"))  # Gradio's unload: the page was closed
    assert visitors["b"].own_encoders() == 0 and "when you left the page" in visitors["b"].notice
    assert shared.holders.held() == 1
    clock[0] += 31 * 60  # d idles past the host's 30 minutes; the next visitor's request lets it go
    train("c")
    assert visitors["d"].own_encoders() == 0 and "after 30 minutes without use" in visitors["d"].notice
    assert shared.holders.held() == 1 and visitors["c"].own_encoders() == 1


def test_stop_while_the_data_loads_ends_the_run_before_it_starts(lab, monkeypatch):
    """Stop pressed while the run reads its data used to answer "No run is going", and the run then began."""
    session = Session()
    list(start(lab, session, seed=0))
    before, replies = session.model, []
    loads = TrainForm.data

    def slow_load(form, shared):
        replies.append(lab.stop(session))  # the visitor presses Stop while the data is read
        return loads(form, shared)

    monkeypatch.setattr(TrainForm, "data", slow_load)
    outputs = list(start(lab, session, seed=1))
    assert replies == ["**Stopping** at the next step…"]
    assert "Stopped before it started" in outputs[-1][2] and "your previous model stays in use" in outputs[-1][2]
    assert session.model is before and len(session.runs) == 1 and not session.running and not session.stop.is_set()


def test_a_run_waiting_in_the_queue_can_be_stopped_and_a_second_one_from_the_page_is_refused(lab):
    """A second /train from the same page used to wait its turn and then replace the first run's model; Stop
    pressed while a run waited answered "No run is going", and the run then began."""
    session, page, visitors = Session(), gr.Request(session_hash="page-1", headers={}, client={"host": "10.0.0.1"}), \
        lab.shared.visitors
    assert visitors.admit("10.0.0.1", "page-1", run=True) is None  # ui.fairness.Admission: /train joined the queue
    assert visitors.admit("10.0.0.1", "page-1", run=True).startswith("A run of yours is already going or waiting")
    assert visitors.admit("10.0.0.1", "page-2", run=True) is None  # another page of the same visitor may
    assert lab.stop(session, page) == "**Stopped**: your run will not start."
    form = asdict(TrainForm(size=60, seed=0, epochs=1, batch_size=8))
    outputs = list(lab.train(session, page, **form))  # its turn comes
    assert "Stopped before it started" in outputs[-1][2] and session.runs == [] and session.model is None
    assert visitors.admit("10.0.0.1", "page-1", run=True) is None  # it ended: the page may train again
    assert len(list(lab.train(session, page, **form))) > 1 and len(session.runs) == 1
    assert lab.stop(session, page) == "No run is going. Press **Start** to train."


def test_choosing_the_shipped_model_and_back_gives_each_run_its_own_answers_again(lab, tmp_path):
    """The Classify tab's model picker: choosing never loses a model, and an uploaded zip becomes one."""
    tab = ClassifyTab(lab.shared)
    session = Session()
    answers = {}
    list(lab.run(TrainForm(size=40, seed=6, preset="encoder"), session))  # #1: heads only
    answers[1] = check_classify(lab, session)
    list(lab.run(TrainForm(size=40, seed=5, preset="none", epochs=1, batch_size=8), session))  # #2: the encoder trains
    answers[2] = check_classify(lab, session)
    shipped = None
    for choice in ("shipped", "run:2", "shipped", "run:1", "shipped", "run:1"):  # back and forth: nothing is lost
        note, picker, _ = tab.choose(choice, session)
        got = check_classify(lab, session)
        if choice == "shipped":
            assert "the shipped model" in note and session.model is None and picker.value == "shipped"
            shipped = shipped or got
            assert [p["probabilities"] for p in got] == [p["probabilities"] for p in shipped]
        else:
            number = int(choice[4:])
            assert f"run #{number}" in note and picker.value == choice
            for a, b in zip(got, answers[number]):
                assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    assert [value for _, value in session.choices()] == ["shipped", "run:2", "run:1"]

    # A saved model, as the Train tab's Download gives it, uploaded: a model like any run, with run #1's answers.
    archive = train_tab.zip_folder(session.model.save(tmp_path / "sentence-lab-model"))
    note, picker, _ = tab.upload(str(archive), session)
    assert "uploaded as sentence-lab-model.zip" in note and picker.value == "run:3"
    for a, b in zip(check_classify(lab, session), answers[1]):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    # Anything else is refused in words, and the model in use stays.
    (tmp_path / "notes.txt").write_text("not a model")
    for bad, says in ((tmp_path / "notes.txt", "not a zip file"), (tmp_path / "missing.zip", "not a model")):
        with pytest.raises(gr.Error, match=says):
            tab.upload(str(bad), session)
    assert session.active_run == 3

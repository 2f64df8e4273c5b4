"""The app through its public API (gradio_client), as another program would use it.

One ``python app.py`` serves the whole module; each test opens its own client, i.e. its own
visitor session. Also: the plot builders never raise.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import plotly.graph_objects as go
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from core import plots
from core.model import Prediction
from tests.app_server import (AG_NEWS, SENTENCES, TRAIN_DEFAULTS, classify, figure, heatmap_scores, running_app,
                              train_args, wait_for)

pytestmark = pytest.mark.app

MAX_EPOCHS = 150  # set through the environment, as a host would


@pytest.fixture(scope="module")
def server():
    with running_app("app-server-api", env={"SENTENCE_LAB_MAX_EPOCHS": str(MAX_EPOCHS)}) as server:
        yield server


@pytest.fixture
def client(server) -> Client:
    return Client(server.url, verbose=False)  # a new client is a new visitor with its own session


# -- the API surface ---------------------------------------------------------------------------------


def test_only_the_six_named_endpoints_are_public(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/embed", "/compare", "/classify", "/score_csv", "/train", "/stop"}
    assert not api["unnamed_endpoints"]
    params = {name: [p["parameter_name"] for p in spec["parameters"]] for name, spec in api["named_endpoints"].items()}
    assert params["/compare"] == params["/embed"] == ["text", "pooling", "normalize"]
    assert params["/classify"] == ["text"]
    assert params["/score_csv"] == ["file", "column"]
    assert params["/train"] == list(TRAIN_DEFAULTS)


# -- Embed & compare ------------------------------------------------------------------------------------


def test_compare_scores_a_sentence_with_itself_as_one_when_normalised(client):
    text = "A cat sleeps on the sofa.\nA cat sleeps on the sofa.\nInterest rates rose again."
    heatmap, words, table = client.predict(text, "mean", True, api_name="/compare")
    scores = heatmap_scores(heatmap)
    assert scores.shape == (3, 3)
    np.testing.assert_allclose(np.diag(scores), 1.0, atol=1e-5)
    np.testing.assert_allclose(scores, scores.T, atol=1e-6)
    assert scores[0, 1] == pytest.approx(1.0, abs=1e-5) and scores[0, 2] < 0.5
    assert table["data"][0][0] == pytest.approx(1.0, abs=1e-4)  # ranked pairs: the identical pair first
    assert "Most alike" in words and "Least alike" in words and "Interest rates rose again." in words

    raw = heatmap_scores(client.predict(text, "mean", False, api_name="/compare")[0])
    assert not np.allclose(np.diag(raw), 1.0, atol=0.05), "without normalisation the scores are raw dot products"
    cls = heatmap_scores(client.predict(text, "cls", True, api_name="/compare")[0])
    assert abs(cls[0, 2] - scores[0, 2]) > 1e-3, "another pooling gives other scores"


def test_embed_gives_the_size_a_map_and_notes_truncation(client):
    long_sentence = "word " * 400
    sentence_map, info, vectors = client.predict(f"A short sentence.\n{long_sentence}", "mean", True, api_name="/embed")
    assert vectors["dimension"] == 384 and "384 numbers" in info
    embeddings = np.array(vectors["embeddings"])
    assert embeddings.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    assert vectors["truncated"] == [1] and vectors["num_tokens"][1] > vectors["max_tokens"]
    assert "sentence 2 has 402 tokens; only its first 256 were read" in info
    points = figure(sentence_map)["data"]  # one trace per sentence, named by it in the legend
    assert [p["customdata"][0] for p in points] == ["A short sentence.", long_sentence.strip()]
    assert points[0]["name"] == "1. A short sentence."
    # Inference runs in the fast mode this CPU keeps within cosine 0.999 of fp32, and says which.
    from core.precision import fast_precision

    assert vectors["precision"] == fast_precision(torch.device("cpu")) and f"computed in {vectors['precision']}" in info


# -- Classify ---------------------------------------------------------------------------------------------


def test_classify_gives_probabilities_that_sum_to_one_and_a_sentiment(client):
    plot, table, predictions = client.predict(SENTENCES + "\nWhat a wonderful, happy day!", api_name="/classify")
    assert len(predictions) == 3 == len(table["data"])
    for p in predictions:
        assert set(p["probabilities"]) == AG_NEWS
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
        assert -1.0 <= p["sentiment"] <= 1.0
    assert [p["label"] for p in predictions[:2]] == ["Sports", "Business"]
    assert predictions[2]["sentiment"] > 0.2 and table["data"][2][2].startswith("positive +")
    assert len([t for t in figure(plot)["data"] if t["type"] == "bar"]) == 6  # topic bars + sentiment bar per sentence


def test_classify_says_unsure_off_topic_and_the_tab_tells_true_failures(client):
    from ui.classify_tab import EXAMPLE_CLASSIFY, KNOWS

    examples = EXAMPLE_CLASSIFY.splitlines()
    odd = ["This lasagna recipe needs more garlic.", "Oh great, another Monday.", "Not bad at all."]
    _, table, predictions = client.predict("\n".join(examples + odd), api_name="/classify")
    rows = table["data"]
    # The tab's four examples keep confident, correct topics.
    assert [r[1].split()[0] for r in rows[:4]] == ["Sports", "Business", "Sci/Tech", "World"]
    assert not any(p["unsure"] for p in predictions[:4]) and all(int(r[1].split()[1][:-1]) >= 90 for r in rows[:4])
    # What the tab says of the model's failures is what it does.
    lasagna, monday, not_bad = rows[4:]
    assert lasagna[1].startswith("Unsure (") and predictions[4]["unsure_reason"]
    assert monday[2].startswith("positive") and not_bad[2].startswith("neutral")
    for sentence in odd:
        assert sentence in KNOWS


def test_a_spreadsheet_scored_through_the_app_is_the_clis_file_row_for_row(client, tmp_path):
    import csv

    from core.datasets import make_synthetic

    data = make_synthetic(1000, seed=3)
    source = tmp_path / "reviews.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "comment", "stars"])
        for i, text in enumerate(data.texts):
            writer.writerow([i, text if i != 7 else "  ", i % 5 + 1])  # one blank text: kept, left unscored
    preview, scored, words = client.predict(handle_file(str(source)), "comment", api_name="/score_csv")
    assert "Scored 999 of 1,000 rows" in words and "1 with a blank text" in words
    assert len(preview["data"]) == 10 and preview["data"][0][0] == data.texts[0]
    cli = tmp_path / "cli.csv"
    subprocess.run([sys.executable, "-m", "core", "predict", "--csv", str(source), "--out", str(cli), "--text-column",
                    "comment", "--quiet"],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    page, ours = Path(scored).read_text(encoding="utf-8").splitlines(), cli.read_text(encoding="utf-8").splitlines()
    assert len(page) == 1001 and page == ours
    assert page[0].startswith("id,comment,stars,topic,topic_confidence,topic_unsure,p_Business")
    # A file over the host's row limit is refused before any work, in words.
    with pytest.raises(AppError, match="6,000 data rows; the limit here is 5,000"):
        client.predict(handle_file(str(_rows(tmp_path, 6000))), "text", api_name="/score_csv")


def _rows(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"{n}.csv"
    path.write_text("text\n" + "".join(f"sentence {i}\n" for i in range(n)), encoding="utf-8")
    return path


# -- Train -------------------------------------------------------------------------------------------------


def test_a_short_run_streams_updates_and_becomes_this_visitors_model(client, tmp_path):
    before = classify(client)
    vectors_before = client.predict(SENTENCES, "mean", True, api_name="/embed")[2]["embeddings"]

    job = client.submit(*train_args(epochs=1), api_name="/train")
    loss_plot, metrics, status, model_zip, note, _, _ = job.result(timeout=300)
    updates = job.outputs()
    assert len(updates) >= 3, "the run streams while it goes"
    assert any("Training" in u[2] for u in updates[:-1])
    assert "Done" in status and "your model" in note.lower()
    traces = {t["name"]: t for t in figure(loss_plot)["data"]}
    assert {"topic · train", "sentiment · train", "topic · validation", "sentiment · validation"} <= set(traces)
    assert len(traces["topic · train"]["x"]) >= 2  # one point per L-BFGS step of the exact fit (frozen encoder)
    assert "fitted exactly" in status
    assert metrics["data"][0][0] == 1 and "Accuracy" in metrics["headers"]

    with zipfile.ZipFile(model_zip) as archive:
        archive.extractall(tmp_path)
    config = json.loads((tmp_path / "sentence-lab-model" / "config.json").read_text())
    assert (tmp_path / "sentence-lab-model" / "heads.safetensors").is_file()
    assert config["heads"]["class_names"] == sorted(AG_NEWS) and config["training"]["config"]["epochs"] == 1

    after = classify(client)
    assert [a["probabilities"] for a in after] != [b["probabilities"] for b in before]
    assert all(sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) for a in after)
    vectors_after = client.predict(SENTENCES, "mean", True, api_name="/embed")[2]["embeddings"]
    assert vectors_after == vectors_before, "training never touches the shared encoder"


@pytest.mark.parametrize("size, checked, where", [(300, 60, "60 held-out rows"),
                                                  (60, 60, "leave-one-out cross-validation over all 60 rows")])
def test_a_run_shows_where_its_topics_go_wrong_on_the_rows_its_accuracy_came_from(client, size, checked, where):
    # 300 rows: the 60 held-out ones. 60 rows: every row, each predicted by a fit without it, as the accuracy is
    # (the exact fit's final heads learn from the held-out rows too, so these cannot be judged on them).
    *_, status, _, _, confusion, topics = client.predict(*train_args(size=size), api_name="/train")
    counts = heatmap_scores(confusion)
    accuracy = re.search(r"topic accuracy ([\d.]+%)", status).group(1)
    assert counts.sum() == checked and plots.percent(np.trace(counts) / counts.sum()) == accuracy
    drawn = figure(confusion)
    assert drawn["data"][0]["y"] == drawn["data"][0]["x"] == sorted(AG_NEWS)  # rows: true topic, columns: predicted
    assert where in drawn["layout"]["title"]["text"]
    assert topics["headers"] == ["Topic", "Precision", "Recall", "F1", "Rows"]
    assert {row[0] for row in topics["data"]} == AG_NEWS and sum(row[4] for row in topics["data"]) == checked
    for name, _, recall, _, rows in topics["data"]:  # recall: the share of a topic's rows on the diagonal
        i = sorted(AG_NEWS).index(name)
        assert rows == counts[i].sum() and recall == plots.percent(counts[i, i] / rows)


def test_stop_ends_the_run_at_the_next_step_and_keeps_the_model(client):
    # Long enough that Stop ends it: the whole encoder trains (the most rows, small steps, many epochs).
    job = client.submit(*train_args(size=1000, epochs=100, batch_size=4, learning_rate=0.0005, preset="none"),
                        api_name="/train")
    # After the first step: a Stop before it keeps the previous model (see test_stop.py).
    wait_for(job, lambda out: re.search(r"· step [1-9]", out[2]))
    assert "Stopping" in client.predict(api_name="/stop")
    loss_plot, metrics, status, model_zip, note, confusion, topics = job.result(timeout=300)
    assert "Stopped" in status
    # A stopped run still shows where its topics go wrong, on the 200 held-out rows (best epoch or as it stopped).
    assert heatmap_scores(confusion).sum() == 200 and {row[0] for row in topics["data"]} <= AG_NEWS
    assert len(metrics["data"]) < 100
    assert model_zip and Path(model_zip).stat().st_size > 0
    assert "your model" in note.lower() and all(len(p["probabilities"]) == 4 for p in classify(client))
    assert "No run is going" in client.predict(api_name="/stop")


def test_two_visitors_training_at_once_keep_their_own_models(server, tmp_path):
    pets = tmp_path / "pets.csv"
    rows = [("The cat purred on my lap.", "cats"), ("My kitten chased a ball of yarn.", "cats"),
            ("The cat ignored its new toy.", "cats"), ("Our tabby sleeps all afternoon.", "cats"),
            ("The cat climbed the curtains again.", "cats"), ("A kitten meowed at the door.", "cats"),
            ("The dog fetched the stick.", "dogs"), ("My puppy barked at the mailman.", "dogs"),
            ("The dog wagged its tail happily.", "dogs"), ("Our beagle loves long walks.", "dogs"),
            ("The puppy chewed my shoe.", "dogs"), ("The dog dug a hole in the garden.", "dogs")]
    pets.write_text("text,label\n" + "\n".join(f'"{t}",{label}' for t, label in rows) + "\n")
    alice, bob, carol = (Client(server.url, verbose=False) for _ in range(3))

    alice_job = alice.submit(*train_args(source="csv", csv_file=handle_file(str(pets)), epochs=30), api_name="/train")
    bob_job = bob.submit(*train_args(epochs=3), api_name="/train")
    assert "Done" in alice_job.result(timeout=300)[2] and "Done" in bob_job.result(timeout=300)[2]

    pets_said = classify(alice, "A kitten napped in the sun.\nThe puppy barked all night.")
    assert all(set(p["probabilities"]) == {"cats", "dogs"} and p["sentiment"] is None for p in pets_said)
    assert [p["label"] for p in pets_said] == ["cats", "dogs"]
    assert all(set(p["probabilities"]) == AG_NEWS for p in classify(bob))
    shipped = classify(carol)
    assert all(set(p["probabilities"]) == AG_NEWS for p in shipped)
    assert [p["probabilities"] for p in shipped] != [p["probabilities"] for p in classify(bob)]


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint, args", [("/compare", ("  \n ", "mean", True)), ("/embed", ("", "mean", True)),
                                            ("/classify", ("\n\n",))])
def test_empty_text_is_a_clear_error(client, endpoint, args):
    with pytest.raises(AppError, match="Type at least one sentence"):
        client.predict(*args, api_name=endpoint)


def test_bad_settings_and_data_are_clear_errors_and_the_app_keeps_serving(client, tmp_path):
    with pytest.raises(AppError, match="Learning rate must be > 0"):
        client.predict(*train_args(learning_rate=0), api_name="/train")
    with pytest.raises(AppError, match="'median'.* is not in the list of choices: \\['mean', 'cls'"):
        client.predict("One sentence.", "median", True, api_name="/compare")
    broken = tmp_path / "broken.csv"
    broken.write_text("text,label,sentiment\nGood film.,Film,0.9\nBad film.,Film,abc\n")
    with pytest.raises(AppError, match=r"broken\.csv: row 3, column 'sentiment': 'abc' is not a number"):
        client.predict(*train_args(source="csv", csv_file=handle_file(str(broken))), api_name="/train")
    with pytest.raises(AppError, match="Upload a CSV file first"):
        client.predict(*train_args(source="csv"), api_name="/train")
    with pytest.raises(AppError, match=f"Value {MAX_EPOCHS + 1} is greater than maximum value {MAX_EPOCHS}"):
        client.predict(*train_args(epochs=MAX_EPOCHS + 1), api_name="/train")
    heatmap = client.predict("Still here?\nYes, still serving.", "mean", True, api_name="/compare")[0]
    assert heatmap_scores(heatmap).shape == (2, 2)


def test_a_host_bounds_runs_through_environment_variables(monkeypatch):
    import app  # importing the app builds nothing and starts no server
    from ui.state import Limits

    assert app.Limits is Limits
    monkeypatch.setenv("SENTENCE_LAB_MAX_EPOCHS", "7")
    monkeypatch.setenv("SENTENCE_LAB_MAX_SECONDS", "2.5")
    limits = Limits.from_env()
    assert (limits.max_epochs, limits.max_seconds, limits.max_rows) == (7, 2.5, Limits.max_rows)
    monkeypatch.setenv("SENTENCE_LAB_MAX_ROWS", "lots")
    with pytest.raises(ValueError, match="SENTENCE_LAB_MAX_ROWS='lots' is not a whole number"):
        Limits.from_env()


def test_core_never_imports_gradio():
    code = "import sys, core, core.plots; assert 'gradio' not in sys.modules, 'core imported gradio'"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)


# -- the plot builders ------------------------------------------------------------------------------------


def test_plot_builders_turn_failures_into_a_message_figure():
    broken = plots.similarity_heatmap(["a", "b"], np.zeros((3, 3)))
    assert isinstance(broken, go.Figure) and not broken.data
    assert "Could not draw this plot" in broken.layout.annotations[0].text
    ok = plots.prediction_figure([Prediction("x", "A", {"A": 0.7, "B": 0.3}, -0.5)], ["A", "B"])
    assert len(ok.data) == 2 and "negative -0.50" in [a.text for a in ok.layout.annotations]
    assert "Press Start" in plots.loss_curves({}).layout.annotations[0].text


def test_crowded_plots_stay_legible():
    few = plots.similarity_heatmap(["a", "b", "c"], np.eye(3))  # room in each cell: the scores are written
    assert few.data[0].texttemplate == "%{z:.2f}" and not few.data[0].showscale and few.data[0].y[0] == "1. a"
    many = plots.similarity_heatmap([f"sentence {i}" for i in range(20)], np.eye(20))
    assert many.data[0].texttemplate == "" and many.data[0].showscale and list(many.data[0].y[:2]) == ["1.", "2."]
    assert many.layout.yaxis.type == "category"  # "1." is a label, not the number 1
    # Three points on top of each other and one far away: the three numbers go three different ways.
    places = plots.label_places(np.array([[0.0, 0.0], [0.01, 0.01], [0.02, 0.0], [1.0, 1.0]]))
    assert len(set(places[:3])) == 3 and places[3] == "top center"
    # Every figure draws on transparent paper, so the page's light or dark background shows through.
    for drawn in (few, plots.sentence_map(["a", "b"], np.eye(2)), plots.loss_curves({}), plots.runs_figure({}),
                   plots.prediction_figure([Prediction("x", "A", {"A": 1.0}, 0.1)], ["A"])):
        assert drawn.layout.template.layout.paper_bgcolor == "rgba(0,0,0,0)" and drawn.layout.paper_bgcolor is None


def test_the_confusion_figure_counts_true_topics_down_the_rows_and_stays_legible():
    matrix = [[5, 1, 0], [2, 6, 0], [0, 0, 4]]
    fig = plots.confusion_figure(["World", "Sports", "Business"], matrix, note="18 held-out rows")
    (heat,) = fig.data
    assert [list(row) for row in heat.z] == matrix and list(heat.y) == list(heat.x) == ["World", "Sports", "Business"]
    assert heat.texttemplate == "%{z}" and not heat.showscale  # room in each cell: the counts are written
    assert list(heat.customdata[1][0]) == ["Sports", "World", "25%"]  # 2 of Sports' 8 rows went to World
    assert fig.layout.yaxis.type == fig.layout.xaxis.type == "category" and fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.title.text.startswith("Rows: true topic · columns: predicted") and "18 held-out rows" in \
        fig.layout.title.text and not fig.layout.xaxis.title.text and not fig.layout.yaxis.title.text
    assert len(fig.layout.shapes) == 3  # the diagonal, outlined
    assert fig.layout.template.layout.paper_bgcolor == "rgba(0,0,0,0)" and fig.layout.paper_bgcolor is None
    # Many topics: no room for numbers on a phone, so the colour bar gives the scale; long names are cut short,
    # and numbered when cutting makes two of them the same.
    names = [f"A rather long topic name {i}" for i in range(12)]
    many = plots.confusion_figure(names, np.eye(12, dtype=int) * 3)
    assert many.data[0].texttemplate == "" and many.data[0].showscale
    assert many.data[0].y[0] == "1. A rather lo…" and list(many.data[0].x[:2]) == ["1", "2"]  # columns: numbers
    assert len(set(many.data[0].y)) == 12 and many.data[0].customdata[0][0][0] == names[0]
    bbc = plots.confusion_figure(["business", "entertainment", "politics", "sport", "tech"], np.eye(5, dtype=int) * 150)
    assert list(bbc.data[0].x) == list(bbc.data[0].y) == ["business", "entertainme…", "politics", "sport", "tech"]
    assert bbc.data[0].texttemplate == "%{z}" and not bbc.data[0].showscale  # five cells: room for 3 digits
    eight = plots.confusion_figure(list("abcdefgh"), np.eye(8, dtype=int) * 100)
    assert eight.data[0].texttemplate == "" and list(eight.data[0].x) == list("abcdefgh")  # 3 digits: no room at 8
    broken = plots.confusion_figure(["a", "b"], [[1, 2, 3]])
    assert not broken.data and "Could not draw this plot" in broken.layout.annotations[0].text


def test_words_for_scores():
    assert plots.sentiment_word(-0.6) == "negative" and plots.sentiment_word(0.05) == "neutral"
    assert plots.sentiment_word(0.9, (0.0, 1.0)) == "positive" and plots.sentiment_word(0.5, (0.0, 1.0)) == "neutral"
    assert plots.similarity_word(0.95) == "nearly the same meaning" and plots.similarity_word(0.05) == "unrelated"
    coords, share = plots.pca_2d(np.eye(3))
    assert coords.shape == (3, 2) and share.sum() <= 1.0 + 1e-9


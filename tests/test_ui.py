"""The app's rooms without a server: page values -> core values, core errors -> page messages."""

from __future__ import annotations

import gradio as gr
import pytest

from core.config import RECIPES
from core.errors import ConfigError
from ui.inputs import TrainForm, sentences, shown_in_page
from ui.state import Limits
from ui.embed_tab import pairs_in_words
from core.metrics import ranked_pairs
from core.plots import runs_figure

import numpy as np


def test_a_users_mistake_is_shown_as_it_is_and_a_bug_as_something_went_wrong(caplog):
    with pytest.raises(gr.Error) as mistake, shown_in_page():
        raise ConfigError("learning_rate must be > 0, got -1")
    assert mistake.value.message == "Learning rate must be > 0, got -1" and mistake.value.title == "Please check the input"
    with pytest.raises(gr.Error) as bug, shown_in_page():
        raise ValueError("a bug's ValueError is not the user's mistake")
    assert bug.value.title == "Something went wrong"
    assert "The server could not finish this (ValueError: a bug's ValueError" in bug.value.message
    assert "handler failed" in caplog.text  # logged with its traceback


def test_the_train_form_turns_page_values_into_a_checked_config():
    config = TrainForm(epochs="7", learning_rate="0.01", batch_size=8.0, lr_decay=0.8, seed=3).training_config(Limits())
    assert (config.epochs, config.learning_rate, config.batch_size, config.layer_lr_decay, config.seed) == (7, 0.01, 8, 0.8, 3)
    assert TrainForm().training_config(Limits()).layer_lr_decay is None  # 1.0 on the slider: off
    with pytest.raises(gr.Error, match="At most 5 epochs here"):
        TrainForm(epochs=6).training_config(Limits(max_epochs=5))
    with pytest.raises(gr.Error, match="Batch size must be a whole number, got 2.5"):
        TrainForm(batch_size=2.5).training_config(Limits())
    with pytest.raises(gr.Error, match="Learning rate is empty"):
        TrainForm(learning_rate=" ").training_config(Limits())
    # The fine-tuning recipe: its own rates and protections, the page's epochs, batch size and seed.
    recipe = TrainForm(preset="finetune", epochs=3, batch_size=8, seed=2).training_config(Limits())
    assert (recipe.freeze, recipe.topic_head_first, recipe.keep_similarity > 0) == ("none", True, True)
    assert (recipe.epochs, recipe.batch_size, recipe.seed, recipe.precision) == (3, 8, 2, "auto")
    assert (recipe.learning_rate, recipe.encoder_learning_rate) == (RECIPES["finetune"]["learning_rate"],
                                                                    RECIPES["finetune"]["encoder_learning_rate"])


def test_sentences_are_the_non_blank_lines_within_the_limits():
    given = sentences("  one\n\n\u200b\n" + "x" * 30 + "\n", Limits(max_chars=20))
    assert given.lines == ["one", "x" * 20] and given.cut == [1]
    with pytest.raises(gr.Error, match="At most 2 sentences at a time here; you gave 3"):
        sentences("a\nb\nc", Limits(max_sentences=2))


def test_a_huge_text_body_is_refused_before_it_is_split():
    limits = Limits(max_sentences=2, max_chars=10)  # at most 2 * (10 + 1) = 22 characters a request
    assert sentences("a" * 10 + "\n" + "b" * 11, limits).lines == ["a" * 10, "b" * 10]
    with pytest.raises(gr.Error, match=r"The text is 23 characters; this server reads at most 22 per request "
                                       r"\(2 sentences of up to 10 characters\)"):
        sentences("x" * 23, limits)


def test_pairs_are_ranked_and_told_in_words():
    scores = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.3], [0.1, 0.3, 1.0]])
    pairs = ranked_pairs(scores)
    assert pairs == [(0.9, 0, 1), (0.3, 1, 2), (0.1, 0, 2)]
    words = pairs_in_words(["a", "b", "c"], pairs, normalize=True)
    assert "**Most alike:** “a” and “b”: **0.90**" in words and "**Least alike:** “a” and “c”: **0.10**" in words
    assert pairs_in_words(["a"], [], normalize=True).startswith("Add a second line")


def test_a_run_near_guessing_says_it_barely_learned_and_what_to_add():
    from ui.train_tab import barely_learned

    assert barely_learned({"accuracy": 0.9, "pearson": 0.7}, 4) == ""
    weak = barely_learned({"accuracy": 0.3, "pearson": float("nan")}, 4)
    assert "**It barely learned:**" in weak and "close to guessing (25% for 4 topics)" in weak
    assert "8 or more per topic" in weak and "sentiment barely follows" in weak


def test_the_status_says_where_its_figures_come_from_and_when_they_are_rough():
    from core.training import TrainResult
    from ui.train_tab import barely_learned, result_words

    def words(metrics, measured_on="the held-out rows"):
        result = TrainResult(history=[{}], best_epoch=0, best_metrics=metrics, stopped=False, stopped_early=False,
                             steps=9, seconds=1.0, freeze=None, measured_on=measured_on)
        return result_words(result, 1.0, timed_out=False, limit_s=180)

    assert "topic accuracy 90% on the held-out rows." in words({"accuracy": 0.9, "n_classification": 200})
    assert "rough" not in words({"accuracy": 0.9, "n_classification": 200})
    assert "Only 4 rows were held out, so take these figures as rough." in words({"accuracy": 0.75, "n_classification": 4})
    cv = words({"accuracy": 17 / 24, "n_classification": 24}, "leave-one-out cross-validation over all 24 rows")
    assert "topic accuracy 70.8% by leave-one-out cross-validation over all 24 rows" in cv and "Best epoch" not in cv
    weak = barely_learned({"accuracy": 0.3}, 4, "leave-one-out cross-validation over all 24 rows")
    assert weak.startswith("<br>**It barely learned:** on leave-one-out cross-validation over all 24 rows its topic")


def test_the_per_topic_table_puts_the_weakest_topic_first_and_writes_percentages_as_the_tab_does():
    import torch

    from core.losses import IGNORE_LABEL
    from core.training import topic_breakdown
    from ui.train_tab import TOPIC_COLUMNS, breakdown_outputs, topic_table

    class Heads:  # what topic_breakdown reads of a model
        class_names = ["Business", "Sports", "World", "Weather"]

    # True topics down, predictions across: Sports is always right, Business half the time, World is never
    # predicted, and Weather neither has rows nor is predicted. The last row has no topic and counts nowhere.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, IGNORE_LABEL])
    predicted = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0, 1, 2])
    breakdown = topic_breakdown(Heads(), torch.nn.functional.one_hot(predicted, 4).float(), labels)
    assert breakdown["confusion"]["matrix"] == [[2, 2, 0, 0], [0, 3, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    table = topic_table(breakdown)
    assert list(table.columns) == TOPIC_COLUMNS
    assert table.values.tolist() == [["World", "—", "0%", "0%", 2],  # never predicted: no precision to give
                                     ["Business", "66.7%", "50%", "57.1%", 4],
                                     ["Sports", "50%", "100%", "66.7%", 3]]
    assert topic_breakdown(Heads(), None, labels) is None and topic_table(None).columns.tolist() == TOPIC_COLUMNS
    figure, empty = breakdown_outputs(None, missing="This data has no topics.")
    assert not figure.data and figure.layout.annotations[0].text == "This data has no topics." and empty.empty


def test_the_runs_figure_draws_one_line_per_run_and_marks_the_one_in_use():
    fig = runs_figure({"#1 encoder frozen": [(1, 0.4)], "#2 nothing frozen": [(1, 0.5), (2, 0.3)]},
                            active="#2 nothing frozen")
    assert [t.name for t in fig.data] == ["#1 encoder frozen", "#2 nothing frozen"]
    assert fig.data[1].line.width > fig.data[0].line.width and list(fig.data[1].y) == [0.5, 0.3]
    assert not runs_figure({}).data  # no run yet: a message instead


def test_download_sizes_read_as_people_read_them():
    from ui.train_tab import file_size

    assert [file_size(n) for n in (512, 9_216, 999_499, 1_000_000, 87_345_678)] == \
        ["512 bytes", "9 KB", "999 KB", "1.0 MB", "87.3 MB"]  # a 9 KB heads-only model said "0.0 MB"


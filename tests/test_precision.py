"""Precision modes: exact fp32 by default, a half-precision copy only where the hardware is fast at it."""

import numpy as np
import pytest
import torch

from core.precision import HalfCopies, check_precision, cpu_has_fast_bf16, fast_precision

SENTENCES = ["A man is playing a guitar.", "Stocks slid on Wall Street.", "ok", "The new phone has a faster chip. " * 20]


def test_unknown_precision_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid precisions are: fp32, bf16, fp16, auto"):
        check_precision("int8", torch.device("cpu"))


def test_auto_and_bf16_follow_the_cpu(real_encoder):
    result = real_encoder.embed(SENTENCES, precision="auto")
    assert result.precision == fast_precision(torch.device("cpu"))
    if cpu_has_fast_bf16():
        assert result.precision == "bf16"
        fp32 = real_encoder.encode(SENTENCES)
        fast = result.embeddings
        cos = (fp32 * fast).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(fast, axis=1))
        assert cos.min() >= 0.999
    else:  # bf16 is emulated and ~8x slower on such CPUs: refused, and auto stays exact
        assert result.precision == "fp32"
        assert np.array_equal(result.embeddings, real_encoder.encode(SENTENCES))
        with pytest.raises(ValueError, match="precision 'bf16' is not supported on cpu here"):
            real_encoder.encode(SENTENCES, precision="bf16")


def test_half_copy_is_rebuilt_after_the_weights_change(tiny_encoder):
    copies = HalfCopies()
    first = copies.get(tiny_encoder.backbone, torch.bfloat16)
    assert copies.get(tiny_encoder.backbone, torch.bfloat16) is first
    assert next(first.parameters()).dtype == torch.bfloat16
    assert next(tiny_encoder.backbone.parameters()).dtype == torch.float32  # the original stays exact
    with torch.no_grad():
        tiny_encoder.backbone.embeddings.word_embeddings.weight.add_(1.0)  # what an optimizer step does
    second = copies.get(tiny_encoder.backbone, torch.bfloat16)
    assert second is not first
    assert torch.equal(second.embeddings.word_embeddings.weight,
                       tiny_encoder.backbone.embeddings.word_embeddings.weight.to(torch.bfloat16))


def test_half_copy_is_not_part_of_the_model(tiny_encoder):
    tiny_encoder._half.get(tiny_encoder.backbone, torch.bfloat16)
    assert not any("_half" in name for name in tiny_encoder.state_dict())
    assert all(p.dtype == torch.float32 for p in tiny_encoder.parameters())

"""Pooling against hand-computed values on a padded batch, with padding on either side."""

import pytest
import torch

from core.pooling import POOLING_FUNCTIONS, pool

# Two sentences, T=3, H=2. Row 0 has 3 real tokens; row 1 has 2 real tokens and one pad.
X = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
                  [[1.0, -1.0], [3.0, 5.0], [100.0, 100.0]]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])

EXPECTED = {
    "mean": [[3.0, 4.0], [2.0, 2.0]],
    "mean_sqrt_len": [[9.0 / 3**0.5, 12.0 / 3**0.5], [4.0 / 2**0.5, 4.0 / 2**0.5]],
    "max": [[5.0, 6.0], [3.0, 5.0]],
    "cls": [[1.0, 2.0], [1.0, -1.0]],
    "last_token": [[5.0, 6.0], [3.0, 5.0]],
    # weights 1,2,3 and 1,2: (1*1+2*3+3*5)/6, ...
    "weighted_mean": [[22.0 / 6, 28.0 / 6], [7.0 / 3, 9.0 / 3]],
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_pooling_right_padding(mode):
    assert torch.allclose(pool(X, MASK, mode), torch.tensor(EXPECTED[mode]), atol=1e-6)


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_pooling_left_padding_gives_the_same_vectors(mode):
    # Move row 1's pad to the front: the pooled vector must not change.
    x = X.clone()
    x[1] = torch.tensor([[100.0, 100.0], [1.0, -1.0], [3.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert torch.allclose(pool(x, mask, mode), torch.tensor(EXPECTED[mode]), atol=1e-6)


def test_padding_values_never_leak():
    x = X.clone()
    x[1, 2] = torch.tensor([-1e6, 1e6])
    for mode in POOLING_FUNCTIONS:
        assert torch.allclose(pool(x, MASK, mode)[1], torch.tensor(EXPECTED[mode][1]), atol=1e-5), mode


def test_all_padding_row_gives_zeros_not_nan():
    out = pool(torch.ones(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), "mean")
    assert torch.equal(out, torch.zeros(1, 3))


def test_unknown_mode_lists_valid_modes():
    with pytest.raises(ValueError, match=r"Unknown pooling mode 'avg'.*mean, cls, max, mean_sqrt_len, weighted_mean, last_token"):
        pool(X, MASK, "avg")

"""Where and how computation runs: the device, the seed, and eval mode for inference."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .errors import ConfigError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for, or CUDA when there is one, else the CPU. A device this machine does not
    have is the user's mistake (ConfigError), not a crash deep inside torch."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {device!r} ({exc}); use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} is not available here: this torch has no usable CUDA GPU; use cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} is not available here: there are {torch.cuda.device_count()} GPUs")
    if chosen.type == "meta":
        raise ConfigError(f"device {device!r} holds no values, so nothing can run on it; use cpu or cuda")
    if chosen.type not in ("cpu", "cuda"):  # mps, xpu, ...: available only if a tensor can be made there
        try:
            torch.empty(1, device=chosen)
        except (RuntimeError, AssertionError, ValueError) as exc:
            reason = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__  # torch's first sentence
            raise ConfigError(f"device {device!r} is not available here ({reason}); use cpu") from None
    return chosen


def seed_everything(seed: int) -> None:
    """One call for reproducibility: Python, numpy and torch generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)

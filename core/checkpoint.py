"""A training run's checkpoint: the model as an ordinary saved folder, plus ``checkpoint/`` with what the
run needs to go on exactly (optimizer moments, schedule, random generators, the best weights so far),
in safetensors and JSON only, like every folder we write.

    python -m core train ... --out DIR     # DIR is a checkpoint after every epoch, and after Ctrl-C
    python -m core train --resume DIR      # goes on from it; ends with the uninterrupted run's weights

A checkpoint is written as every folder is (core.folders.write_folder): beside DIR, then swapped in, so
DIR is always either what it was before or a complete checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import folders
from .errors import ModelFolderError
from .model import MultiTaskModel
from .training import TrainState

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
TENSORS_FILE = "state.safetensors"
_SCALARS = ("epoch", "step", "global_step", "sums", "history", "best_score", "best_epoch", "best_metrics",
            "best_breakdown", "bad_epochs", "scheduler", "scaler", "seconds")


def save_checkpoint(model: MultiTaskModel, state: TrainState, folder: str | os.PathLike, run: dict[str, Any]) -> Path:
    """Write ``model`` to ``folder`` as a saved model that also holds ``state`` and ``run`` (the settings
    that rebuild the run's data and config: the CLI's arguments)."""
    tensors: dict[str, torch.Tensor] = {"epoch_rng": state.epoch_rng, "rng": state.rng}
    if state.cuda_rng is not None:
        tensors["cuda_rng"] = state.cuda_rng
    if state.teacher is not None:
        tensors["teacher"] = state.teacher
    for name, value in (state.best_state or {}).items():
        tensors[f"best.{name}"] = value
    for index, moments in state.optimizer["state"].items():
        for key, value in moments.items():
            tensors[f"optimizer.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = {key: getattr(state, key) for key in _SCALARS}
    meta |= {"optimizer_groups": state.optimizer["param_groups"], "has_best_state": state.best_state is not None,
             "run": run}

    def write(tmp: Path) -> None:
        (tmp / CHECKPOINT_DIR).mkdir()
        folders.save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                             tmp / CHECKPOINT_DIR / TENSORS_FILE)
        folders.write_json(tmp / CHECKPOINT_DIR / STATE_FILE, meta)

    return model.save(folder, extra=write)


def is_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CHECKPOINT_DIR / STATE_FILE).is_file()


def read_checkpoint(folder: str | os.PathLike) -> tuple[TrainState, dict[str, Any]]:
    """The state and run settings saved in ``folder`` (load the model itself with MultiTaskModel.load)."""
    folder = Path(folder)
    if not is_checkpoint(folder):
        raise ModelFolderError(f"{folder} holds no training checkpoint ({CHECKPOINT_DIR}/{STATE_FILE} is missing): "
                               "it is a finished model or not ours. --resume goes on from a run that was interrupted")
    meta = folders.read_json(folder / CHECKPOINT_DIR / STATE_FILE, "checkpoint state")
    tensors = folders.read_tensors(folder / CHECKPOINT_DIR / TENSORS_FILE)
    try:
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                moments.setdefault(int(index), {})[key] = value
        best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
        state = TrainState(
            **{key: meta[key] for key in _SCALARS}, epoch_rng=tensors["epoch_rng"], rng=tensors["rng"],
            cuda_rng=tensors.get("cuda_rng"), teacher=tensors.get("teacher"),
            best_state=best if meta["has_best_state"] else None,
            optimizer={"state": moments, "param_groups": meta["optimizer_groups"]})
        run = dict(meta["run"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(f"{folder}/{CHECKPOINT_DIR} is not a checkpoint Sentence Lab wrote "
                               f"(edited, or from another version?): {type(exc).__name__} {exc}") from None
    return state, run

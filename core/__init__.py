"""Sentence Lab core: sentence embeddings with a topic head and a sentiment head."""

from __future__ import annotations

from .version import __version__
from .config import DEFAULT_MODEL, FREEZE_PRESETS, POOLING_MODES, EncoderConfig, HeadsConfig, TrainingConfig
from .data import Batch, Example, MultiTaskDataset, collate, read_csv, read_csvs
from .datasets import StsPairs, make_synthetic, read_sts
from .errors import ConfigError, DataError, ModelFolderError, SentenceLabError
from .encoder import EncodeResult, SentenceEncoder, resolve_model_path
from .freezing import (FreezeReport, apply_preset, freeze, freeze_report, parameter_groups, preview, unfreeze,
                       unfreeze_top_layers)
from .losses import LossOutput, MultiTaskLoss
from .model import MultiTaskModel
from .outputs import MultiTaskOutput, Prediction
from .record import TrainingRecord
from .training import (Deadline, DoneEvent, EpochEvent, PrepareEvent, StartEvent, StepEvent, TrainResult,
                       ValidationEvent, evaluate, fit, train)

__all__ = [
    "DEFAULT_MODEL", "FREEZE_PRESETS", "POOLING_MODES", "EncoderConfig", "HeadsConfig", "TrainingConfig",
    "Batch", "Example", "MultiTaskDataset", "StsPairs", "collate", "make_synthetic", "read_csv", "read_csvs", "read_sts",
    "ConfigError", "DataError", "ModelFolderError", "SentenceLabError",
    "EncodeResult", "SentenceEncoder", "resolve_model_path",
    "FreezeReport", "apply_preset", "freeze", "freeze_report", "parameter_groups", "preview", "unfreeze",
    "unfreeze_top_layers", "TrainingRecord",
    "LossOutput", "MultiTaskLoss", "MultiTaskModel", "MultiTaskOutput", "Prediction",
    "Deadline", "DoneEvent", "EpochEvent", "PrepareEvent", "StartEvent", "StepEvent", "TrainResult", "ValidationEvent", "evaluate", "fit", "train",
]

"""Sentence Lab core: sentence embeddings with a topic head and a sentiment head."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import DEFAULT_MODEL, FREEZE_PRESETS, POOLING_MODES, EncoderConfig, HeadsConfig, TrainingConfig
from .data import DataError, MultiTaskDataset, StsPairs, make_synthetic, read_csv, read_csvs, read_sts
from .encoder import EncodeResult, SentenceEncoder, resolve_model_path
from .freezing import FreezeReport, apply_preset, freeze, freeze_report, parameter_groups, unfreeze, unfreeze_top_layers
from .losses import LossOutput, MultiTaskLoss
from .model import MultiTaskModel, MultiTaskOutput, Prediction
from .training import DoneEvent, EpochEvent, StartEvent, StepEvent, TrainResult, ValidationEvent, evaluate, fit, train

__all__ = [
    "DEFAULT_MODEL", "FREEZE_PRESETS", "POOLING_MODES", "EncoderConfig", "HeadsConfig", "TrainingConfig",
    "DataError", "MultiTaskDataset", "StsPairs", "make_synthetic", "read_csv", "read_csvs", "read_sts",
    "EncodeResult", "SentenceEncoder", "resolve_model_path",
    "FreezeReport", "apply_preset", "freeze", "freeze_report", "parameter_groups", "unfreeze", "unfreeze_top_layers",
    "LossOutput", "MultiTaskLoss", "MultiTaskModel", "MultiTaskOutput", "Prediction",
    "DoneEvent", "EpochEvent", "StartEvent", "StepEvent", "TrainResult", "ValidationEvent", "evaluate", "fit", "train",
]

"""TrainingRecord: how a model was made and what it scored, typed.

Training fills it, the CLI adds the data files, ``evaluate --record`` adds test figures; the
model saves it into config.json and the model card renders it. A folder saved before this
record existed, or one whose record was edited by hand, still loads: what cannot be read back
is dropped with a warning, never an error.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import TrainingConfig

logger = logging.getLogger(__name__)

# The keys this record owns in a saved config.json.
RECORD_KEYS = ("training", "metrics", "data")


@dataclass
class DataSummary:
    """Rows in a data set, and how many carry each task's target."""

    rows: int
    labelled: int
    with_sentiment: int
    class_names: list[str] = field(default_factory=list)


@dataclass
class TrainingRecord:
    """What a model was trained on and with, and the figures it reached.

    Attributes:
        config: the run's settings (the freezing preset is ``config.freeze``); None: not trained in the lab.
        train_data, validation_data: row counts of the data the run saw.
        files: where the data came from, per split ("train": ["ag_news/train.csv", ...]).
        epochs_run: epochs actually run (early stopping or Stop may end a run before ``config.epochs``).
        best_epoch: the epoch (from 0) whose weights the model kept; None without validation.
        stopped: Stop (or a time limit) ended the run.
        steps, seconds: optimizer steps and wall time of the run.
        metrics: {"validation": {"accuracy": ...}, "test": {"sst/test.csv": {...}}}.
        head_fit: how heads on a frozen encoder were fitted exactly, per task: the L2 penalty, how it was
            chosen, L-BFGS iterations; and which rows the final fit used.
    """

    config: TrainingConfig | None = None
    train_data: DataSummary | None = None
    validation_data: DataSummary | None = None
    files: dict[str, list[str]] = field(default_factory=dict)
    epochs_run: int | None = None
    best_epoch: int | None = None
    stopped: bool = False
    steps: int = 0
    seconds: float = 0.0
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    head_fit: dict[str, Any] = field(default_factory=dict)

    def add_test_metrics(self, name: str, metrics: dict[str, Any]) -> None:
        self.metrics.setdefault("test", {})[name] = metrics

    def to_config(self) -> dict[str, Any]:
        """The config.json keys of this record ("training", "metrics", "data"); absent parts are left out."""
        out: dict[str, Any] = {}
        if self.config is not None:
            out["training"] = {
                "config": self.config.to_dict(),
                "data": {"train": _dict_or_none(self.train_data), "validation": _dict_or_none(self.validation_data)},
                "epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "stopped": self.stopped,
                "steps": self.steps, "seconds": round(self.seconds, 2),
            } | ({"head_fit": self.head_fit} if self.head_fit else {})
        if self.metrics:
            out["metrics"] = self.metrics
        if self.files:
            out["data"] = self.files
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainingRecord:
        """The record in a saved config.json; parts that do not read back are dropped (and logged)."""
        record = cls()
        training = config.get("training")
        if isinstance(training, dict):
            try:
                record.config = TrainingConfig.from_dict(training.get("config"))
                data = training.get("data") or {}
                record.train_data, record.validation_data = (_summary(data.get(split)) for split in ("train", "validation"))
                record.epochs_run = _int_or_none(training.get("epochs_run"))
                record.best_epoch = _int_or_none(training.get("best_epoch"))
                record.stopped = bool(training.get("stopped", False))
                record.steps = int(training.get("steps") or 0)
                record.seconds = float(training.get("seconds") or 0.0)
                head_fit = training.get("head_fit")
                record.head_fit = head_fit if isinstance(head_fit, dict) else {}
            except (TypeError, ValueError, AttributeError) as exc:
                logger.warning("the saved training record does not read back (%s); it is left out", exc)
                record = cls()
        metrics = config.get("metrics")
        if isinstance(metrics, dict):
            record.metrics = {k: v for k, v in metrics.items() if isinstance(v, dict)}
        files = config.get("data")
        if isinstance(files, dict):
            record.files = {k: [str(f) for f in v] for k, v in files.items() if isinstance(v, list)}
        return record


def _dict_or_none(summary: DataSummary | None) -> dict[str, Any] | None:
    return asdict(summary) if summary is not None else None


def _summary(value: Any) -> DataSummary | None:
    return DataSummary(**value) if isinstance(value, dict) else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

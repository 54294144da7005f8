"""Training progress as the server reports it, in a form the Widget and the command line can show.

The trainer writes its progress to ``/info`` (``train_stats[<model>]``: version, status, epoch,
max_epochs, loss, per-structure validation Dice) and MONAI Label's ``/train`` says whether a task is
running. ``TrainingProgress`` joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .client import MODEL


@dataclass(frozen=True)
class TrainingProgress:
    running: bool
    model_version: str  # the promoted version inference uses ("untrained" before the first)
    version: str | None = None  # the version the latest run writes
    status: str | None = None  # "running" / "done" as the trainer reports it
    epoch: int | None = None
    max_epochs: int | None = None
    loss: float | None = None
    val_dice: dict[str, float] = field(default_factory=dict)
    mean_dice: float | None = None

    @classmethod
    def from_server(cls, info: dict[str, Any], task: dict | None, model: str = MODEL) -> "TrainingProgress":
        stats = (info.get("train_stats") or {}).get(model) or {}
        dice = stats.get("val_dice") or {}
        return cls(
            running=bool(task) and str(task.get("status", "")).upper() in ("RUNNING", "SUBMITTED"),
            model_version=str(info.get("model_version") or stats.get("promoted_version") or "untrained"),
            version=stats.get("version"),
            status=stats.get("status"),
            epoch=_int(stats.get("epoch")),
            max_epochs=_int(stats.get("max_epochs")),
            loss=_float(stats.get("loss")),
            val_dice={str(k): float(v) for k, v in dice.items() if v is not None},
            mean_dice=_float(stats.get("mean_dice")),
        )

    @property
    def fraction(self) -> float:
        """0..1 for a progress bar."""
        if not self.epoch or not self.max_epochs:
            return 0.0
        return min(1.0, self.epoch / self.max_epochs)

    def lines(self) -> list[str]:
        if self.running:
            state = "running"
        elif self.status == "running":  # the trainer's last word, but no task runs: stopped or failed
            state = "stopped before its last epoch"
        else:
            state = self.status or "no training yet"
        out = [f"Model in use: {self.model_version}", f"Training: {state}"]
        if self.version:
            out.append(f"Run {self.version}: epoch {self.epoch or 0}/{self.max_epochs or '?'}"
                       + (f", loss {self.loss:.4f}" if self.loss is not None else ""))
        if self.mean_dice is not None:
            out.append(f"Validation mean Dice {self.mean_dice:.3f}")
        out += [f"  {name}: {value:.3f}" for name, value in sorted(self.val_dice.items())]
        return out


def fetch_training_progress(client, model: str = MODEL) -> TrainingProgress:
    """Both questions to the server (a worker-thread job in Slicer)."""
    return TrainingProgress.from_server(client.info(), client.train_status(), model)


def _int(value) -> int | None:
    return int(value) if value is not None else None


def _float(value) -> float | None:
    return float(value) if value is not None else None

"""Model versions on disk: every training run writes a new version, the best one is promoted.

Layout under ``root`` (one folder per model name):
    versions/v0001/model.pt         weights + the configuration they were trained with
    versions/v0001/metrics.json     per-structure validation Dice, epochs, data, times
    promoted.json                   {"version": "v0001", "mean_dice": ...}: what inference uses
Training promotes a version that beats the promoted one; a person may promote any kept version (roll
back, or serve one that does better on their own scans): MonaiLabelApp/model_versions.py.
Every file is written to a temporary name and renamed, so a stopped or crashed run never leaves a
half-written model, and the promoted version stays the last good one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import torch
from KneeAILib.atomic_files import replace_atomically, write_text_atomically

logger = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"v(\d{4,})")


TEMPORARY_PREFIX = "tmp-"  # torch.save needs a plain file name: no leading dot


def write_json_atomically(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=2), prefix=TEMPORARY_PREFIX)


class DamagedFile(ValueError):
    """A JSON file of the model folder or the training set-up that exists but cannot be read."""


def read_json(path: Path) -> dict | None:
    """The file's JSON; None only when there is no file. A damaged file raises: read as missing, a damaged
    promoted.json served the untrained network and let any next version be promoted, and a damaged
    split was silently drawn again (other knees validating)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFile(f"{path} cannot be read ({e}); restore it, or move it away to start that record "
                          "afresh") from e


def read_record(path: Path) -> dict | None:
    """``read_json`` for a file that must hold a JSON object (a version's metrics, the training progress):
    anything else (a list, a number, null, written by hand) is a damaged file, not a crash of /info."""
    data = read_json(path)
    if data is None and not path.exists():
        return None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} holds {type(data).__name__}, not a record; restore it, or move it away to "
                          "start that record afresh")
    return data


class ModelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self._lock = threading.Lock()

    # -- versions ------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        found = [p.name for p in self.versions_dir.iterdir()
                 if VERSION_PATTERN.fullmatch(p.name) and (p / "model.pt").is_file()]
        return sorted(found, key=lambda v: int(v[1:]))

    def new_version(self) -> str:
        """Reserves the next version name (the folder is created, so two runs never share one)."""
        with self._lock:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            taken = [int(m.group(1)) for p in self.versions_dir.iterdir() if (m := VERSION_PATTERN.fullmatch(p.name))]
            number = max(taken, default=0) + 1
            while True:
                name = f"v{number:04d}"
                try:
                    (self.versions_dir / name).mkdir()
                    return name
                except FileExistsError:
                    number += 1

    def save(self, version: str, state: dict, metrics: dict) -> None:
        folder = self.versions_dir / version
        replace_atomically(folder / "model.pt", lambda tmp: torch.save(state, tmp), prefix=TEMPORARY_PREFIX)
        write_json_atomically(folder / "metrics.json", metrics)

    def metrics(self, version: str) -> dict | None:
        """The version's record (validation Dice, options); a damaged one reads as {"damaged": reason}: it
        informs, nothing is decided on it (promotion measures the incumbent again)."""
        try:
            return read_record(self.versions_dir / version / "metrics.json")
        except DamagedFile as e:
            logger.warning(str(e))
            return {"damaged": str(e)}

    def model_path(self, version: str) -> Path:
        return self.versions_dir / version / "model.pt"

    def check_version(self, version: str) -> str:
        """``version`` if it names a saved version here; a clear ValueError otherwise (also for names
        that are not version names at all, such as paths)."""
        if not VERSION_PATTERN.fullmatch(version or ""):
            raise ValueError(f"{version!r} is not a model version name (v0001, v0002, ...)")
        if not self.model_path(version).is_file():
            have = ", ".join(self.versions()) or "none"
            raise ValueError(f"no model version {version} in {self.root} (have: {have})")
        return version

    def load_version(self, version: str, map_location: str | torch.device = "cpu") -> dict:
        path = self.model_path(self.check_version(version))
        return torch.load(path, map_location=map_location, weights_only=True)  # a model file is data, never code

    def check_start(self, init: str) -> str:
        """``init`` if a training run can start from it: "promoted", "scratch" or a kept version's name
        (such as "v0006", one that was not promoted); a clear ValueError otherwise."""
        if init in ("promoted", "scratch"):
            return init
        if VERSION_PATTERN.fullmatch(init or ""):
            return self.check_version(init)
        raise ValueError(f"init must be 'promoted', 'scratch' or a model version such as v0001; got {init!r}")

    def load_start(self, init: str) -> tuple[str, dict] | None:
        """The weights a training run starts from (``check_start``): None from scratch, or when "promoted"
        and nothing is promoted yet."""
        if self.check_start(init) == "scratch":
            return None
        if init == "promoted":
            return self.load_promoted()
        return init, self.load_version(init)

    # -- progress of the current or last training run (shown in /info train_stats) -----------------
    def write_training_stats(self, stats: dict) -> None:
        write_json_atomically(self.root / "train_stats.json", stats)

    def training_stats(self) -> dict:
        """The last run's progress, the promoted version and every version's validation mean Dice."""
        try:
            stats = read_record(self.root / "train_stats.json") or {}
        except DamagedFile as e:  # progress display only, rewritten at the next epoch: say so, show the rest
            logger.warning(str(e))
            stats = {"damaged": str(e)}
        stats["promoted_version"] = self.promoted_version(None)  # /info shows these: it must answer
        stats["versions"] = {v: (self.metrics(v) or {}).get("mean_dice") for v in self.versions()}
        return stats

    # -- promotion -----------------------------------------------------------------------------
    def promoted(self) -> dict | None:
        """The promoted version's record; None before any promotion. A record that is damaged or names a
        version that is gone raises DamagedFile: serving the untrained network instead would go unnoticed."""
        info = read_json(self.root / "promoted.json")
        if info is None:
            return None
        version = info.get("version") if isinstance(info, dict) else None
        if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
            raise DamagedFile(f"{self.root / 'promoted.json'} names no version; promote one with "
                              "MonaiLabelApp/model_versions.py --promote")
        if not self.model_path(version).is_file():
            raise DamagedFile(f"{self.root / 'promoted.json'} names {version}, whose model.pt is gone; restore it or "
                              "promote another version with MonaiLabelApp/model_versions.py --promote")
        return info

    def promoted_version(self, none: str | None) -> str | None:
        """What /info shows: the promoted version, ``none`` before any promotion, or "damaged: <reason>"
        (the server keeps answering /info, so a client can show why inference fails)."""
        try:
            promoted = self.promoted()
        except DamagedFile as e:
            return f"damaged: {e}"
        return promoted["version"] if promoted else none

    def promote(self, version: str, mean_dice: float | None, by: str = "training") -> None:
        """Promotes ``version``; training compared it with the promoted one on the same cases (a
        stored score may come from other cases: it is no bar); ``by`` says who chose it."""
        self.check_version(version)
        write_json_atomically(self.root / "promoted.json", {"version": version, "mean_dice": mean_dice, "by": by})

    def load_promoted(self, map_location: str | torch.device = "cpu") -> tuple[str, dict] | None:
        info = self.promoted()
        if info is None:
            return None
        return info["version"], self.load_version(info["version"], map_location)

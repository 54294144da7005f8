"""K-fold cross-validation split BY KNEE, so figures are reported only on knees a model never saw.

The unit is the knee (one label map file, its id = the file name without suffix), never an image:
every synthesised variant of a knee inherits the knee's fold, so no variant of a test knee can leak
into training.

Deterministic: knees are ordered by a hash of (seed, knee id), which does not depend on the order
the files were listed in, and dealt round-robin into ``folds`` folds, so fold sizes differ by at most
one. The split is saved to JSON and, once saved, is the authority: a later run loads it instead of
recomputing, and refuses knees the file does not know (adding knees would otherwise silently move
others between folds and make figures of different runs incomparable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lib.model_store import DamagedFile, read_json, write_json_atomically

FORMAT = "kneeai-cv-split/1"


def _order_key(seed: int, knee: str) -> str:
    return hashlib.sha1(f"{seed}:{knee}".encode()).hexdigest()


@dataclass(frozen=True)
class KneeSplit:
    folds: int
    seed: int
    fold_of: dict[str, int]  # knee id -> fold index, 0 .. folds-1

    @classmethod
    def create(cls, knees: Iterable[str], folds: int = 5, seed: int = 0) -> "KneeSplit":
        knees = sorted(set(knees))
        if folds < 2:
            raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
        if len(knees) < folds:
            raise ValueError(f"{len(knees)} knees cannot fill {folds} folds: every fold needs a test knee")
        ordered = sorted(knees, key=lambda k: _order_key(seed, k))
        return cls(folds, seed, {knee: i % folds for i, knee in enumerate(ordered)})

    def check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.folds:
            raise ValueError(f"fold {fold} does not exist: the split has folds 0..{self.folds - 1}")

    def test_knees(self, fold: int) -> list[str]:
        self.check_fold(fold)
        return sorted(k for k, f in self.fold_of.items() if f == fold)

    def train_knees(self, fold: int) -> list[str]:
        self.check_fold(fold)
        return sorted(k for k, f in self.fold_of.items() if f != fold)

    def check_knows(self, knees: Iterable[str]) -> None:
        unknown = sorted(set(knees) - set(self.fold_of))
        if unknown:
            raise ValueError(
                f"knees not in the saved split: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
                "make a new split file for a new set of knees (figures from different splits are not comparable)"
            )

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "unit": "knee (label map file id)",
            "folds": self.folds,
            "seed": self.seed,
            "fold_of": dict(sorted(self.fold_of.items())),
            "test_knees_by_fold": {str(f): self.test_knees(f) for f in range(self.folds)},
        }

    def save(self, path: str | Path) -> None:
        write_json_atomically(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "KneeSplit":
        data = read_json(Path(path))
        if data is None:
            raise FileNotFoundError(f"{path}: no such split file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a KneeAI cross-validation split (format "
                             f"{data.get('format') if isinstance(data, dict) else None!r})")
        try:
            fold_of = {str(k): int(v) for k, v in data["fold_of"].items()}
            split = cls(int(data["folds"]), int(data["seed"]), fold_of)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedFile(f"{path}: a damaged cross-validation split ({type(e).__name__}: {e}); restore it "
                              "from a copy") from None
        if any(not 0 <= f < split.folds for f in fold_of.values()):
            raise ValueError(f"{path}: a knee is assigned to a fold outside 0..{split.folds - 1}")
        return split

    @classmethod
    def load_or_create(cls, path: str | Path, knees: Iterable[str], folds: int, seed: int = 0) -> "KneeSplit":
        """The saved split when ``path`` exists (checked against ``knees`` and ``folds``), else a new
        one, saved there."""
        knees = sorted(set(knees))
        path = Path(path)
        if path.exists():
            split = cls.load(path)
            if split.folds != folds:
                raise ValueError(f"{path} has {split.folds} folds, not {folds}")
            split.check_knows(knees)
            return split
        split = cls.create(knees, folds, seed)
        split.save(path)
        return split

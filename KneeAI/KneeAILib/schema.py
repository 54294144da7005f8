"""The knee label schema: values, names, colours, terminology and mappings from other conventions.

The data lives in ONE file, ``Resources/knee_schema.json`` at the project root (the server serves it in
``/info``; the Slicer module reads it from there or from the copy installed beside the module). This
module only parses and applies it. Pure Python + numpy: no Slicer, Qt, VTK or torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

SCHEMA_FILE_NAME = "knee_schema.json"


class SchemaError(ValueError):
    """A schema file, a mapping or a label map that does not fit the schema."""


@dataclass(frozen=True)
class Code:
    scheme: str
    value: str
    meaning: str

    @classmethod
    def from_list(cls, item: Iterable[str]) -> "Code":
        scheme, value, meaning = item
        return cls(str(scheme), str(value), str(meaning))


@dataclass(frozen=True)
class Structure:
    value: int
    key: str
    name: str
    color: tuple[int, int, int]
    kind: str
    bone: str | None = None
    category: Code | None = None
    type: Code | None = None
    region: Code | None = None

    @property
    def color_float(self) -> tuple[float, float, float]:
        r, g, b = self.color
        return (r / 255.0, g / 255.0, b / 255.0)


@dataclass(frozen=True)
class Group:
    """A value that means "one of these structures, not known which" (e.g. unsplit tibial cartilage)."""

    value: int
    key: str
    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class SourceMapping:
    """How another dataset's label values translate into schema keys."""

    name: str
    description: str
    values: Mapping[int, str]
    not_labelled: tuple[str, ...] = ()


@dataclass
class KneeSchema:
    name: str
    version: int
    structures: list[Structure]
    groups: list[Group] = field(default_factory=list)
    mappings: dict[str, SourceMapping] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "KneeSchema":
        try:
            structures = [
                Structure(
                    value=int(item["value"]),
                    key=str(item["key"]),
                    name=str(item["name"]),
                    color=tuple(int(c) for c in item["color"]),  # type: ignore[arg-type]
                    kind=str(item.get("kind", "")),
                    bone=item.get("bone"),
                    category=_code(item, "category"),
                    type=_code(item, "type"),
                    region=_code(item, "region"),
                )
                for item in data["labels"]
            ]
            groups = [
                Group(int(g["value"]), str(g["key"]), str(g["name"]), tuple(g["members"]))
                for g in data.get("groups", [])
            ]
            mappings = {
                name: SourceMapping(
                    name=name,
                    description=str(m.get("description", "")),
                    values={int(k): str(v) for k, v in m["values"].items()},
                    not_labelled=tuple(m.get("not_labelled", [])),
                )
                for name, m in data.get("mappings", {}).items()
            }
            schema = cls(str(data["name"]), int(data["version"]), structures, groups, mappings, dict(data))
        except (KeyError, TypeError, ValueError) as e:
            raise SchemaError(f"Invalid knee schema: {e!r}") from e
        schema._check()
        return schema

    @classmethod
    def load(cls, path: str | Path | None = None) -> "KneeSchema":
        path = Path(path) if path else default_schema_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SchemaError(f"Cannot read knee schema {path}: {e}") from e
        return cls.from_dict(data)

    def _check(self) -> None:
        values = [s.value for s in self.structures] + [g.value for g in self.groups]
        keys = [s.key for s in self.structures] + [g.key for g in self.groups]
        if len(set(values)) != len(values) or 0 in values:
            raise SchemaError(f"Schema values must be unique and non-zero: {values}")
        if len(set(keys)) != len(keys):
            raise SchemaError(f"Schema keys must be unique: {keys}")
        known = set(keys)
        for s in self.structures:
            if s.bone and s.bone not in known:
                raise SchemaError(f"{s.key} names unknown bone {s.bone}")
        for g in self.groups:
            unknown = [m for m in g.members if m not in self.by_key]
            if unknown:
                raise SchemaError(f"Group {g.key} has unknown members {unknown}")
        for m in self.mappings.values():
            unknown = [k for k in list(m.values.values()) + list(m.not_labelled) if k not in known]
            if unknown:
                raise SchemaError(f"Mapping {m.name} names unknown structures {unknown}")

    # -- look-ups ------------------------------------------------------------------------------
    @property
    def by_key(self) -> dict[str, Structure]:
        return {s.key: s for s in self.structures}

    @property
    def by_value(self) -> dict[int, Structure]:
        return {s.value: s for s in self.structures}

    @property
    def group_by_key(self) -> dict[str, Group]:
        return {g.key: g for g in self.groups}

    def value_of(self, key: str) -> int:
        """The label value of a structure or group key."""
        if key in self.by_key:
            return self.by_key[key].value
        if key in self.group_by_key:
            return self.group_by_key[key].value
        raise SchemaError(f"Unknown structure {key!r}; known: {sorted(self.by_key)}")

    @property
    def num_classes(self) -> int:
        """Channels of a network that predicts this schema: background + the highest structure value."""
        return max(s.value for s in self.structures) + 1

    @property
    def labels_for_monailabel(self) -> dict[str, int]:
        """name -> value, the form MONAI Label's task ``labels`` and the stock Slicer plugin expect."""
        return {s.name: s.value for s in self.structures}

    def group_members(self) -> dict[int, list[int]]:
        """Group value -> member structure values."""
        return {g.value: [self.by_key[m].value for m in g.members] for g in self.groups}

    def allowed_values(self) -> set[int]:
        """Every value that may appear in a stored label map: 0, structures and groups."""
        return {0} | {s.value for s in self.structures} | {g.value for g in self.groups}

    # -- applying to arrays --------------------------------------------------------------------
    def check_label_values(self, labels: np.ndarray) -> None:
        """Raise SchemaError naming any value in ``labels`` that the schema does not know, and for a
        label map with non-whole or non-finite values (an interpolated or float map: truncating 1.6 to 1
        would quietly change structures)."""
        labels = np.asarray(labels)
        self.check_whole_values(labels)
        present = np.unique(labels)
        unknown = sorted(int(v) for v in present if int(v) not in self.allowed_values())
        if unknown:
            raise SchemaError(
                f"Label map has values the knee schema does not know: {_listing(unknown)}; "
                f"known values: {sorted(self.allowed_values())}"
            )

    @staticmethod
    def check_whole_values(labels: np.ndarray) -> None:
        """Raise SchemaError for a label map with non-whole or non-finite values, whatever its convention."""
        if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
            finite = np.isfinite(labels)
            if not finite.all():
                raise SchemaError(f"Label map has {int(np.count_nonzero(~finite))} non-finite values (NaN or "
                                  "infinity); a label map holds whole structure values only")
            fractional = np.unique(labels[labels != np.round(labels)])
            if fractional.size:
                listing = ", ".join(f"{v:g}" for v in fractional[:5])
                raise SchemaError(f"Label map has values that are not whole numbers ({listing}); "
                                  "a label map holds whole structure values only (was it resampled with "
                                  "linear interpolation?)")

    def map_from(self, source: str | Mapping[int, str], labels: np.ndarray) -> np.ndarray:
        """Translate a label map from another convention (a mapping name or value->key dict)."""
        self.check_whole_values(np.asarray(labels))
        if isinstance(source, str):
            if source not in self.mappings:
                raise SchemaError(f"Unknown label convention {source!r}; known: {sorted(self.mappings)}")
            table = self.mappings[source].values
        else:
            table = {int(k): str(v) for k, v in source.items()}
        present = {int(v) for v in np.unique(labels)} - {0}
        missing = sorted(present - set(table))
        if missing:
            raise SchemaError(f"Label values {_listing(missing)} have no mapping into the knee schema")
        lut = np.zeros(max(present | {0}) + 1, dtype=np.uint8)
        for src, key in table.items():
            if src < len(lut):
                lut[src] = self.value_of(key)
        return lut[labels.astype(np.int64, copy=False)]

    def to_info(self) -> dict[str, Any]:
        """The schema as served in the server's /info (the whole file, so clients need nothing else)."""
        return dict(self.raw)


def _listing(values: list[int], most: int = 10) -> str:
    """The first ``most`` values, and how many more: an MRI given as a label map has thousands."""
    shown = ", ".join(str(v) for v in values[:most])
    return f"[{shown}]" if len(values) <= most else f"[{shown}, ... ({len(values)} values)]"


def _code(item: Mapping[str, Any], name: str) -> Code | None:
    term = item.get("terminology", {})
    return Code.from_list(term[name]) if name in term else None


def default_schema_path() -> Path:
    """The schema file: beside the installed Slicer module, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    candidates = [
        here.parent / "Resources" / SCHEMA_FILE_NAME,  # KneeAI/Resources (installed Slicer module)
        here.parent.parent / "Resources" / SCHEMA_FILE_NAME,  # <checkout>/Resources
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise SchemaError(f"Knee schema file not found in {[str(c) for c in candidates]}")

"""Slicer terminology entries and segment tags for the knee schema's structures.

Slicer stores a segment's standard codes as one string (tag ``TerminologyEntry``, the same text in a
``.seg.nrrd`` header's ``SegmentN_Tags``), in the format of
``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``:

    context~category~type~typeModifier~regionContext~region~regionModifier

where each coded item is ``scheme^code^meaning`` (empty: ``^^``). Built here without Slicer so that the
command-line client writes the very string the Slicer module sets (tested against Slicer's serializer).
"""

from __future__ import annotations

from .schema import Code, Group, KneeSchema, SchemaError, Structure

TERMINOLOGY_TAG = "TerminologyEntry"
# Our own segment tag: which schema value a segment stands for, kept through renames in Slicer.
LABEL_VALUE_TAG = "KneeAI.LabelValue"
# The region codes are SNOMED CT anatomic codes, i.e. from DICOM's anatomic region list.
REGION_CONTEXT = "Anatomic codes - DICOM master list"
DEFAULT_CATEGORY = Code("SCT", "123037004", "Anatomical Structure")


def _coded(code: Code | None) -> str:
    if code is None:
        return "^^"
    for part in (code.scheme, code.value, code.meaning):
        if any(c in part for c in "~^|"):
            raise ValueError(f"Terminology code {code} contains a separator character (~ ^ |)")
    return f"{code.scheme}^{code.value}^{code.meaning}"


def terminology_entry(schema: KneeSchema, item: Structure | Group) -> str:
    """The Slicer terminology-entry string for a structure (or a group, coded as its first member's
    category with a local type code)."""
    if isinstance(item, Group):
        category, type_, region = DEFAULT_CATEGORY, Code("99KNEEAI", item.key.upper(), item.name), None
    else:
        category, type_, region = item.category or DEFAULT_CATEGORY, item.type, item.region
    if type_ is None:
        type_ = Code("99KNEEAI", item.key.upper(), item.name)
    region_context = REGION_CONTEXT if region is not None else ""
    return "~".join([schema.name, _coded(category), _coded(type_), "^^", region_context, _coded(region), "^^"])


def parse_terminology_entry(text: str) -> dict[str, tuple[str, str, str] | str | None]:
    """The parts of a terminology-entry string (for reading back what Slicer or a file holds)."""
    fields = text.split("~")
    if len(fields) != 7:
        raise ValueError(f"Not a Slicer terminology entry (expected 7 '~'-separated fields): {text!r}")

    def code(value: str):
        parts = value.split("^")
        return tuple(parts) if len(parts) == 3 and any(parts) else None

    return {"context": fields[0], "category": code(fields[1]), "type": code(fields[2]),
            "type_modifier": code(fields[3]), "region_context": fields[4], "region": code(fields[5]),
            "region_modifier": code(fields[6])}


def schema_items(schema: KneeSchema) -> list[Structure | Group]:
    """Every value a segment can stand for: the structures, then the groups (e.g. unsplit tibial cartilage)."""
    return [*schema.structures, *schema.groups]


def item_color(schema: KneeSchema, item: Structure | Group) -> tuple[float, float, float]:
    """A structure's colour (0-1); a group takes its first member's colour."""
    if isinstance(item, Group):
        return schema.by_key[item.members[0]].color_float
    return item.color_float


def segment_schema_value(name: str, label_value_tag: str | None, schema: KneeSchema) -> int | None:
    """Which schema value a segment stands for, from its visible ``name`` and the text of its
    ``KneeAI.LabelValue`` tag (None: no tag); the one rule for segments in Slicer and in .seg.nrrd files.

    A name that is exactly (trimmed, any case) a schema structure's name or key wins: it is what the
    annotator sees and last chose, e.g. swapped menisci fixed by renaming the two segments. Any other
    name ("Femur (edited)", a translation) leaves the tag to say, as it has since the segment was made."""
    wanted = name.strip().lower()
    named = next((i.value for i in schema_items(schema) if wanted in (i.name.lower(), i.key.lower())), None)
    if named is not None:
        return named
    try:
        tagged = int((label_value_tag or "").strip())
    except ValueError:
        return None
    return tagged if tagged in schema.allowed_values() - {0} else None


class SharedStructureError(SchemaError):
    """Several segments with voxels stand for one structure: written as one label they would merge, and
    a swap fixed by renaming only one of the two segments would go unnoticed."""

    def __init__(self, shared: dict[str, list[str]], source: str = ""):
        self.shared = {structure: list(names) for structure, names in shared.items()}
        listing = "; ".join(f"{', '.join(repr(n) for n in names)} all stand for {structure}"
                            for structure, names in self.shared.items())
        super().__init__(f"{source + ': ' if source else ''}Several segments stand for one structure: {listing}. "
                         "Rename each segment to the structure it shows (or merge them) first.")


def shared_structures(holders: dict[int, list[str]], schema: KneeSchema) -> dict[str, list[str]]:
    """From schema value -> names of the segments with voxels standing for it: structure name -> those
    names, where more than one segment does (what SharedStructureError refuses)."""
    names = {item.value: item.name for item in schema_items(schema)}
    return {names[value]: segments for value, segments in holders.items() if len(segments) > 1}


def segment_id(item: Structure | Group) -> str:
    """A stable segment id per schema item (Slicer ids are free text; the key is stable and readable)."""
    return item.key

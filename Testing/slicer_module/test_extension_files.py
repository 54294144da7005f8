"""The Slicer extension's build files, UI, icon and catalogue entry agree with the code they ship.

The Slicer application cannot run here, so these checks read the files: a module file missing from
the CMake lists, a widget name the Widget uses but the .ui lacks, or a Slicer import in the pure
library would all only show up inside Slicer otherwise."""

from __future__ import annotations

import ast
import json
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "KneeAI"
LIBRARY = MODULE / "KneeAILib"
FORBIDDEN_IN_LIBRARY = {"slicer", "qt", "vtk", "vtkmodules", "ctk", "torch", "monai", "monailabel"}
# The MRML adapters: the only library files that touch Slicer. One for scene data (volumes,
# segmentations, markups), one that shows measurements (thickness model, colour bar, table).
MRML_ADAPTERS = {LIBRARY / "mrml_adapter.py", LIBRARY / "measurements_mrml.py"}


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [line.strip() for line in match.group(1).split() if line.strip()]


def test_every_module_file_is_listed_for_the_build():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = [s.replace("${MODULE_NAME}", "KneeAI") for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    on_disk = sorted(str(p.relative_to(MODULE)) for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)
    assert sorted(s for s in scripts if s.startswith("KneeAILib/")) == on_disk
    assert "KneeAI.py" in scripts
    resources = [s.replace("${MODULE_NAME}", "KneeAI") for s in cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    resource_files = sorted(str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file())
    assert sorted(resources) == resource_files == ["Resources/Icons/KneeAI.png", "Resources/UI/KneeAI.ui"]
    assert "WITH_GENERIC_TESTS" in text
    assert "../Resources/knee_schema.json" in text and (ROOT / "Resources" / "knee_schema.json").is_file()


def test_extension_metadata_and_catalogue_entry_agree():
    text = (ROOT / "CMakeLists.txt").read_text()
    fields = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for name in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "DEPENDS"):
        assert fields.get(f"EXTENSION_{name}"), f"EXTENSION_{name} is empty"
    assert fields["EXTENSION_CATEGORY"] == "Segmentation" and fields["EXTENSION_DEPENDS"] == "NA"
    assert fields["EXTENSION_ICONURL"].endswith("KneeAI/Resources/Icons/KneeAI.png")
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(KneeAI)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text
    entry = json.loads((ROOT / "Utilities" / "KneeAI.json").read_text())
    assert {"$schema", "category", "scm_url"} <= set(entry)
    # The catalogue schema v1.0.1 allows no other keys.
    assert set(entry) <= {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision",
                          "scm_type", "scm_url", "tier"}
    assert entry["category"] == fields["EXTENSION_CATEGORY"]
    testing = (MODULE / "Testing" / "Python" / "CMakeLists.txt").read_text()
    assert re.search(r"slicer_add_python_unittest\(SCRIPT .*\$\{MODULE_NAME\}\.py\)", testing)
    assert "add_subdirectory(Python)" in (MODULE / "Testing" / "CMakeLists.txt").read_text()


def test_icon_is_a_128_pixel_rgba_png():
    data = (MODULE / "Resources" / "Icons" / "KneeAI.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (128, 128, 8, 6)
    idat = b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                    for i in [m.start() - 4 for m in re.finditer(b"IDAT", data)])
    assert len(zlib.decompress(idat)) == 128 * (1 + 128 * 4)


def _widget_names(ui: ET.Element) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui.iter("widget")}


def test_ui_has_every_widget_the_module_uses_and_binds_the_parameter_node():
    ui = ET.parse(MODULE / "Resources" / "UI" / "KneeAI.ui").getroot()
    widgets = _widget_names(ui)
    assert ui.find("widget").get("class") == "qMRMLWidget"
    source = (MODULE / "KneeAI.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= set(widgets), f"missing in the .ui: {sorted(used - set(widgets))}"
    # Slicer's UI loader builds a class that is not Qt's own only from its <customwidget> declaration.
    declared = {c.findtext("class") for c in ui.iter("customwidget")}
    custom = {w.get("class") for w in widgets.values() if not w.get("class").startswith("Q")}
    assert custom <= declared, f"not declared as custom widgets: {sorted(custom - declared)}"
    bound = {w.find("property[@name='SlicerParameterName']/string").text: name for name, w in widgets.items()
             if w.find("property[@name='SlicerParameterName']") is not None}
    tree = ast.parse(source)
    parameter_class = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "KneeAIParameterNode")
    fields = {n.target.id: ast.unparse(n.annotation) for n in parameter_class.body if isinstance(n, ast.AnnAssign)}
    assert set(bound) == set(fields)
    # Slicer's combo-box connector refuses a str/int field without a Choice annotation (connectGui raises)
    # and fills the combo box from it.
    for parameter, widget_name in bound.items():
        if widgets[widget_name].get("class") == "QComboBox":
            assert "Choice(" in fields[parameter], f"{parameter} is bound to a combo box without Choice"
            assert widgets[widget_name].find("item") is None, "items come from the Choice annotation"
    for name in ("serverUrlLineEdit", "connectButton", "nextCaseButton", "segmentButton", "submitButton",
                 "trainButton", "cancelButton", "trainingProgressBar", "modelVersionLabel", "statusLabel"):
        assert name in widgets


def test_module_file_is_thin_and_handlers_show_errors():
    source = (MODULE / "KneeAI.py").read_text()
    # The in-Slicer self-test takes ~75 lines, measuring ~25, points and scribbles ~85.
    assert len(source.splitlines()) <= 460
    tree = ast.parse(source)
    widget = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "KneeAIWidget")
    handlers = [f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name.startswith("on")]
    assert len(handlers) >= 6
    for handler in handlers:
        body = ast.unparse(handler)
        assert "tryWithErrorDisplay" in body or "self._run(" in body, f"{handler.name} shows no errors"
    assert 'delayDisplay("Test passed")' not in source and "delayDisplay(_('Test passed'))" not in source


@pytest.mark.parametrize("path", sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts),
                         ids=lambda p: str(p.relative_to(LIBRARY)))
def test_library_is_pure_python_except_the_mrml_adapters(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = imported & FORBIDDEN_IN_LIBRARY
    if path in MRML_ADAPTERS:
        assert forbidden <= {"slicer", "vtk"}
    else:
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}"

"""What the KneeAI tests share: import paths, the real data, and REAL MONAI Label server processes.

``ServerPool.start(studies, model_dir, conf)`` launches ``monailabel start_server`` with the KneeAI
app on a free 127.0.0.1 port, waits for ``/info`` and returns its URL; ``stop_all`` stops them (the
``server_pool`` fixture does, at the end of the session). Tests use a tiny model configuration
(``TINY_MODEL_CONF``) so that training and inference fit the CI time on 2 CPU cores; the pipeline and
its code are the production ones. ``kneeai_logic_class`` gives KneeAI.py's Logic for tests on slicer-core.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "MonaiLabelApp"
SHARED_DATA = ROOT.parent / "shared" / "data"
DESS_ECHO1 = SHARED_DATA / "mri" / "dess_3t_echo1.nii.gz"
DESS_ECHO2 = SHARED_DATA / "mri" / "dess_3t_echo2.nii.gz"
MESE_DICOM = SHARED_DATA / "mri" / "mese_t2_dicom"
KNEEAI_PY = ROOT / "KneeAI" / "KneeAI.py"
STOCK_CLIENT = Path(sys.prefix) / "monailabel" / "plugins" / "slicer" / "MONAILabel" / "MONAILabelLib" / "client.py"

for path in (APP_DIR, ROOT / "KneeAI"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# The production pipeline at a coarse scale with small networks: fast on 2 CPU cores.
TINY_MODEL_CONF = {
    "coarse_spacing": "4,4,4",
    "fine_spacing": "2,2,2",
    "coarse_filters": "8",
    "fine_filters": "8",
    "coarse_patch": "32,32,32",
    "fine_patch": "48,48,48",
    "max_roi_mm": "100",
}


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3x3 rotation about patient axis "x", "y" or "z"."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def linear_transform_node(scene, matrix: np.ndarray):
    """A vtkMRMLLinearTransformNode whose to-parent matrix is the 4x4 ``matrix`` (needs slicer-core)."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, matrix[r, c])
    node.SetMatrixTransformToParent(m)
    return node


# KneeAI.py's imports that only the Slicer application has (qt, the module base classes, translation).
SLICER_APP_ONLY = ("qt", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.util")


def class_from_kneeai_py(class_name: str, app_names: dict, bases: list[str] | None = None) -> type:
    """One class of KneeAI.py compiled from its source, with KneeAI.py's own imports (KneeAILib, numpy,
    vtk, slicer-core) and ``app_names`` standing in for what only the Slicer application has. KneeAI.py
    itself cannot be imported without that application; its classes' bodies are what Slicer runs."""
    tree = ast.parse(KNEEAI_PY.read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               and not any((alias.name if isinstance(node, ast.Import) else node.module).startswith(SLICER_APP_ONLY)
                           for alias in node.names)]
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    if bases is not None:
        cls.bases = [ast.Name(base, ast.Load()) for base in bases]
    names = dict(app_names)
    exec(compile(ast.fix_missing_locations(ast.Module([*imports, cls], [])), str(KNEEAI_PY), "exec"), names)
    return names[class_name]


class _ScriptedLoadableModuleLogic:
    """Stands in for Slicer's ScriptedLoadableModuleLogic (the application's, not in slicer-core): the
    Logic calls only its ``__init__``."""

    def __init__(self):
        pass


def kneeai_logic_class() -> type:
    """KneeAI.py's KneeAILogic, runnable on slicer-core (its messages untranslated)."""
    return class_from_kneeai_py("KneeAILogic", {"ScriptedLoadableModuleLogic": _ScriptedLoadableModuleLogic,
                                                "_": lambda text: text})


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (expected ../shared/data beside the checkout)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_info(url: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/info/", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server did not answer within {timeout} s:\n{log.read_text()[-4000:]}")


class ServerPool:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.processes: list[subprocess.Popen] = []

    def start(self, studies: Path, model_dir: Path, conf: dict[str, str] | None = None,
              env: dict[str, str] | None = None) -> str:
        port = free_port()
        conf = {"model_dir": str(model_dir), **TINY_MODEL_CONF, **(conf or {})}
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
                   "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port)]
        for key, value in conf.items():
            command += ["--conf", key, value]
        env = {**os.environ, **(env or {})}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["MONAI_LABEL_SESSION_PATH"] = str(self.scratch / "sessions")
        env["PYTHONUNBUFFERED"] = "1"
        log = self.scratch / f"server-{port}.log"
        process = subprocess.Popen(command, cwd=str(APP_DIR), env=env, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for_info(url, process, log)
        return url

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def load_stock_client():
    """The MONAI Label Slicer plugin's own client, as shipped inside the monailabel package."""
    import importlib.util

    if not STOCK_CLIENT.is_file():
        pytest.skip(f"stock MONAI Label Slicer client not found at {STOCK_CLIENT}")
    spec = importlib.util.spec_from_file_location("monailabel_slicer_client", STOCK_CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Slicer's own part of one interactive Update, on the main thread (issue 5; click_benchmark.py times the
round trip to the server, not this).

    .venv/bin/python Testing/benchmarks/slicer_update_cost.py [--dess PATH] [--repeats 5]

On the real MRML library (slicer-core) with the real DESS grid and every schema structure present as a
block: ``SceneRefinement.export`` (the segmentation as a label map of the whole volume, the points, any
strokes) and the reads and writes of ``apply`` (the scene's labels again, one segment's mask read and
written). Prints each repeat and the medians.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "KneeAI"), str(ROOT / "MonaiLabelApp"), str(ROOT / "Testing")]

from KneeAILib import mrml_adapter  # noqa: E402  (needs slicer-core)
from KneeAILib.refinement_mrml import SceneRefinement  # noqa: E402
from KneeAILib.schema import KneeSchema  # noqa: E402
from KneeAILib.volume import read_volume_file  # noqa: E402

DESS = ROOT.parent / "shared" / "data" / "mri" / "dess_3t_echo1.nii.gz"
STRUCTURE = "femoral_cartilage"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dess", default=str(DESS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not Path(args.dess).is_file():
        parser.error(f"--dess {args.dess} is not a file")
    import slicer

    mrml_adapter.ensure_segmentation_converters()
    scene, schema = slicer.vtkMRMLScene(), KneeSchema.load()
    volume = read_volume_file(args.dess)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    labels = np.zeros(volume.array.shape, np.uint8)
    depth = max(volume.array.shape[0] // (len(schema.structures) + 2), 1)
    rows, cols = volume.array.shape[1] // 4, volume.array.shape[2] // 4
    for n, structure in enumerate(schema.structures):  # every structure holds a block of slices
        labels[depth * (n + 1):depth * (n + 2), rows:3 * rows, cols:3 * cols] = structure.value
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)
    session = SceneRefinement("benchmark", segmentation, volume_node, schema)
    session.export()  # warm-up
    exports, applies = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        session.export()
        exports.append(time.perf_counter() - started)
        started = time.perf_counter()
        session._scene_labels()
        mask = mrml_adapter.segment_mask(segmentation, STRUCTURE, volume_node)
        mrml_adapter.set_segment_mask(segmentation, STRUCTURE, mask, volume_node)
        applies.append(time.perf_counter() - started)
        print(f"export {exports[-1]:.3f} s, apply reads and writes {applies[-1]:.3f} s", flush=True)
    print(f"{Path(args.dess).name} {list(volume.array.shape[::-1])}, {len(schema.structures)} structures: "
          f"median export {np.median(exports):.3f} s, median apply {np.median(applies):.3f} s (n = {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

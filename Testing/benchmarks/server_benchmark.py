"""Server benchmark: start-up, first and warm inference, and peak memory on the real DESS knee.

    .venv/bin/python Testing/benchmarks/server_benchmark.py [--model-dir DIR] [--runs 5] [--device cpu]

Starts a real KneeAI server process on 127.0.0.1 with a studies folder holding
../shared/data/mri/dess_3t_echo1.nii.gz (512x512x80), runs ``knee_segmentation`` on it through HTTP,
and reads the server's peak resident memory (VmHWM) from /proc. With no --model-dir the model is
untrained, so its joint box is the largest allowed (the worst case for latency). MONAI Label's scoring
of the studies at start-up (``knee_uncertainty``, a process of its own) is switched off, as it is in the
click benchmark: on 2 cores it would run beside the timed inferences. Prints a JSON record and writes it
to .kneeai/bench/server_benchmark.json. Figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DESS = ROOT.parent / "shared" / "data" / "mri" / "dess_3t_echo1.nii.gz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} CPU cores ({cpu}), {memory_gb:.0f} GB RAM, {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="model versions folder (default: a fresh, untrained one)")
    parser.add_argument("--runs", type=int, default=5, help="warm inferences (median reported; at least 1)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda when a GPU is present")
    parser.add_argument("--out", default=str(ROOT / ".kneeai" / "bench" / "server_benchmark.json"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not DESS.is_file():
        print(f"missing {DESS}", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="kneeai-bench-"))
    studies = scratch / "studies"
    studies.mkdir()
    shutil.copy(DESS, studies / DESS.name)
    model_dir = args.model_dir or str(scratch / "model")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MONAI_LABEL_SESSION_PATH=str(scratch / "sessions"), MONAI_LABEL_AUTO_UPDATE_SCORING="false")
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(ROOT / "MonaiLabelApp"),
               "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "model_dir", model_dir]
    log = (scratch / "server.log").open("w")
    t0 = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT / "MonaiLabelApp", env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=2) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.1)
        startup_s = time.perf_counter() - t0

        def infer() -> tuple[float, dict]:
            start = time.perf_counter()
            response = requests.post(f"{url}/infer/knee_segmentation", params={"image": DESS.name[:-7], "output": "json"},
                                     data={"params": json.dumps({"device": args.device})}, timeout=900)
            response.raise_for_status()
            return time.perf_counter() - start, response.json()

        first_s, first = infer()
        warm = [infer() for _ in range(args.runs)]
        warm_s = [w[0] for w in warm]
        record = {
            "data": f"{DESS.name} (512x512x80, 0.3125x0.3125x1.5 mm)",
            "machine": machine(),
            "device": warm[-1][1]["device"],
            "model_version": info["model_version"],
            "startup_s": round(startup_s, 2),
            "first_inference_s": round(first_s, 2),
            "warm_inference_median_s": round(statistics.median(warm_s), 2),
            "warm_inference_all_s": [round(w, 2) for w in warm_s],
            "server_stages_median_s": {
                k: round(statistics.median(w[1]["latencies"][k] for w in warm), 2) for k in warm[-1][1]["latencies"]
            },
            "joint_box_mm": warm[-1][1]["joint_box_mm"],
            "peak_server_memory_mb": round(peak_rss_mb(server.pid), 0),
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

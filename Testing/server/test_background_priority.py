"""Background task processes yield the CPU; the server process and hand-run commands keep theirs.
(That a real server's training process runs at niceness 10 is asserted in
Testing/interactive/test_refinement_training.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kneeai_testing import APP_DIR

from lib.background_priority import background_niceness, lower_priority_if_background_task


def test_an_ordinary_process_keeps_its_priority():
    before = os.nice(0)
    assert lower_priority_if_background_task() == before == os.nice(0)


def test_a_task_process_lowers_its_priority_to_the_configured_niceness():
    # A child Python told it is a task process (detection itself: the real server test named above).
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from lib.background_priority import lower_priority_if_background_task as low; "
            "import lib.background_priority as bp; bp.is_background_task_process = lambda: True; print(low())")
    for configured, expected in (("10", 10), ("3", 3), ("0", 0)):
        done = subprocess.run([sys.executable, "-c", code, str(APP_DIR)], capture_output=True, text=True,
                              env={**os.environ, "KNEEAI_BACKGROUND_NICENESS": configured}, timeout=60)
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.split()[-1]) == max(expected, os.nice(0))


@pytest.mark.parametrize("value", ["-5", "twenty", "25"])
def test_a_bad_niceness_setting_is_refused_with_its_name(monkeypatch, value):
    monkeypatch.setenv("KNEEAI_BACKGROUND_NICENESS", value)
    with pytest.raises(ValueError, match="KNEEAI_BACKGROUND_NICENESS"):
        background_niceness()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread niceness is read from Linux's /proc")
def test_threads_started_before_the_task_lowers_its_priority_are_lowered_too():
    """numpy's OpenBLAS pool starts at import, before the app lowers the task's priority; Linux lowered the
    calling thread only, and the pool's threads kept competing with the server at full priority."""
    code = ("import os, sys, threading; sys.path.insert(0, sys.argv[1]); "
            "started = threading.Event(); stop = threading.Event(); "
            "threading.Thread(target=lambda: (started.set(), stop.wait()), daemon=True).start(); started.wait(); "
            "import lib.background_priority as bp; bp.is_background_task_process = lambda: True; "
            "bp.lower_priority_if_background_task(); "
            "print(sorted(os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')))")
    done = subprocess.run([sys.executable, "-c", code, str(APP_DIR)], capture_output=True, text=True,
                          env={**os.environ, "KNEEAI_BACKGROUND_NICENESS": "10", "OPENBLAS_NUM_THREADS": "1"},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    niceness = [int(n) for n in done.stdout.strip().strip("[]").split(",")]
    assert len(niceness) >= 2 and set(niceness) == {max(10, os.nice(0))}

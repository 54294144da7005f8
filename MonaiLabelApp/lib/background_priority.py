"""Background work yields the CPU to annotators.

MONAI Label runs training and scoring (the active-learning pass over unlabelled images) as child
processes (``python -m monailabel.interfaces.utils.app``). On a CPU-only server they would share the
cores equally with the server process that answers interactive requests (Segment, click Updates), so
a click during training or the start-up scoring pass could take several times as long. Such a task
process lowers its own priority: a click is answered first and the task still gets every idle cycle.
Work run in the server process itself, or training started by hand in process (train_from_label_maps),
keeps its priority.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

TASK_MODULE = "monailabel.interfaces.utils.app"  # what MONAI Label runs for train and scoring tasks
NICENESS_VARIABLE = "KNEEAI_BACKGROUND_NICENESS"  # default 10; 0 keeps task processes at normal priority


def is_background_task_process() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == TASK_MODULE


def background_niceness() -> int:
    value = os.environ.get(NICENESS_VARIABLE, "10")
    if not value.strip().isdigit() or int(value) > 19:
        raise ValueError(f"{NICENESS_VARIABLE}={value!r}: expected a niceness from 0 to 19")
    return int(value)


def lower_priority_if_background_task() -> int:
    """In a MONAI Label task process, raise this process's niceness to ``background_niceness()``
    (never lower it). Returns the niceness now."""
    current = os.nice(0)
    wanted = background_niceness()
    if is_background_task_process() and current < wanted:
        current = os.nice(wanted - current)
        _lower_started_threads(wanted)
        logger.info(f"Background task process: CPU niceness {current}, interactive requests go first")
    return current


def _lower_started_threads(niceness: int) -> None:
    """Linux sets the niceness of the calling thread only: threads started before (numpy's OpenBLAS pool
    starts when numpy is imported, one thread per further core) kept competing with the server at full
    priority. Threads started later take the niceness of the thread that starts them."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return
    for tid in os.listdir(tasks):
        try:
            if os.getpriority(os.PRIO_PROCESS, int(tid)) < niceness:
                os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
        except ProcessLookupError:  # the thread ended meanwhile
            continue

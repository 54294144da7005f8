"""The annotation session's state machine and the polled job runner (pure Python, no server)."""

from __future__ import annotations

import threading

import pytest

from KneeAILib.jobs import JobRunner
from KneeAILib.session import AnnotationSession, IllegalTransition, SessionBusy, State
from KneeAILib.training import TrainingProgress


def test_the_annotation_path_through_the_states():
    session = AnnotationSession()
    with pytest.raises(IllegalTransition, match="connect to a server first"):
        session.load_case("case_1")
    session.connect("http://server:8000", "v0001")
    with pytest.raises(IllegalTransition, match="load a case first"):
        session.segmented()
    with pytest.raises(IllegalTransition, match="segment or edit"):
        session.submitted()
    session.load_case("case_1")
    session.segmented("v0002")
    assert session.model_version == "v0002"
    session.edited()
    session.edited()  # more edits stay EDITED
    assert session.state is State.EDITED
    session.submitted()
    session.edited()  # editing after a submit needs another submit
    session.submitted()
    session.load_case("case_2")
    assert (session.state, session.image_id) == (State.CASE_LOADED, "case_2")
    session.disconnect()
    assert session.state is State.DISCONNECTED and session.image_id is None


def test_unsubmitted_edits_are_not_lost_silently():
    session = AnnotationSession()
    session.connect("http://server:8000")
    session.load_case("case_1")
    session.segmented()
    session.edited()
    with pytest.raises(IllegalTransition, match="not submitted"):
        session.load_case("case_2")
    with pytest.raises(IllegalTransition, match="not submitted"):
        session.segmented()  # a new proposal would overwrite the edits
    session.load_case("case_2", discard_edits=True)
    assert session.state is State.CASE_LOADED


def test_one_background_job_at_a_time():
    session = AnnotationSession()
    session.begin_job("segment", object())
    with pytest.raises(SessionBusy, match="segment"):
        session.begin_job("submit", object())
    session.end_job()
    session.begin_job("submit", object())
    assert session.job.kind == "submit"


def test_results_are_delivered_on_the_polling_thread_only():
    runner = JobRunner()
    delivered = []
    release = threading.Event()

    def work(x):
        release.wait(5)
        return x * 2, threading.get_ident()

    runner.submit("double", work, 21, on_done=delivered.append)
    assert runner.poll() == [] and delivered == []  # still running: nothing applied
    assert [j.description for j in runner.active] == ["double"]
    release.set()
    runner.wait(timeout=5)
    (value, worker_thread), = delivered
    assert value == 42 and worker_thread != threading.get_ident()
    assert runner.active == []
    runner.shutdown()


def test_a_cancelled_jobs_result_is_never_applied():
    runner = JobRunner()
    applied, errors = [], []
    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return "late result"

    job = runner.submit("slow download", slow, on_done=applied.append, on_error=errors.append)
    started.wait(5)
    runner.cancel(job)
    assert job.cancelled and runner.active == []
    release.set()
    job.future.result(timeout=5)  # the function did finish...
    runner.wait(timeout=5)
    assert applied == [] and errors == []  # ...but its result was dropped
    runner.shutdown()


def test_errors_reach_the_error_callback():
    runner = JobRunner()
    errors = []

    def fail():
        raise ConnectionError("server went away")

    runner.submit("failing", fail, on_done=lambda r: pytest.fail("no result expected"), on_error=errors.append)
    runner.wait(timeout=5)
    assert len(errors) == 1 and "went away" in str(errors[0])
    runner.shutdown()


def test_a_result_that_cannot_be_applied_fails_its_job():
    # e.g. a proposal refused because the case was edited while the server worked: the job's error
    # callback reports it (message, GUI state), instead of an exception out of the polling timer.
    runner, errors = JobRunner(), []

    def apply(result):
        raise IllegalTransition(f"cannot apply {result}")

    runner.submit("segment", lambda: "proposal", on_done=apply, on_error=errors.append)
    runner.wait(timeout=5)
    assert [str(e) for e in errors] == ["cannot apply proposal"]
    runner.submit("no error callback", lambda: "proposal", on_done=apply)
    with pytest.raises(IllegalTransition):  # nobody to report to: not swallowed
        runner.wait(timeout=5)
    runner.shutdown()


def test_reconnecting_keeps_the_case_only_on_the_same_server():
    session = AnnotationSession()
    session.connect("http://a:8000")
    session.load_case("case_1")
    session.edited()
    session.connect("http://a:8000", "v0002")  # the same server again (it was unreachable)
    assert (session.state, session.image_id, session.model_version) == (State.EDITED, "case_1", "v0002")
    with pytest.raises(IllegalTransition, match="not submitted"):
        session.connect("http://b:8000")  # another server: its case_1 is another knee
    session.connect("http://b:8000", discard_edits=True)
    assert (session.state, session.image_id, session.server_url) == (State.CONNECTED, None, "http://b:8000")


def test_a_jobs_result_never_discards_edits_made_after_it_started():
    session = AnnotationSession()
    session.connect("http://a:8000")
    session.load_case("case_1")
    session.segmented()
    session.edited()
    seen = session.edits  # the user agreed to discard these edits, then started a job
    session.edited()  # and edited again while it ran
    with pytest.raises(IllegalTransition, match="edited while this ran"):
        session.segmented(discard_edits=True, edits_seen=seen)
    assert session.submitted(edits_seen=seen) is False and session.state is State.EDITED
    assert session.submitted(edits_seen=session.edits) is True and session.state is State.SUBMITTED


def test_training_progress_from_the_servers_report():
    info = {"model_version": "v0002", "train_stats": {"knee_segmentation": {
        "version": "v0003", "status": "running", "epoch": 3, "max_epochs": 10, "loss": 0.8123,
        "val_dice": {"femur": 0.91, "tibia": 0.88}, "mean_dice": 0.895}}}
    progress = TrainingProgress.from_server(info, {"id": "x", "status": "RUNNING"})
    assert progress.running and progress.fraction == pytest.approx(0.3)
    text = "\n".join(progress.lines())
    assert "Model in use: v0002" in text and "epoch 3/10" in text and "femur: 0.910" in text
    idle = TrainingProgress.from_server({"model_version": "untrained"}, None)
    assert not idle.running and idle.fraction == 0.0 and "no training yet" in "\n".join(idle.lines())
    # The trainer wrote "running" at its last epoch, then was stopped (or failed): no task runs any more.
    stopped = TrainingProgress.from_server(info, None)
    assert "Training: stopped before its last epoch" in stopped.lines() and "Training: running" not in stopped.lines()

"""The real `helios worker` process: runs jobs, and stops gracefully on SIGTERM and SIGINT."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from conftest import wait_until


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_the_current_job_finish_then_exits_0(
    start_worker, redis_conn, tmp_path: Path, signum
):
    marker = tmp_path / "job.txt"
    worker = start_worker()
    job = Queue("default", connection=redis_conn).enqueue(
        "tests.jobs.slow_job", str(marker), 3.0, job_id="graceful-stop"
    )
    wait_until(lambda: marker.exists(), timeout=30, what="the worker to start the job")

    worker.send_signal(signum)
    exit_code = worker.wait(timeout=30)

    log = Path(worker.log_path).read_text()
    assert exit_code == 0, log
    assert marker.read_text() == "started\nfinished\n", log
    job = Job.fetch("graceful-stop", connection=redis_conn)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "done"


def test_worker_uses_json_logs_when_asked(start_worker, redis_conn, tmp_path: Path):
    import json

    worker = start_worker(HELIOS_LOG_FORMAT="json")
    wait_until(
        lambda: "listening" in Path(worker.log_path).read_text(), what="the worker's first log"
    )
    worker.send_signal(signal.SIGTERM)
    try:
        # Generous: on a loaded machine the worker may still be starting its scheduler child.
        code = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop on SIGTERM: {Path(worker.log_path).read_text()}")
    assert code == 0
    lines = [line for line in Path(worker.log_path).read_text().splitlines() if line.strip()]
    documents = []
    for line in lines:
        try:
            documents.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line of the worker's log is not JSON: {line!r}\nthe log:\n{lines}")
    assert {"time", "level", "logger", "message", "pid"} <= set(documents[0])
    assert any("worker listening" in d["message"] for d in documents)


def test_json_logs_carry_warnings_and_uncaught_exceptions_as_json(tmp_path: Path):
    """A log shipper reading HELIOS_LOG_FORMAT=json breaks on a bare line: Python's warnings
    and a thread's uncaught exception are JSON documents too."""
    import json
    import sys

    script = (
        "import threading, warnings\n"
        "from panel.config import Settings\n"
        "from panel.run.runtime import configure_logging\n"
        "configure_logging(Settings(log_format='json'), 'worker')\n"
        "warnings.warn('an old call', DeprecationWarning, stacklevel=1)\n"
        "thread = threading.Thread(target=lambda: 1 / 0)\n"
        "thread.start(); thread.join()\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # a bare line fails here, named
    assert [d["logger"] for d in documents] == ["py.warnings", "panel.run.runtime"], lines
    assert "an old call" in documents[0]["message"]
    assert "ZeroDivisionError" in documents[1]["exception"]


def test_what_a_child_prints_itself_is_json_too():
    """multiprocessing prints a failed child's traceback straight to sys.stderr: in a JSON-
    logging scheduler that stream is a JsonStderr, one document per line."""
    import io
    import json

    from panel.run.runtime import JsonStderr

    raw = io.StringIO()
    stream = JsonStderr(raw, "scheduler")
    stream.write("Process Scheduler:\nTraceback (most recent call last):\n")
    stream.write('  File "x.py", line 1\nredis.exceptions.ConnectionError: gone')
    stream.flush()
    documents = [json.loads(line) for line in raw.getvalue().splitlines()]
    assert [d["message"] for d in documents] == [
        "Process Scheduler:", "Traceback (most recent call last):", '  File "x.py", line 1',
        "redis.exceptions.ConnectionError: gone",
    ]  # fmt: skip
    assert {d["process"] for d in documents} == {"scheduler"}


def test_a_stop_request_swallowed_by_other_code_still_stops_the_worker(redis_conn):
    """RQ stops an idle worker by raising StopRequested from its signal handler. When the
    signal lands inside code that catches Exception (a logging handler writing a line), the
    exception is lost; the worker must still know it was asked to stop."""
    from panel.run.worker import HeliosWorker

    worker = HeliosWorker([Queue("default", connection=redis_conn)], connection=redis_conn)
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        # What a logging handler's handleError() does with an exception raised in emit():
        with contextlib.suppress(Exception):
            worker.request_stop(signal.SIGTERM, None)  # installs RQ's handlers: restored below
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert worker._stop_requested


def test_the_scheduler_process_can_be_stopped_before_rq_installs_its_handlers():
    """RQ's scheduler is forked from the worker and inherits its signal handlers until it
    installs its own; a SIGTERM in that window went to the worker's copy and was lost, and the
    stopping worker waited on the scheduler until it was killed."""
    import multiprocessing
    import os

    from panel.run.worker import _scheduler_forked

    def on_term(_signum, _frame):  # what the worker has installed when it forks
        pass

    saved = signal.signal(signal.SIGTERM, on_term)
    try:
        context = multiprocessing.get_context("fork")

        def scheduler() -> None:  # stopped before it could install anything of its own
            _scheduler_forked(os.getppid())
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        child = context.Process(target=scheduler)
        child.start()
        child.join(timeout=20)
        assert child.exitcode == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, saved)

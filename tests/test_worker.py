"""The real `helios worker` process: runs jobs, and stops gracefully on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
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
    assert worker.wait(timeout=30) == 0
    lines = [line for line in Path(worker.log_path).read_text().splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message", "pid"} <= set(documents[0])
    assert any("worker listening" in d["message"] for d in documents)

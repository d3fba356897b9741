"""benchmarks/run_all.py: one table of figures next to their floors, failures shown, on tiny fake
benchmark scripts (the real benchmarks never run here, and no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = REPO_ROOT / "benchmarks" / "run_all.py"

FAST = """
    import argparse
    from support import parse_sizes, report

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    args = parse_sizes(parser, {"items": 3})
    print(f"measured {args.items} items")
    report(figure="widget latency", value=2.0, unit="ms", floor_name="bare widget", floor=4.0)
    report(figure="widget rate", value=150, unit="items/s", floor_name="no-op", floor=300,
           better="higher")
"""
BROKEN = """
    import sys
    from support import report

    report(figure="half done", value=1.5, unit="s", floor_name="nothing", floor=0.5)
    print("setting up the second half")
    print("boom: the double refused the job", file=sys.stderr)
    sys.exit(3)
"""
SILENT = """
    print("I measured something but reported nothing")
"""
HANGS = """
    import time
    from support import report

    report(figure="before the hang", value=1, unit="s", floor_name="zero-ish", floor=0)
    print("waiting forever", flush=True)
    time.sleep(120)
"""


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_all", module)  # its dataclass looks its module up there
    spec.loader.exec_module(sys.modules["run_all"])
    return sys.modules["run_all"]


def write_scripts(directory: Path, **scripts: str) -> None:
    for name, text in scripts.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(text))


def run_all(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), "--dir", str(tmp_path / "bench"),
         "--log", str(tmp_path / "run.log"), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bench"
    directory.mkdir()
    write_scripts(directory, a_fast=FAST, b_broken=BROKEN, c_silent=SILENT)
    return directory


def table_line(stdout: str, *cells: str) -> str:
    """The one table line holding every cell, in order."""

    def in_order(line: str) -> bool:
        at = [line.find(cell) for cell in cells]
        return -1 not in at and at == sorted(at)

    found = [line for line in stdout.splitlines() if in_order(line)]
    assert len(found) == 1, f"no single line with {cells} in:\n{stdout}"
    return found[0]


def test_table_shows_each_figure_next_to_its_floor_and_the_failures(tmp_path, bench_dir):
    answer = run_all(tmp_path, "--json", str(tmp_path / "figures.json"))

    assert answer.returncode == 1, answer.stdout + answer.stderr
    out = answer.stdout
    for n, name in enumerate(("a_fast.py", "b_broken.py", "c_silent.py"), 1):
        assert f"[{n}/3] {name} … " in out
    assert "FAILED (exit status 3)" in table_line(out, "[2/3] b_broken.py")
    table_line(out, "a_fast.py", "widget latency", "2.000", "ms", "bare widget", "4.000", "0.5000x",
               "lower is better")  # fmt: skip
    table_line(out, "a_fast.py", "widget rate", "150.0", "items/s", "no-op", "300.0", "0.5000x",
               "higher is better")  # fmt: skip
    table_line(out, "b_broken.py", "half done", "1.500", "s", "nothing", "0.5000", "3.000x")
    table_line(out, "b_broken.py", "FAILED: exit status 3")
    table_line(out, "c_silent.py", "FAILED: reported no figure")
    assert "a_fast.py: items 3" in out  # the --quick sizes the runner asked for
    after_table = out[out.index("b_broken.py FAILED") :]
    assert "| boom: the double refused the job" in after_table
    assert "| setting up the second half" in after_table
    assert "total " in out
    assert "failed: b_broken.py, c_silent.py" in answer.stderr

    kept = {entry["script"]: entry for entry in json.loads((tmp_path / "figures.json").read_text())}
    assert kept["a_fast.py"]["failure"] == ""
    assert kept["a_fast.py"]["sizes"] == {"items": 3}
    assert [f["figure"] for f in kept["a_fast.py"]["figures"]] == ["widget latency", "widget rate"]
    assert kept["a_fast.py"]["figures"][1]["better"] == "higher"
    assert kept["b_broken.py"]["failure"] == "exit status 3"
    assert kept["c_silent.py"]["failure"] == "reported no figure"

    log = (tmp_path / "run.log").read_text()
    assert "measured 3 items" in log
    assert "I measured something but reported nothing" in log


def test_only_runs_the_named_scripts_and_succeeds_when_they_do(tmp_path, bench_dir):
    answer = run_all(tmp_path, "--only", "a_fast", "--full")

    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "[1/1] a_fast.py … " in answer.stdout
    assert "b_broken" not in answer.stdout
    assert "a_fast.py: items 1000" in answer.stdout  # --full: the script's own defaults
    assert "FAILED" not in answer.stdout


def test_an_unknown_name_is_refused_before_anything_runs(tmp_path, bench_dir):
    answer = run_all(tmp_path, "--only", "a_fast,nope")

    assert answer.returncode != 0
    assert "no such benchmark" in answer.stderr and "nope.py" in answer.stderr
    assert "a_fast.py" in answer.stderr  # says which there are
    assert not (tmp_path / "run.log").exists() or "a_fast" not in (tmp_path / "run.log").read_text()


def test_a_script_past_its_timeout_is_stopped_and_shown_failed(tmp_path):
    directory = tmp_path / "bench"
    directory.mkdir()
    write_scripts(directory, hangs=HANGS)

    answer = run_all(tmp_path, "--timeout", "1")

    assert answer.returncode == 1
    table_line(answer.stdout, "hangs.py", "before the hang", "1.000", "0", "-")
    table_line(answer.stdout, "hangs.py", "FAILED: timed out")
    assert "| waiting forever" in answer.stdout


def test_run_order_puts_named_scripts_first_and_the_helpers_out(tmp_path):
    run_all_module = load_run_all()
    for name in ("zeta.py", "kill_recovery.py", "idle_rss.py", "support.py", "run_all.py",
                 "_private.py", "alpha.py"):  # fmt: skip
        (tmp_path / name).write_text("")

    found = [p.name for p in run_all_module.discover(tmp_path, [])]

    assert found == ["idle_rss.py", "kill_recovery.py", "alpha.py", "zeta.py"]


def test_numbers_are_shown_with_four_significant_digits_at_most():
    number = load_run_all().number

    assert [number(v) for v in (0.0001234, 0.5, 12.345, 999.9, 1234.5, 0)] == [
        "0.0001234", "0.5000", "12.35", "999.9", "1,234", "0",
    ]  # fmt: skip
    assert number(None) == "-"
    assert number(float("nan")) == "-"

"""Run every benchmark script and print one table: each figure next to its floor, and the ratio.

Each script in the directory (default: this one; ``--dir``) runs as a process of its own, in the
order of ORDER (scripts not named there after, by name), with ``--quick`` (its smaller sizes;
``--full`` for the defaults) and HELIOS_BENCH_FIGURES pointing at a file of its own, where
``support.report`` appends each key figure and ``support.parse_sizes`` the sizes used. Every
script's output goes to a log file (``--log``); the terminal gets one line per script. Then
one table: script, figure, value, unit, floor (name and value), ratio (value / floor) and
whether lower or higher is better; the sizes each script used; the total time. A script that
fails (non-zero exit, timeout, or no figure reported) shows as FAILED with the last lines of
its output, and the run exits 1 after every other script ran. Asserts nothing.

Run: .venv/bin/python benchmarks/run_all.py [--only NAME[,NAME]] [--json PATH] [--full]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"support.py", "run_all.py"}
# Quiet measurements first (idle CPU and memory), then pure CPU, then the servers under load,
# then the engine, and the longest, the kill campaign, last.
ORDER = (
    "idle_rss.py",
    "idle_footprint.py",
    "render_throughput.py",
    "scrub_throughput.py",
    "signin_timing.py",
    "notify_delivery.py",
    "dashboard.py",
    "webhook_burst.py",
    "metrics_scrape.py",
    "log_viewers.py",
    "push_to_register.py",
    "deploy_engine.py",
    "sample_pass.py",
    "drift_check.py",
    "kill_recovery.py",
)
TIMEOUT = 300  # seconds one script may take before it is stopped and shown as failed
TAIL_LINES = 12  # lines of a failed script's output shown under the table
COLUMNS = ("script", "figure", "value", "unit", "floor", "floor value", "ratio", "better")


@dataclass
class Outcome:
    """What one script gave: its figures and sizes, how it ended, how long it took."""

    script: str
    seconds: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    figures: list[dict] = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)

    @property
    def failure(self) -> str:
        """Why the script counts as failed ('' when it did not)."""
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.returncode:
            return f"exit status {self.returncode}"
        if not self.figures:
            return "reported no figure"
        return ""


# ---------------------------------------------------------------------------------------------
# Finding and running the scripts
# ---------------------------------------------------------------------------------------------


def discover(directory: Path, only: list[str]) -> list[Path]:
    """The benchmark scripts of ``directory`` in run order, or those of ``only`` (names with or
    without .py); exits naming the unknown ones."""
    found = {p.name: p for p in directory.glob("*.py")
             if p.name not in NOT_BENCHMARKS and not p.name.startswith("_")}  # fmt: skip
    ordered = [found[n] for n in ORDER if n in found]
    ordered += sorted((p for n, p in found.items() if n not in ORDER), key=lambda p: p.name)
    if not only:
        return ordered
    wanted = [n if n.endswith(".py") else f"{n}.py" for n in only]
    unknown = [n for n in wanted if n not in found]
    if unknown:
        sys.exit(f"no such benchmark in {directory}: {', '.join(unknown)} "
                 f"(there are: {', '.join(p.name for p in ordered)})")  # fmt: skip
    return [p for p in ordered if p.name in wanted]


def read_records(path: Path) -> tuple[list[dict], dict]:
    """The figures and the sizes a script appended to its HELIOS_BENCH_FIGURES file."""
    figures, sizes = [], {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if "sizes" in record:
                sizes = record["sizes"]
            else:
                figures.append(record)
    return figures, sizes


def run_script(script: Path, args: list[str], log, figures_file: Path, timeout: float) -> Outcome:
    """Run one script to its end (or its timeout), its output appended to ``log``."""
    env = {**os.environ, "HELIOS_BENCH_FIGURES": str(figures_file), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    command = [sys.executable, str(script), *args]
    log.write(f"\n===== {script.name}: {' '.join(command)}\n")
    log.flush()
    start = os.path.getsize(log.name)
    outcome = Outcome(script.name)
    began = time.monotonic()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)  # fmt: skip
    try:
        outcome.returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        outcome.timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the script and what it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        outcome.returncode = proc.returncode
    outcome.seconds = time.monotonic() - began
    log.flush()
    with open(log.name, encoding="utf-8", errors="replace") as again:
        again.seek(start)
        outcome.tail = again.read().splitlines()[-TAIL_LINES:]
    outcome.figures, outcome.sizes = read_records(figures_file)
    return outcome


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """Four significant digits at most, thousands separated, '-' for nothing."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{max(0, 3 - math.floor(math.log10(abs(value))))}f}"


def table_rows(outcomes: list[Outcome]) -> list[tuple[str, ...]]:
    """One row per figure; a failed script's row says FAILED and why."""
    rows = []
    for outcome in outcomes:
        for fig in outcome.figures:
            ratio = fig.get("ratio")
            rows.append((
                outcome.script, fig["figure"], number(fig["value"]), fig["unit"],
                fig["floor_name"], number(fig["floor"]),
                "-" if ratio is None else f"{number(ratio)}x", f"{fig['better']} is better",
            ))  # fmt: skip
        if outcome.failure:
            rows.append((outcome.script, f"FAILED: {outcome.failure}", *[""] * 6))
    return rows


def render_table(outcomes: list[Outcome]) -> str:
    """The table as aligned text, then the sizes used and the failures' last lines."""
    rows = [COLUMNS, *table_rows(outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    numeric = {2, 5, 6}
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if i in numeric and n else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("ratio = value / floor, both measured in the same run.")
    lines.append("sizes used:")
    for o in outcomes:
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in o.sizes.items())
        lines.append(f"  {o.script}: {shown or 'no size options'}")
    for o in outcomes:
        if o.failure:
            lines.append(f"{o.script} FAILED ({o.failure}); the last lines of its output:")
            lines.extend(f"  | {line}" for line in o.tail)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=HERE, help="where the scripts are")
    parser.add_argument("--only", default="", metavar="NAME[,NAME]", help="run only these")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also keep the figures here")
    parser.add_argument("--log", type=Path, metavar="PATH",
                        help="the scripts' output (default var/bench/run_all.log)")  # fmt: skip
    parser.add_argument("--full", action="store_true",
                        help="the scripts' default sizes, not --quick (far longer)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help=f"seconds per script (default {TIMEOUT})")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scripts = discover(args.dir.resolve(), [n for n in args.only.split(",") if n])
    log_path = args.log or Path.cwd() / "var" / "bench" / "run_all.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    script_args = [] if args.full else ["--quick"]
    print(f"{len(scripts)} benchmarks{' (quick sizes)' if script_args else ''}; "
          f"their output goes to {log_path}", flush=True)  # fmt: skip
    began = time.monotonic()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="helios-bench-figures-") as tmp, \
            log_path.open("a", encoding="utf-8") as log:  # fmt: skip
        for n, script in enumerate(scripts, 1):
            print(f"[{n}/{len(scripts)}] {script.name} … ", end="", flush=True)
            outcome = run_script(script, script_args, log, Path(tmp) / f"{script.stem}.jsonl",
                                 args.timeout)  # fmt: skip
            status = f"FAILED ({outcome.failure})" if outcome.failure else ""
            print(f"{outcome.seconds:.0f} s {status}".rstrip(), flush=True)
            outcomes.append(outcome)
    total = time.monotonic() - began
    print()
    print(render_table(outcomes))
    print(f"\ntotal {total / 60:.1f} min ({total:.0f} s) on {os.cpu_count()} cores; "
          f"output of every script: {log_path}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(
            [{"script": o.script, "seconds": round(o.seconds, 1), "failure": o.failure,
              "sizes": o.sizes, "figures": o.figures} for o in outcomes], indent=2,
        ) + "\n")  # fmt: skip
    failed = [o.script for o in outcomes if o.failure]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the Nomad double as a process: python -m tests.nomad_double --port 0 [--token T]."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from .reference import NOMAD_SPEC, reference_file
from .server import NomadDouble


def _node(text: str) -> tuple[int, int]:
    """Parse a node given as CPU_MHZ:MEMORY_MB."""
    cpu, mem = text.split(":")
    return int(cpu), int(mem)


def main(argv: list[str] | None = None) -> int:
    """Start the double, print its URL (and write it to --url-file), serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.nomad_double")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None, help="enable ACLs with this management token")
    parser.add_argument("--node", type=_node, action="append", help="CPU_MHZ:MEMORY_MB (repeat)")
    parser.add_argument("--url-file", type=Path, help="write the URL here once listening")
    parser.add_argument("--spec", type=Path, help="Nomad OpenAPI yaml (default: the pinned one)")
    parser.add_argument("--tick-interval", type=float, help="seconds between simulation steps")
    parser.add_argument("--no-auto-advance", action="store_true", help="reads do not step")
    parser.add_argument("--event-buffer-size", type=int, default=100)
    parser.add_argument("--heartbeat-interval", type=float, default=30.0)
    args = parser.parse_args(argv)
    double = NomadDouble(
        args.spec or reference_file(NOMAD_SPEC),
        token=args.token,
        nodes=args.node,
        port=args.port,
        auto_advance=not args.no_auto_advance,
        tick_interval=args.tick_interval,
        event_buffer_size=args.event_buffer_size,
        heartbeat_interval=args.heartbeat_interval,
    ).start()
    if args.url_file:
        args.url_file.write_text(double.url + "\n", encoding="utf-8")
    print(double.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    double.stop()
    if double.violations:
        print("\n".join(double.violations), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Outgoing notifications: what the safety checks and the fan-out cost, next to floors.

Measures, each as the median over --rounds, interleaved:

- ``send``: one delivery as the job makes it to a local receiver (URL parsed, host resolved
  and every address checked, then a POST to the checked address), next to a plain
  ``http.client`` POST of the same body to the same receiver (a new connection each time);
- ``refuse``: refusing ``http://localhost:PORT/`` (resolves to loopback), next to
  ``socket.getaddrinfo("localhost")`` alone;
- ``emit``: recording an event of a team with 5 notifiers that want it (the event row, 5
  delivery rows, 5 jobs queued on a real Redis after the commit), next to the same event of a
  team with none.

Prints milliseconds per operation and each figure over its floor. Asserts nothing.
Run: .venv/bin/python benchmarks/notify_delivery.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support import parse_sizes, report, start_redis

from panel.config import Settings
from panel.notify import OutgoingURLError, check_url, post

BODY = b'{"id": 1, "subject": "v1.build.failed", "team": "acme", "data": {}}'


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _median_ms(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _report(name: str, value: float, floor_name: str, floor: float) -> None:
    report(figure=name, value=value, unit="ms", floor_name=floor_name, floor=floor)


def _bench_send(rounds: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    settings = Settings(notify_allow_http=True, notify_allow_networks="127.0.0.1/32")
    url = f"http://127.0.0.1:{port}/hook"

    def send() -> None:
        target, addresses = check_url(url, settings)
        post(target, addresses, BODY, {"X-Helios-Event": "v1.build.failed"})

    def plain() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("POST", "/hook", body=BODY, headers={"Content-Type": "application/json"})
        connection.getresponse().read()
        connection.close()

    strict = Settings(notify_allow_http=True)

    def refuse() -> None:
        try:
            check_url(f"http://localhost:{port}/", strict)
        except OutgoingURLError:
            return
        raise SystemExit("localhost was not refused")

    sends, plains, refusals, lookups = [], [], [], []
    for _ in range(3):  # interleaved thirds, so drift in the machine's load hits both alike
        sends.append(_median_ms(send, rounds // 3))
        plains.append(_median_ms(plain, rounds // 3))
        refusals.append(_median_ms(refuse, rounds // 3))
        lookups.append(_median_ms(lambda: socket.getaddrinfo("localhost", port), rounds // 3))
    server.shutdown()
    _report("send (check + pinned POST)", statistics.median(sends),
            "plain http.client POST", statistics.median(plains))  # fmt: skip
    _report("refuse http://localhost/", statistics.median(refusals),
            "getaddrinfo('localhost')", statistics.median(lookups))  # fmt: skip


def _bench_emit(rounds: int, workdir: Path) -> None:
    import redis
    from cryptography.fernet import Fernet

    from panel.actions.accounts import create_user
    from panel.crypto import SecretCipher
    from panel.db import migrate_up, open_database
    from panel.events import emit
    from panel.models import Notifier, Team

    redis_proc, redis_url = start_redis(workdir)
    try:
        database = open_database(f"sqlite:///{workdir / 'helios.db'}")
        migrate_up()
        database.connect(reuse_if_open=True)
        create_user("a@example.com", "bench password 123", team_slug="busy")
        create_user("b@example.com", "bench password 123", team_slug="quiet")
        busy, quiet = Team.get(Team.slug == "busy"), Team.get(Team.slug == "quiet")
        cipher = SecretCipher(Fernet.generate_key().decode())
        for number in range(5):
            Notifier.create(team=busy, name=f"n{number}", url="https://1.1.1.1/hook",
                            subjects=["v1.build.failed"], secret=cipher.encrypt("s"))  # fmt: skip
        connection = redis.Redis.from_url(redis_url)
        data = {"app": "web", "app_id": 1, "build_id": 1, "build": 1, "git_sha": "a" * 40,
                "reason": "exit 1"}  # fmt: skip

        def emit_in(team: Team) -> Callable[[], None]:
            def run() -> None:
                with database.atomic():
                    emit("v1.build.failed", data, team=team.id, redis_conn=connection)

            return run

        fanned, alone = [], []
        for _ in range(3):
            fanned.append(_median_ms(emit_in(busy), rounds // 3))
            alone.append(_median_ms(emit_in(quiet), rounds // 3))
        _report("emit, 5 notifiers want it", statistics.median(fanned),
                "emit, no notifier", statistics.median(alone))  # fmt: skip
        database.close()
    finally:
        redis_proc.kill()
        redis_proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parse_sizes(parser, {})
    _bench_send(args.rounds)
    with tempfile.TemporaryDirectory() as workdir:
        _bench_emit(args.rounds, Path(workdir))


if __name__ == "__main__":
    main()

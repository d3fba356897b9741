"""Sign-in time for an email with an account next to one without: they should match.

Runs the panel in-process (Flask's test client) on a fresh SQLite database and a Redis server
of its own, then posts the login form for each case in turn, round after round, so that noise
falls on every case alike. The floor is a real account with a wrong password: one scrypt
verification. An unknown email, a disabled account and a GitHub-only account are checked
against a dummy hash of the same cost, so their medians should sit at the floor (ratio ~1.0x);
before that fix an unknown email answered in about 6 ms against 106 ms. Lock-out limits are
raised out of the way: this measures the password check, not the back-off.
Prints figures only; asserts nothing.

Usage: python benchmarks/signin_timing.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from support import parse_sizes, report, start_redis

ROUNDS = 40
WARMUP = 3
PASSWORD = "Copper Walrus Umbrella 42"
CASES = [
    ("known email, wrong password (floor)", "dev@example.com", "a wrong password"),
    ("known email, right password", "dev@example.com", PASSWORD),
    ("unknown email", "nobody@example.com", "a wrong password"),
    ("disabled account", "gone@example.com", "a wrong password"),
    ("GitHub-only account (no password)", "octo@example.com", "a wrong password"),
]


def build_app(data_dir: Path, redis_url: str):
    from panel.actions.accounts import create_user
    from panel.config import Settings
    from panel.db import migrate_up, open_database
    from panel.models import User
    from panel.web import create_app

    settings = Settings.from_env(
        environ={}, data_dir=data_dir, redis_url=redis_url, log_level="warning",
        login_free_failures=1_000_000, login_address_failures=1_000_000,
        login_account_failures=1_000_000,
    )  # fmt: skip
    open_database(settings.effective_database_url)
    migrate_up()
    user = create_user("dev@example.com", PASSWORD, team_slug="bench")
    User.create(email="gone@example.com", password_hash=user.password_hash, is_active=False)
    User.create(email="octo@example.com", github_id=4242, github_login="octo")
    app = create_app(settings)
    app.config["WTF_CSRF_ENABLED"] = False  # the form's token is not what is measured
    return app


def time_case(app, email: str, password: str) -> float:
    """Milliseconds of one POST /login from a fresh browser."""
    client = app.test_client()
    started = time.perf_counter()
    answer = client.post("/login", data={"email": email, "password": password})
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code not in {302, 401}:
        raise SystemExit(f"{email}: unexpected status {answer.status_code}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of every case")
    rounds = parse_sizes(parser, {"rounds": 10}).rounds
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        redis_proc, redis_url = start_redis(data_dir)
        try:
            time.sleep(0.2)  # redis-server answers ~35 ms after it starts
            app = build_app(data_dir, redis_url)
            for _ in range(WARMUP):
                for _label, email, password in CASES:
                    time_case(app, email, password)
            timings: dict[str, list[float]] = {label: [] for label, _e, _p in CASES}
            for _ in range(rounds):
                for label, email, password in CASES:
                    timings[label].append(time_case(app, email, password))
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)

    floor = statistics.median(timings[CASES[0][0]])
    print(f"POST /login, {rounds} rounds of every case, in-process, SQLite + Redis")
    print(f"{'case':<38}{'median ms':>11}{'min ms':>9}{'/ floor':>9}")
    for label, values in timings.items():
        median = statistics.median(values)
        print(f"{label:<38}{median:>11.1f}{min(values):>9.1f}{median / floor:>8.2f}x")
    for label, values in list(timings.items())[1:]:
        report(figure=f"sign-in median, {label}", value=statistics.median(values), unit="ms",
               floor_name="known email, wrong password", floor=floor,
               better="near 1")  # fmt: skip


if __name__ == "__main__":
    main()

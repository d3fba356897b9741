#!/usr/bin/python3
"""Stand-in for the nomad, consul and traefik binaries in provisioning tests.

It answers the commands the roles run (version, validate, ACL setup, agent) without doing what
the real agents do: the agent just tells systemd it is ready and waits to be stopped. The tests
therefore check what provisioning puts in place, never the agents' own behaviour.
"""

import os
import signal
import socket
import sys
import time

NAME = os.path.basename(sys.argv[0])
VERSION = "@VERSION@"


def notify_ready() -> None:
    """Tell systemd the service is up (Type=notify units), like the real agents do."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(b"READY=1")


def run_agent(args: list[str]) -> int:
    """Check the configuration named on the command line exists, then wait for a signal."""
    for arg in args:
        for prefix in ("-config-dir=", "-config=", "--configFile="):
            if arg.startswith(prefix) and not os.path.exists(arg[len(prefix) :]):
                print(f"{NAME}: {arg[len(prefix) :]} does not exist", file=sys.stderr)
                return 1
    print(f"{NAME} stand-in {VERSION} running with {' '.join(args)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: None)
    notify_ready()
    while True:
        time.sleep(3600)


def main(args: list[str]) -> int:
    """Dispatch like the real command line does, for the commands the roles use."""
    command = args[0] if args else ""
    if command in {"version", "-v", "--version", "-version"}:
        print(f"{NAME} v{VERSION} (stand-in)")
        return 0
    if command == "agent" or (NAME == "traefik" and command.startswith("--configFile")):
        return run_agent(args)
    if command in {"validate", "config", "acl", "operator", "members"}:
        return 0
    print(f"{NAME} stand-in: unsupported command {' '.join(args)!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

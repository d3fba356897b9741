#!/usr/bin/python3
"""Stand-in for the nomad, consul and traefik binaries in provisioning tests.

It answers the commands the roles run (version, validate, ACL setup, agent) without doing what
the real agents do: the agent tells systemd it is ready and waits to be stopped. The tests
therefore check what provisioning puts in place, never the agents' own behaviour.

Two pieces of state make the roles' decisions observable:

- a Consul or Nomad agent serves the HTTPS status endpoints the roles wait on after a restart
  (``/v1/status/leader``, ``/v1/operator/autopilot/health``), and Nomad the ACL policy and token
  calls the role makes for Helios (kept under ``STATE_DIR``), where its configuration says, with
  its certificate, asking for a client certificate when ``verify_https_client`` is on and for an
  ACL token on the operator endpoint; it reports itself unhealthy for its first
  ``WARMUP_SECONDS``, as a server catching up with the leader does;
- each agent appends ``start <epoch> <version>`` and ``healthy <epoch>`` lines to
  ``standin-events.log`` in its data directory, and ``nomad acl bootstrap`` answers "ACL bootstrap
  already done" once it has succeeded (its state under ``STATE_DIR``), as the real cluster does.
"""

import glob
import http.server
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import uuid

NAME = os.path.basename(sys.argv[0])
VERSION = "@VERSION@"
WARMUP_SECONDS = 2.0
STATE_DIR = "/var/lib/helios-standin"
EVENTS = "standin-events.log"


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


def load_config(path: str) -> dict:
    """The agent's JSON configuration: one file, or every *.json of a directory merged."""
    files = sorted(glob.glob(os.path.join(path, "*.json"))) if os.path.isdir(path) else [path]
    config: dict = {}
    for name in files:
        try:
            with open(name) as handle:
                loaded = json.load(handle)
        except (OSError, ValueError):
            continue
        for key, value in loaded.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    return config


def record(folder: str, line: str) -> None:
    """Append one event line to the agent's events file."""
    if not folder:
        return
    try:
        with open(os.path.join(folder, EVENTS), "a") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        print(f"{NAME}: cannot record {line!r}: {exc}", file=sys.stderr, flush=True)


class Agent:
    """Where the agent listens and what it reports, read from its configuration."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.started = time.monotonic()
        self.healthy_recorded = False
        if NAME == "consul":
            tls = config.get("tls", {}).get("defaults", {})
            client = str(config.get("client_addr", "127.0.0.1")).split()[0]
            self.listen = (client, int(config.get("ports", {}).get("https", 8501)))
            self.address = f"{config.get('advertise_addr', client)}:8300"
            self.name = config.get("node_name", socket.gethostname())
            self.verify_client = False
            self.token_header = "X-Consul-Token"
        else:
            tls = config.get("tls", {})
            advertise = config.get("advertise", {}).get("rpc", config.get("bind_addr", ""))
            self.listen = (config.get("bind_addr", "127.0.0.1"), 4646)
            self.address = f"{advertise}:4647"
            self.name = (
                f"{config.get('name', socket.gethostname())}.{config.get('region', 'global')}"
            )
            self.verify_client = bool(tls.get("verify_https_client"))
            self.token_header = "X-Nomad-Token"
        self.tls = tls
        self.data_dir = config.get("data_dir", "")

    def healthy(self) -> bool:
        return time.monotonic() - self.started >= WARMUP_SECONDS

    def serve(self) -> None:
        """Serve the status endpoints over HTTPS in a background thread."""
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/v1/status/leader":
                    self.reply(200, agent.address if agent.healthy() else "")
                elif path == "/v1/operator/autopilot/health":
                    if not self.headers.get(agent.token_header):
                        self.reply(403, "Permission denied")
                        return
                    healthy = agent.healthy()
                    if healthy and not agent.healthy_recorded:
                        agent.healthy_recorded = True
                        record(agent.data_dir, f"healthy {time.time():.3f}")
                    server = {
                        "ID": agent.name,
                        "Name": agent.name,
                        "Address": agent.address,
                        "Leader": healthy,
                        "Voter": True,
                        "Healthy": healthy,
                    }
                    self.reply(
                        200 if healthy else 429,
                        {"Healthy": healthy, "FailureTolerance": 0, "Servers": [server]},
                    )
                elif NAME == "nomad" and path.startswith("/v1/acl/"):
                    self.acl("GET", path)
                else:
                    self.reply(404, "not served by the stand-in")

            def do_POST(self) -> None:
                path = self.path.split("?")[0]
                if NAME == "nomad" and path.startswith("/v1/acl/"):
                    self.acl("POST", path)
                else:
                    self.reply(404, "not served by the stand-in")

            def acl(self, method: str, path: str) -> None:
                """The ACL policy and token calls the nomad role makes for Helios."""
                if not self.headers.get(agent.token_header):
                    self.reply(403, "Permission denied")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                status, answer = acl_call(method, path, body)
                self.reply(status, answer)

            def reply(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls["cert_file"], self.tls["key_file"])
        if self.verify_client:
            context.load_verify_locations(self.tls["ca_file"])
            context.verify_mode = ssl.CERT_REQUIRED
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        server_class = type(
            "Server",
            (http.server.ThreadingHTTPServer,),
            {"address_family": family, "daemon_threads": True},
        )
        try:
            server = server_class(self.listen, Handler)
        except OSError as exc:  # the address is another node's in a shared network namespace
            print(f"{NAME}: not serving the status endpoints: {exc}", file=sys.stderr, flush=True)
            return
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()


ACL_STATE = os.path.join(STATE_DIR, "nomad-acl.json")
_acl_lock = threading.Lock()


def acl_call(method: str, path: str, body) -> tuple[int, object]:
    """ACL policies and tokens, kept under STATE_DIR as the real servers keep them in Raft."""
    with _acl_lock:
        try:
            with open(ACL_STATE) as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            state = {"policies": {}, "tokens": {}}
        policy = re.fullmatch(r"/v1/acl/policy/([^/]+)", path)
        token = re.fullmatch(r"/v1/acl/token/([^/]+)", path)
        if policy and method == "GET":
            found = state["policies"].get(policy.group(1))
            return (200, found) if found else (404, "ACL policy not found")
        if policy and method == "POST":
            state["policies"][policy.group(1)] = dict(body or {})
        elif path == "/v1/acl/token" and method == "POST":
            created = {
                **(body or {}),
                "AccessorID": str(uuid.uuid4()),
                "SecretID": str(uuid.uuid4()),
            }
            state["tokens"][created["AccessorID"]] = created
        elif token and method == "GET":
            found = state["tokens"].get(token.group(1))
            return (200, found) if found else (404, "ACL token not found")
        else:
            return 404, "not served by the stand-in"
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(ACL_STATE + ".new", "w") as handle:
            json.dump(state, handle)
        os.replace(ACL_STATE + ".new", ACL_STATE)
        return 200, created if path == "/v1/acl/token" else None


def run_agent(args: list[str]) -> int:
    """Check the configuration named on the command line exists, serve, wait for a signal."""
    config_path = ""
    for arg in args:
        for prefix in ("-config-dir=", "-config=", "--configFile="):
            if arg.startswith(prefix):
                config_path = arg[len(prefix) :]
                if not os.path.exists(config_path):
                    print(f"{NAME}: {config_path} does not exist", file=sys.stderr)
                    return 1
    print(f"{NAME} stand-in {VERSION} running with {' '.join(args)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: None)
    if NAME in {"consul", "nomad"}:
        agent = Agent(load_config(config_path))
        record(agent.data_dir, f"start {time.time():.3f} {VERSION}")
        agent.serve()
    else:
        try:
            with open(config_path) as handle:
                storage = re.search(r"(?m)^\s*storage:\s*(\S+)", handle.read())
        except OSError:
            storage = None
        record(
            os.path.dirname(storage.group(1)) if storage else "",
            f"start {time.time():.3f} {VERSION}",
        )
    notify_ready()
    while True:
        time.sleep(3600)


def acl_bootstrap() -> int:
    """`nomad acl bootstrap`: once per cluster, then the real agent's refusal."""
    marker = os.path.join(STATE_DIR, "nomad-acl-bootstrapped")
    if os.path.exists(marker):
        print(
            "Error bootstrapping: Unexpected response code: 400 "
            "(ACL bootstrap already done (reset index: 7))",
            file=sys.stderr,
        )
        return 1
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(marker, "w") as handle:
        handle.write(f"{time.time():.3f}\n")
    print("Accessor ID  = stand-in\nSecret ID    = (from the file)")
    return 0


def consul_acl_policy(args: list[str]) -> int:
    """`consul acl policy read|create|update -name N [-description D]`: the policies the ACL
    setup made, kept with their descriptions (which carry the rules' digest), as Consul does."""
    path = os.path.join(STATE_DIR, "consul-policies.json")
    try:
        with open(path) as handle:
            policies = json.load(handle)
    except FileNotFoundError:
        policies = {}
    options = dict(zip(args[1::2], args[2::2], strict=False))
    name = options.get("-name", "")
    if args[0] == "read":
        if name not in policies:
            print(f"Failed to find policy with name {name}", file=sys.stderr)
            return 1
        print(f"Name:         {name}\nDescription:  {policies[name]}")
        return 0
    if args[0] in {"create", "update"}:
        policies[name] = options.get("-description", "")
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(path, "w") as handle:
            json.dump(policies, handle)
    return 0


def main(args: list[str]) -> int:
    """Dispatch like the real command line does, for the commands the roles use."""
    command = args[0] if args else ""
    if command in {"version", "-v", "--version", "-version"}:
        print(f"{NAME} v{VERSION} (stand-in)")
        return 0
    if command == "agent" or (NAME == "traefik" and command.startswith("--configFile")):
        return run_agent(args)
    if NAME == "nomad" and args[:2] == ["acl", "bootstrap"]:
        return acl_bootstrap()
    if NAME == "consul" and args[:2] in (["acl", "policy"],) and len(args) > 2:
        return consul_acl_policy(args[2:])
    if command in {"validate", "config", "acl", "operator", "members"}:
        return 0
    print(f"{NAME} stand-in: unsupported command {' '.join(args)!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

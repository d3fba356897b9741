"""A loopback double of the parts of GitHub's REST API Helios calls, checking each request.

It answers like GitHub's REST documentation says (API version 2022-11-28): list the
authenticated user's repositories (paged with ``Link`` headers), read a repository, create a
repository webhook (201, or 422 when the same URL is hooked already, 404 without admin rights),
list a hook's deliveries; 401 for an unknown token and 403 with ``X-RateLimit-Remaining: 0``
once its rate limit is spent. Every request's method, path, headers and body shape is checked;
a request GitHub would not understand is recorded in ``problems`` (and answered 400).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2022-11-28"
HOOK_KEYS = {"name", "active", "events", "config"}
HOOK_CONFIG_KEYS = {"url", "content_type", "secret", "insecure_ssl"}


@dataclass
class Repo:
    id: int
    full_name: str
    admin: bool = True
    private: bool = False
    default_branch: str = "main"
    hooks: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "full_name": self.full_name,
            "private": self.private,
            "default_branch": self.default_branch,
            "permissions": {"admin": self.admin, "push": True, "pull": True},
        }


class GitHubDouble:
    """State and checks; serve it with :meth:`start`, stop it with :meth:`stop`."""

    def __init__(self, token: str, repos: list[Repo], per_page_cap: int = 100) -> None:
        self.token = token
        self.repos = {repo.full_name.lower(): repo for repo in repos}
        self.per_page_cap = per_page_cap
        self.rate_limited = False
        self.requests: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GitHubDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                double.handle(self, "GET")

            def do_POST(self) -> None:
                double.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # -- answers ------------------------------------------------------------------------------

    def _send(self, handler, status: int, body: Any, headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _bad(self, handler, problem: str) -> None:
        self.problems.append(problem)
        self._send(handler, 400, {"message": "Problems parsing JSON"})

    def handle(self, handler, method: str) -> None:
        parts = urlsplit(handler.path)
        self.requests.append((method, parts.path))
        query = parse_qs(parts.query)
        if handler.headers.get("Accept") != "application/vnd.github+json":
            return self._bad(handler, f"{method} {parts.path}: Accept is not GitHub's media type")
        if handler.headers.get("X-GitHub-Api-Version") != API_VERSION:
            return self._bad(handler, f"{method} {parts.path}: no X-GitHub-Api-Version")
        if not handler.headers.get("User-Agent"):
            return self._bad(handler, f"{method} {parts.path}: GitHub requires a User-Agent")
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(handler, 401, {"message": "Bad credentials"})
        if self.rate_limited:
            limit = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225600"}
            return self._send(handler, 403, {"message": "API rate limit exceeded"}, limit)
        if method == "GET" and parts.path == "/user/repos":
            return self._list_repos(handler, query)
        found = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/hooks(?:/(\d+)/deliveries)?)?", parts.path)
        if found is None:
            return self._send(handler, 404, {"message": "Not Found"})
        repo = self.repos.get(f"{found[1]}/{found[2]}".lower())
        if repo is None:
            return self._send(handler, 404, {"message": "Not Found"})
        if method == "GET" and found[3] is None:
            return self._send(handler, 200, repo.document())
        if method == "POST" and found[3] == "/hooks":
            return self._create_hook(handler, repo)
        if method == "GET" and found[4] is not None:
            return self._deliveries(handler, repo, int(found[4]), query)
        return self._send(handler, 404, {"message": "Not Found"})

    def _list_repos(self, handler, query: dict[str, list[str]]) -> None:
        per_page = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        if not 1 <= per_page <= 100:
            return self._bad(handler, f"per_page {per_page} outside 1-100")
        per_page = min(per_page, self.per_page_cap)
        repos = sorted(self.repos.values(), key=lambda r: r.id)
        chunk = repos[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(repos):
            following = f"{self.url}/user/repos?per_page={per_page}&page={page + 1}"
            headers["Link"] = f'<{following}>; rel="next"'
        self._send(handler, 200, [r.document() for r in chunk], headers)

    def _create_hook(self, handler, repo: Repo) -> None:
        if handler.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self._bad(handler, "POST hooks: the body is not sent as JSON")
        length = int(handler.headers.get("Content-Length", "0"))
        body = json.loads(handler.rfile.read(length) or b"null")
        if not isinstance(body, dict) or set(body) - HOOK_KEYS or "config" not in body:
            return self._bad(handler, f"POST hooks: body keys {sorted(body or {})}")
        config = body["config"]
        if not isinstance(config, dict) or set(config) - HOOK_CONFIG_KEYS or "url" not in config:
            return self._bad(handler, f"POST hooks: config keys {sorted(config or {})}")
        if config.get("content_type") not in {"json", "form"} or config.get("insecure_ssl") not in {
            "0",
            "1",
        }:
            return self._bad(handler, "POST hooks: content_type or insecure_ssl not allowed")
        if not isinstance(body.get("events"), list) or not isinstance(body.get("active"), bool):
            return self._bad(handler, "POST hooks: events must be a list, active a boolean")
        if not repo.admin:
            return self._send(handler, 404, {"message": "Not Found"})
        if any(hook["config"]["url"] == config["url"] for hook in repo.hooks):
            errors = [{"resource": "Hook", "code": "custom",
                       "message": "Hook already exists on this repository"}]  # fmt: skip
            return self._send(handler, 422, {"message": "Validation Failed", "errors": errors})
        hook = {"id": 1000 + len(repo.hooks), **body, "deliveries": []}
        repo.hooks.append(hook)
        self._send(handler, 201, {"id": hook["id"], "type": "Repository", "active": True})

    def _deliveries(self, handler, repo: Repo, hook_id: int, query) -> None:
        hook = next((h for h in repo.hooks if h["id"] == hook_id), None)
        if hook is None:
            return self._send(handler, 404, {"message": "Not Found"})
        per_page = int(query.get("per_page", ["30"])[0])
        self._send(handler, 200, list(reversed(hook["deliveries"]))[:per_page])

"""A loopback double of the parts of GitHub's REST API Helios calls, checking each request.

It answers like GitHub's REST documentation says (API version 2022-11-28): list the
authenticated user's repositories (paged with ``Link`` headers), read a repository, create a
repository webhook (201, or 422 when the same URL is hooked already, 404 without admin rights),
change a hook's configuration (its secret), list a hook's deliveries, read a branch (its head
commit), a commit by a prefix of its id (422 when there is none) and a file at a ref with the
raw media type; 401 for an unknown token and 403 with ``X-RateLimit-Remaining: 0`` once its
rate limit is spent. Without a token (no Authorization header) only public repositories can be
read, as on GitHub; private ones answer 404. Every request's method, path, query, headers and
body shape is checked; a request GitHub would not understand is recorded in ``problems`` (and
answered 400). ``calls`` records (method, path, token or None) of every request.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
RAW_MEDIA_TYPE = "application/vnd.github.raw+json"  # contents: the file's bytes
HOOK_KEYS = {"name", "active", "events", "config"}
HOOK_CONFIG_KEYS = {"url", "content_type", "secret", "insecure_ssl"}
_REPO_ROUTE = re.compile(
    r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
    r"(?:(?P<hooks>/hooks)"
    r"|/hooks/(?P<hook>\d+)/(?P<hook_part>deliveries|config)"
    r"|/branches/(?P<branch>.+)"
    r"|/commits/(?P<ref>[^/]+)"
    r"|/contents/(?P<path>.+))?"
)


def fake_sha(*parts: str) -> str:
    """A stable 40-hex commit id for a name (a branch's head in the double)."""
    return hashlib.sha1(":".join(parts).encode()).hexdigest()  # noqa: S324 - not security


@dataclass
class Repo:
    id: int
    full_name: str
    admin: bool = True
    private: bool = False
    default_branch: str = "main"
    hooks: list[dict[str, Any]] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)  # name -> head commit id
    files: dict[tuple[str, str], str] = field(default_factory=dict)  # (commit id, path) -> text

    def __post_init__(self) -> None:
        if not self.branches:
            self.branches[self.default_branch] = fake_sha(self.full_name, self.default_branch)

    def commit_for(self, ref: str) -> str | None:
        """The commit a branch name or a (prefix of a) commit id names."""
        if ref in self.branches:
            return self.branches[ref]
        found = {sha for sha in self.branches.values() if re.fullmatch(r"[0-9a-f]{7,40}", ref)
                 and sha.startswith(ref)}  # fmt: skip
        found |= {sha for sha, _path in self.files if sha.startswith(ref) and len(ref) >= 7}
        return found.pop() if len(found) == 1 else None

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

    def __init__(
        self, token: str, repos: list[Repo], per_page_cap: int = 100, *, tokens: tuple = ()
    ) -> None:
        self.token = token
        self.tokens = {token, *tokens}  # every token GitHub accepts (all see the same repos)
        self.repos = {repo.full_name.lower(): repo for repo in repos}
        self.per_page_cap = per_page_cap
        self.rate_limited = False
        self.requests: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, str | None]] = []
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

            def do_PATCH(self) -> None:
                double.handle(self, "PATCH")

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

    def _send_text(self, handler, status: int, text: str) -> None:
        data = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/vnd.github.raw+json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _body(self, handler, what: str) -> dict[str, Any] | None:
        """The JSON object sent; None (answered 400) when it is not one."""
        length = int(handler.headers.get("Content-Length", "0"))
        try:
            body = json.loads(handler.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if handler.headers.get("Content-Type", "").split(";")[0] != "application/json" or not (
            isinstance(body, dict)
        ):
            self._bad(handler, f"{what}: the body is not a JSON object")
            return None
        return body

    def handle(self, handler, method: str) -> None:
        parts = urlsplit(handler.path)
        self.requests.append((method, parts.path))
        query = parse_qs(parts.query)
        authorization = handler.headers.get("Authorization")
        token = authorization.removeprefix("Bearer ") if authorization else None
        self.calls.append((method, parts.path, token))
        route = _REPO_ROUTE.fullmatch(parts.path)
        accept = MEDIA_TYPE
        if route is not None and route["path"] is not None:
            accept = RAW_MEDIA_TYPE  # Helios reads files raw, never as base64 JSON
        if handler.headers.get("Accept") != accept:
            return self._bad(handler, f"{method} {parts.path}: Accept is not {accept}")
        if handler.headers.get("X-GitHub-Api-Version") != API_VERSION:
            return self._bad(handler, f"{method} {parts.path}: no X-GitHub-Api-Version")
        if not handler.headers.get("User-Agent"):
            return self._bad(handler, f"{method} {parts.path}: GitHub requires a User-Agent")
        if authorization is not None and (
            not authorization.startswith("Bearer ") or token not in self.tokens
        ):
            return self._send(handler, 401, {"message": "Bad credentials"})
        if self.rate_limited:
            limit = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225600"}
            return self._send(handler, 403, {"message": "API rate limit exceeded"}, limit)
        if method == "GET" and parts.path == "/user/repos":
            if token is None:
                return self._send(handler, 401, {"message": "Requires authentication"})
            return self._list_repos(handler, query)
        if route is None:
            return self._send(handler, 404, {"message": "Not Found"})
        repo = self.repos.get(f"{route['owner']}/{route['name']}".lower())
        if repo is None or (repo.private and token is None):
            return self._send(handler, 404, {"message": "Not Found"})
        return self._repo_route(handler, method, route, repo, query, token)

    def _repo_route(self, handler, method, route, repo: Repo, query, token) -> None:
        reading = [name for name, given in (("hooks", route["hooks"]), ("hook", route["hook"]))
                   if given is not None]  # fmt: skip
        if reading and token is None:  # hooks are for admins: never anonymous
            return self._send(handler, 404, {"message": "Not Found"})
        allowed_query = {"deliveries": {"per_page"}}.get(route["hook_part"], set())
        if route["path"] is not None:
            allowed_query = {"ref"}
        if route["hooks"] is None and route["hook"] is None and route["path"] is None:
            allowed_query = set()
        if set(query) - allowed_query:
            return self._bad(handler, f"{method} {handler.path}: unexpected query {sorted(query)}")
        if method == "GET" and route.group(0) == f"/repos/{route['owner']}/{route['name']}":
            return self._send(handler, 200, repo.document())
        if method == "POST" and route["hooks"] is not None:
            return self._create_hook(handler, repo)
        if method == "GET" and route["hook_part"] == "deliveries":
            return self._deliveries(handler, repo, int(route["hook"]), query)
        if method == "PATCH" and route["hook_part"] == "config":
            return self._update_hook_config(handler, repo, int(route["hook"]))
        if method == "GET" and route["branch"] is not None:
            return self._branch(handler, repo, unquote(route["branch"]))
        if method == "GET" and route["ref"] is not None:
            return self._commit(handler, repo, unquote(route["ref"]))
        if method == "GET" and route["path"] is not None:
            return self._contents(handler, repo, unquote(route["path"]), query)
        return self._send(handler, 404, {"message": "Not Found"})

    def _branch(self, handler, repo: Repo, name: str) -> None:
        sha = repo.branches.get(name)
        if sha is None:
            return self._send(handler, 404, {"message": "Branch not found"})
        commit = {"sha": sha, "url": f"{self.url}/repos/{repo.full_name}/commits/{sha}"}
        self._send(handler, 200, {"name": name, "commit": commit, "protected": False})

    def _commit(self, handler, repo: Repo, ref: str) -> None:
        sha = repo.commit_for(ref)
        if sha is None:
            return self._send(handler, 422, {"message": f"No commit found for SHA: {ref}"})
        self._send(handler, 200, {"sha": sha, "commit": {"message": "a commit"}, "files": []})

    def _contents(self, handler, repo: Repo, path: str, query) -> None:
        refs = query.get("ref", [])
        if len(refs) != 1 or not refs[0]:
            return self._bad(handler, f"GET contents/{path}: give the ref to read it at")
        if path.startswith("/") or ".." in path.split("/"):
            return self._bad(handler, f"GET contents/{path}: not a path in the repository")
        sha = repo.commit_for(refs[0])
        text = repo.files.get((sha, path)) if sha else None
        if text is None:
            return self._send(handler, 404, {"message": "Not Found"})
        self._send_text(handler, 200, text)

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

    def _config_problem(self, config: Any) -> str | None:
        if not isinstance(config, dict) or set(config) - HOOK_CONFIG_KEYS or "url" not in config:
            return f"config keys {sorted(config or {})}"
        if config.get("content_type") not in {"json", "form"} or config.get("insecure_ssl") not in {
            "0",
            "1",
        }:
            return "content_type or insecure_ssl not allowed"
        if not re.fullmatch(r"https?://[^\s/]+/\S*", str(config["url"])):
            return f"url {config['url']!r} is not an http(s) URL"
        if "secret" in config and not (isinstance(config["secret"], str) and config["secret"]):
            return "secret must be a non-empty string"
        return None

    def _create_hook(self, handler, repo: Repo) -> None:
        body = self._body(handler, "POST hooks")
        if body is None:
            return None
        if set(body) - HOOK_KEYS or "config" not in body:
            return self._bad(handler, f"POST hooks: body keys {sorted(body or {})}")
        problem = self._config_problem(body["config"])
        if problem:
            return self._bad(handler, f"POST hooks: {problem}")
        events = body.get("events")
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            return self._bad(handler, "POST hooks: events must be a list of event names")
        if not isinstance(body.get("active"), bool) or body.get("name", "web") != "web":
            return self._bad(handler, "POST hooks: active must be a boolean, name 'web'")
        if not repo.admin:
            return self._send(handler, 404, {"message": "Not Found"})
        if any(hook["config"]["url"] == body["config"]["url"] for hook in repo.hooks):
            errors = [{"resource": "Hook", "code": "custom",
                       "message": "Hook already exists on this repository"}]  # fmt: skip
            return self._send(handler, 422, {"message": "Validation Failed", "errors": errors})
        hook = {"id": 1000 + len(repo.hooks), **body, "deliveries": []}
        repo.hooks.append(hook)
        self._send(handler, 201, {"id": hook["id"], "type": "Repository", "active": True})

    def _update_hook_config(self, handler, repo: Repo, hook_id: int) -> None:
        body = self._body(handler, "PATCH hook config")
        if body is None:
            return None
        problem = self._config_problem(body)
        if problem:
            return self._bad(handler, f"PATCH hook config: {problem}")
        hook = next((h for h in repo.hooks if h["id"] == hook_id), None)
        if hook is None or not repo.admin:
            return self._send(handler, 404, {"message": "Not Found"})
        hook["config"] = {**hook["config"], **body}
        shown = {**hook["config"], "secret": "********"} if "secret" in hook["config"] else {}
        self._send(handler, 200, shown or hook["config"])

    def _deliveries(self, handler, repo: Repo, hook_id: int, query) -> None:
        hook = next((h for h in repo.hooks if h["id"] == hook_id), None)
        if hook is None:
            return self._send(handler, 404, {"message": "Not Found"})
        per_page = int(query.get("per_page", ["30"])[0])
        self._send(handler, 200, list(reversed(hook["deliveries"]))[:per_page])

"""GitHub's REST API, for a person's own token: their repositories, a repository's push hook,
a branch's head commit and a file at a commit.

The only code of Helios that talks to GitHub's API. Every answer that is not a success becomes
a :class:`GitHubError` whose message says what to do (sign in again, ask for admin rights on
the repository, wait for the rate limit), never GitHub's raw body. Lists follow GitHub's
``Link`` header for their pages. Without a token (``token=None``) only public repositories
can be read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from panel.validation import ValidationError, validate_branch

__all__ = [
    "API_VERSION",
    "GitHubClient",
    "GitHubError",
    "HookDelivery",
    "Repository",
]

API_VERSION = "2022-11-28"  # X-GitHub-Api-Version these calls are written against
TIMEOUT = 10  # seconds per request
PER_PAGE = 100  # GitHub's largest page
MAX_PAGES = 50  # 5,000 repositories: more than anyone picks from a list
MAX_FILE_BYTES = 1024 * 1024  # a settings file read at a commit is small; refuse anything larger
RAW_MEDIA_TYPE = "application/vnd.github.raw+json"  # a file's bytes, not its JSON description
_NEXT_RE = re.compile(r'<([^>]+)>;\s*rel="next"')
_FULL_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
_SHA_RE = re.compile(r"[0-9a-f]{40}")
# A file's path in a repository: relative, '/'-separated parts of safe characters, no '..'.
_PATH_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
# A ref to read a file at: a full commit id or a branch name (checked by validate_branch).
_REF_RE = re.compile(r"[A-Za-z0-9._/-]{1,255}")


class GitHubError(RuntimeError):
    """GitHub refused or could not be reached; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Repository:
    """A repository as Helios uses it: matched by ``id``, which survives renames."""

    id: int
    full_name: str
    private: bool
    default_branch: str
    admin: bool  # whether the token may create the repository's webhook


@dataclass(frozen=True)
class HookDelivery:
    """The last delivery of a hook, as GitHub reports it."""

    id: int
    event: str
    status_code: int
    status: str
    delivered_at: str


def _repository(item: dict[str, Any]) -> Repository:
    permissions = item.get("permissions") or {}
    return Repository(
        id=int(item["id"]),
        full_name=str(item["full_name"]),
        private=bool(item.get("private")),
        default_branch=str(item.get("default_branch") or "main"),
        admin=bool(permissions.get("admin")),
    )


class GitHubClient:
    """Calls GitHub's API with one person's OAuth token (``api_url``: GitHub or Enterprise)."""

    def __init__(
        self, api_url: str, token: str | None, *, session: requests.Session | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "helios",
            }
        )
        if token:  # none: anonymous, public repositories only (and a lower rate limit)
            self.session.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise GitHubError(0, f"GitHub cannot be reached to {what}: {exc}") from None
        if response.status_code >= 400:
            raise GitHubError(response.status_code, self._explain(response, what))
        return response

    @staticmethod
    def _explain(response: requests.Response, what: str) -> str:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        # GitHub's 422 says "Validation Failed"; its ``errors`` say what failed.
        reasons = [
            str(e.get("message", "")) for e in body.get("errors") or [] if isinstance(e, dict)
        ]
        detail = "; ".join(filter(None, [str(body.get("message", "")), *reasons]))[:200]
        if status == 401:
            return f"GitHub no longer accepts your sign-in to {what}: sign in with GitHub again"
        if status == 403 and response.headers.get("X-RateLimit-Remaining") == "0":
            reset = response.headers.get("X-RateLimit-Reset", "")
            when = f" (it resets at {reset}, a Unix time)" if reset else ""
            return f"GitHub's rate limit is spent, so Helios cannot {what} now: wait{when}"
        if status in (403, 404):
            return (
                f"GitHub refused to {what} ({status}): the repository does not exist, or your "
                "GitHub account lacks admin rights on it; ask an owner, or add the webhook by "
                "hand with the payload URL and secret shown on the app's settings page"
            )
        if status == 422:
            return f"GitHub did not accept the request to {what}: {detail or 'invalid request'}"
        return f"GitHub answered {status} when asked to {what}: try again later"

    def get(self, path: str, what: str) -> Any:
        """The JSON of GET ``path`` (an API path starting with '/')."""
        return self._call("GET", f"{self.api_url}{path}", what).json()

    def _pages(self, path: str, what: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url: str | None = f"{self.api_url}{path}"
        pages = 0
        while url is not None and pages < MAX_PAGES:
            response = self._call("GET", url, what, params=params if pages == 0 else None)
            yield from response.json()
            pages += 1
            found = _NEXT_RE.search(response.headers.get("Link", ""))
            url = found[1] if found else None

    @staticmethod
    def _repo_path(full_name: str) -> str:
        if not _FULL_NAME_RE.fullmatch(full_name):
            raise GitHubError(0, f"{full_name[:120]!r} is not a GitHub OWNER/REPO")
        owner, repo = full_name.split("/")
        return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"

    # -- what Helios asks --------------------------------------------------------------------

    def repositories(self, search: str = "") -> list[Repository]:
        """The repositories the person can reach, recently pushed first; ``search`` filters
        their OWNER/REPO names (case-insensitive)."""
        params = {"per_page": PER_PAGE, "sort": "pushed", "direction": "desc"}
        needle = search.strip().lower()
        found = [
            _repository(item)
            for item in self._pages("/user/repos", "list your repositories", params)
        ]
        return [repo for repo in found if needle in repo.full_name.lower()]

    def repository(self, full_name: str) -> Repository:
        """One repository (its numeric id, default branch and whether it is private)."""
        return _repository(self.get(self._repo_path(full_name), f"read {full_name}"))

    def create_push_hook(self, full_name: str, payload_url: str, secret: str) -> int:
        """Create the repository's webhook for pushes to ``payload_url``, signed with
        ``secret``; its id."""
        body = {
            "name": "web",
            "active": True,
            "events": ["push"],
            "config": {
                "url": payload_url,
                "content_type": "json",
                "secret": secret,
                "insecure_ssl": "0",
            },
        }
        what = f"create a webhook on {full_name}"
        path = f"{self._repo_path(full_name)}/hooks"
        return int(self._call("POST", f"{self.api_url}{path}", what, json=body).json()["id"])

    def update_hook_secret(
        self, full_name: str, hook_id: int, payload_url: str, secret: str
    ) -> None:
        """Give a hook Helios created a new secret (its URL, content type and events stay)."""
        config = {"url": payload_url, "content_type": "json", "secret": secret, "insecure_ssl": "0"}
        path = f"{self._repo_path(full_name)}/hooks/{int(hook_id)}/config"
        what = f"change the webhook secret on {full_name}"
        self._call("PATCH", f"{self.api_url}{path}", what, json=config)

    def last_delivery(self, full_name: str, hook_id: int) -> HookDelivery | None:
        """The newest delivery of a hook (None before the first)."""
        path = f"{self._repo_path(full_name)}/hooks/{int(hook_id)}/deliveries"
        what = f"read the webhook deliveries of {full_name}"
        items = self._call("GET", f"{self.api_url}{path}", what, params={"per_page": 1}).json()
        if not items:
            return None
        item = items[0]
        return HookDelivery(
            id=int(item["id"]),
            event=str(item.get("event", "")),
            status_code=int(item.get("status_code") or 0),
            status=str(item.get("status", "")),
            delivered_at=str(item.get("delivered_at", "")),
        )

    def branch_head(self, full_name: str, branch: str) -> str:
        """The full commit id at the head of ``branch``."""
        try:
            branch = validate_branch(branch, "branch")
        except ValidationError as exc:
            raise GitHubError(0, exc.message) from None
        path = f"{self._repo_path(full_name)}/branches/{quote(branch, safe='/')}"
        what = f"read the head of branch {branch} of {full_name}"
        try:
            found = self.get(path, what)
        except GitHubError as exc:
            if exc.status != 404:
                raise
            raise GitHubError(
                404,
                f"GitHub has no branch {branch!r} in {full_name}, or does not show you the "
                "repository (a private one needs the token of someone who can read it): check "
                "the app's branch and repository",
            ) from None
        return self._sha(found.get("commit", {}).get("sha") if isinstance(found, dict) else None)

    def commit_sha(self, full_name: str, ref: str) -> str:
        """The full id of the commit ``ref`` (7 to 40 hex digits) names."""
        if not re.fullmatch(r"[0-9a-f]{7,40}", ref):
            raise GitHubError(0, f"{ref[:60]!r} is not a commit id: use 7 to 40 hex digits")
        what = f"read commit {ref} of {full_name}"
        try:
            found = self.get(f"{self._repo_path(full_name)}/commits/{ref}", what)
        except GitHubError as exc:
            if exc.status not in (404, 422):
                raise
            raise GitHubError(
                exc.status, f"GitHub knows no commit {ref} in {full_name}: check the commit id"
            ) from None
        return self._sha(found.get("sha") if isinstance(found, dict) else None)

    @staticmethod
    def _sha(value: Any) -> str:
        if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
            raise GitHubError(0, "GitHub answered without a commit id: try again later")
        return value

    def file_at(self, full_name: str, path: str, ref: str) -> str | None:
        """The text of the file ``path`` at ``ref`` (a commit id or branch); None when the
        repository has no such file there."""
        parts = path.split("/")
        if len(path) > 1024 or not all(_PATH_PART_RE.fullmatch(part) for part in parts):
            raise GitHubError(0, f"{path[:120]!r} is not a file path in a repository")
        if not _REF_RE.fullmatch(ref) or ".." in ref or ref.startswith(("/", "-")):
            raise GitHubError(0, f"{ref[:120]!r} is not a commit id or branch name")
        quoted = "/".join(quote(part, safe="") for part in parts)
        url = f"{self.api_url}{self._repo_path(full_name)}/contents/{quoted}"
        what = f"read {path} at {ref[:12]} of {full_name}"
        try:
            response = self._call(
                "GET", url, what, params={"ref": ref}, headers={"Accept": RAW_MEDIA_TYPE},
                stream=True,
            )  # fmt: skip
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        with response:
            if response.headers.get("Content-Type", "").startswith("application/json"):
                raise GitHubError(0, f"{path} at {ref[:12]} of {full_name} is not a file")
            body = response.raw.read(MAX_FILE_BYTES + 1, decode_content=True)
        if len(body) > MAX_FILE_BYTES:
            raise GitHubError(0, f"{path} at {ref[:12]} of {full_name} is larger than 1 MiB")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise GitHubError(0, f"{path} at {ref[:12]} of {full_name} is not UTF-8 text") from None

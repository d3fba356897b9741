"""GitHub's REST API, for a person's own token: their repositories, a repository's push hook.

The only code of Helios that talks to GitHub's API. Every answer that is not a success becomes
a :class:`GitHubError` whose message says what to do (sign in again, ask for admin rights on
the repository, wait for the rate limit), never GitHub's raw body. Lists follow GitHub's
``Link`` header for their pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

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
_NEXT_RE = re.compile(r'<([^>]+)>;\s*rel="next"')
_FULL_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")


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

    def __init__(self, api_url: str, token: str, *, session: requests.Session | None = None):
        self.api_url = api_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "helios",
            }
        )

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
            detail = str(response.json().get("message", ""))[:200]
        except ValueError:
            detail = ""
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

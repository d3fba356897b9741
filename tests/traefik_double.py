"""A stand-in for Traefik's API, enough for the domain check: ``GET /api/http/routers``
answers the routers a test put in ``routers``, paged as Traefik pages them (``page`` and
``per_page`` arguments; ``X-Next-Page`` names the next page, 1 on the last one).

The routers are written as Traefik v2/v3 documents them, e.g.::

    {"name": "web@consulcatalog", "rule": "Host(`web.example.com`)", "status": "enabled",
     "using": ["websecure"], "tls": {"certResolver": "le"}, "service": "web@consulcatalog",
     "provider": "consulcatalog", "priority": 42}

with ``"status": "disabled"`` and ``"error": ["..."]`` for a router Traefik refused.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["TraefikDouble"]


class TraefikDouble:
    """Traefik's API on a free loopback port until ``close``."""

    def __init__(self) -> None:
        self.routers: list[dict[str, Any]] = []
        self.requests: list[str] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                double.requests.append(self.path)
                url = urlsplit(self.path)
                if url.path != "/api/http/routers":
                    self._answer(404, {"message": "404 page not found"})
                    return
                query = parse_qs(url.query)
                page = int(query.get("page", ["1"])[0])
                per_page = int(query.get("per_page", ["100"])[0])
                items = list(double.routers)
                start = (page - 1) * per_page
                following = page + 1 if len(items) > start + per_page else 1
                self._answer(200, items[start : start + per_page], following)

            def _answer(self, status: int, body: Any, following: int = 1) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Next-Page", str(following))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The API's address, as HELIOS_TRAEFIK_API takes it."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

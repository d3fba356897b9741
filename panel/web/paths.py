"""Path parameters are checked before any view runs, for every rule of the app.

``<int:…>`` takes ASCII digits up to the largest row id a supported database stores, so no URL
can overflow the database driver (a bigger number matches no rule: 404). On the pages, an app
or team ``<slug>``, a ``<hostname>`` and an env ``<key>`` go through the validators the actions
and the API use: a value no row can hold answers 404 before the database is asked. The API
checks its own path values and answers its own JSON errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, abort, request
from werkzeug.routing import IntegerConverter, Map

from panel.validation import ValidationError, validate_domain, validate_env_key, validate_slug

__all__ = ["ID_MAX", "PATH_VALIDATORS", "RowIdConverter", "init_app", "parse_row_id"]

ID_MAX = 2**63 - 1  # the largest row id SQLite and PostgreSQL (bigint) store
# Path parameter name → the validator its value must pass on the pages.
PATH_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "slug": validate_slug,
    "hostname": validate_domain,
    "key": validate_env_key,
}


class RowIdConverter(IntegerConverter):
    """``<int:…>``: 1-19 ASCII digits, at most ID_MAX (Unicode digits and bigger numbers: 404)."""

    regex = r"[0-9]{1,19}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", ID_MAX)
        super().__init__(map, *args, **kwargs)


def parse_row_id(text: str | None) -> int | None:
    """A row id or sequence number sent as text (form field, header, query): 0..ID_MAX in
    ASCII digits, else None — never an int too large for the database."""
    if text and text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= ID_MAX:
        return int(text)
    return None


def _check_path_values(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """404 for a page path value that fails its validator (no row can hold it)."""
    if not values or request.blueprint == "api":
        return
    for name, value in values.items():
        check = PATH_VALIDATORS.get(name)
        if check is None or not isinstance(value, str):
            continue
        try:
            check(value)
        except ValidationError:
            abort(404)


def init_app(app: Flask) -> None:
    """Install the bounded ``int`` converter and the page path checks (before any blueprint)."""
    app.url_map.converters["int"] = RowIdConverter
    app.url_value_preprocessor(_check_path_values)

"""Helpers shared by the server-rendered pages: who is signed in, errors on forms, paging."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import abort, request
from flask_wtf import FlaskForm
from peewee import Query

from panel.actions.common import ActionError, FieldError
from panel.web.access import ACTION_STATUS, Principal, abort_for, current_principal

__all__ = ["Page", "format_time", "paginate", "show_action_error", "signed_in"]

MAX_PAGE = 10_000  # deeper than anyone pages by hand; keeps OFFSET bounded


def signed_in() -> Principal:
    """The principal of a page request (the views are already behind login_required)."""
    principal = current_principal()
    if principal is None:
        abort(401)
    return principal


def show_action_error(
    form: FlaskForm, exc: ActionError, aliases: Mapping[str, str] | None = None
) -> int:
    """Show an ActionError's problems next to their fields (or above the form); the status.

    Every field at fault gets its message at once. Errors about permission or a missing
    object that no field of the form explains become the matching error page instead.
    ``aliases`` maps a field name of the action to the form's.
    """
    problems = exc.errors or (FieldError(exc.field or "", str(exc)),)
    for problem in problems:
        name = (aliases or {}).get(problem.field, problem.field)
        field = form._fields.get(name) if name else None
        if field is None and exc.code in {"forbidden", "not_found"}:
            abort_for(exc)
        if field is None or field.type in {"CSRFTokenField", "HiddenField"}:
            form.form_errors.append(problem.message)
        else:
            field.errors = [*field.errors, problem.message]
    # A form that names a missing thing (an unknown email) is a mistake in the form: 422.
    return 422 if exc.code == "not_found" else ACTION_STATUS.get(exc.code, 400)


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows, its number (from 1) and whether more follow."""

    items: list[Any]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        """True past the first page."""
        return self.number > 1


def page_number() -> int:
    """The ``page`` query argument, clamped to 1..MAX_PAGE (nonsense counts as 1)."""
    raw = request.args.get("page", "1")
    # ASCII digits only, and few: int() of thousands of digits raises, of '٣' succeeds.
    number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 1
    return min(max(number, 1), MAX_PAGE)


def paginate(query: Query, per_page: int) -> Page:
    """The current page of ``query`` (one extra row is read to know whether more follow)."""
    number = page_number()
    rows = list(query.limit(per_page + 1).offset((number - 1) * per_page))
    return Page(rows[:per_page], number, len(rows) > per_page)


def format_time(value: datetime | None) -> str:
    """A stored UTC timestamp as people read it; an em dash when absent."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"

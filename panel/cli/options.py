"""Command-line options derived from the schema: each checked by its field's own rule, with the
field's description as its help (the client commands and the operator commands share them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click
from pydantic import BaseModel

from panel.schema.base import Problems, check_field, walk

__all__ = ["SchemaValue", "schema_options"]


class SchemaValue(click.ParamType):
    """An option that sets a field of a schema model: checked by the field's own rule, the one
    the panel applies, so a bad value is a usage error (exit 2) that says how to fix it.

    An option given several times (``multiple``) sets a list field: each value is checked as
    a list of one, and kept as the rule normalised it.
    """

    def __init__(self, model: type[BaseModel], field: str) -> None:
        self.model, self.field = model, field
        self.name = field

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The checked, normalised value."""
        if not isinstance(value, str):
            return value
        several = isinstance(param, click.Option) and param.multiple
        try:
            checked = check_field(self.model, self.field, [value] if several else value)
        except Problems as exc:
            self.fail(exc.problems[0].message, param, ctx)
        return checked[0] if several else checked


def schema_options(
    model: type[BaseModel],
    *,
    defaults: bool = True,
    flags: Mapping[str, str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable:
    """Decorator: one ``--option`` per field of ``model`` the CLI sets, help from the schema.

    The options arrive as keyword arguments named like the fields (None when not given; a
    required field makes a required option). ``flags`` names an option otherwise than after
    its field (``{"ssh_user": "--user"}``); ``settings`` adds click settings to a field's
    option (``{"groups": {"multiple": True}}``).
    """

    def decorate(command: Callable) -> Callable:
        for name, info, meta in reversed(list(walk(model, cli=True))):
            help_text = info.description or meta.label
            default = info.get_default()
            if defaults and not info.is_required() and default not in (None, ""):
                help_text = f"{help_text} (default {default})"
            flag = (flags or {}).get(name) or "--" + name.replace("_", "-")
            extra = {"required": info.is_required(), **(settings or {}).get(name, {})}
            option = click.option(
                flag, name, type=SchemaValue(model, name), help=help_text, **extra
            )
            command = option(command)
        return command

    return decorate

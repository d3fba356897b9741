"""How a resource's fields are declared, checked and explained (pure: pydantic only).

A resource is a pydantic model whose fields are ``Annotated`` with:

- a type (JSON Schema and strict API parsing come from it),
- :func:`checked`: the allow-list validator of ``panel.validation`` that normalises the value
  and words the error (the same rule and message everywhere the field is set),
- ``Field(default, description=help, title=label, examples=[…])``,
- :class:`Meta`: what pydantic has no word for: secrecy, the role that may change the field,
  whether a release freezes it, how a form and the CLI show it.

:func:`check` runs a model over raw input and returns every error of it at once, each with
its field and a message saying how to fix it (never pydantic's wording), so the API, the pages,
the CLI and the manifest loader report the same things in the same words.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
)
from pydantic import (
    ValidationError as PydanticError,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from panel.states import Role
from panel.validation import ValidationError

__all__ = [
    "FieldProblem",
    "Meta",
    "Problems",
    "Resource",
    "check",
    "check_field",
    "checked",
    "cross",
    "enum_values",
    "field_meta",
    "walk",
]

M = TypeVar("M", bound=BaseModel)
Widget = Literal["text", "number", "textarea", "checkbox", "select", "password", "hidden"]


@dataclass(frozen=True)
class Meta:
    """What a field is beyond its type: shown how, secret or not, changed by whom.

    ``kind`` words the JSON type in errors ("a whole number"); ``release`` marks the settings a
    release freezes (what a rollback brings back); ``cli`` and ``form`` say whether the CLI and
    the page forms offer the field.
    """

    label: str
    kind: str = "text"
    secret: bool = False
    changed_by: Role = Role.ADMIN
    release: bool = False
    cli: bool = True
    form: bool = True
    widget: Widget = "text"
    placeholder: str = ""
    group: str = ""


@dataclass(frozen=True)
class FieldProblem:
    """One field at fault and how to fix it."""

    field: str
    message: str


class Problems(ValueError):
    """Every problem of one input, each with its field (``field`` "" when none applies)."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(problems[0].message if problems else "invalid input")
        self.problems = problems


class Resource(BaseModel):
    """Base of every resource model: unknown keys are refused, instances are frozen.

    ``example`` is a valid instance as JSON, shown in the API's description of a request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
    example: ClassVar[dict[str, Any] | None] = None


# ---------------------------------------------------------------------------------------------
# Declaring fields
# ---------------------------------------------------------------------------------------------


def checked(
    validator: Callable[..., Any],
    name: str,
    *extra: Any,
    before: bool = False,
    optional: bool = False,
) -> AfterValidator | BeforeValidator:
    """A validator running ``validator(value, *extra, name)`` with its own message.

    The validators of ``panel.validation`` raise ValidationError naming the field and how to
    fix it; the message is kept as is (pydantic's own wording never reaches a user). By
    default it runs after pydantic's type check (and lets None through); with ``before`` it
    sees the value as given, so its message covers a wrong type too. With ``optional``, ''
    and None mean none (an empty form field, an option not given).
    """

    def run(value: Any) -> Any:
        if (optional and value in ("", None)) or (value is None and not before):
            return None
        try:
            return validator(value, *extra, name) if extra else validator(value, name)
        except ValidationError as exc:
            raise PydanticCustomError("helios", "{message}", {"message": exc.message}) from None

    return BeforeValidator(run) if before else AfterValidator(run)


def cross(field: str, message: str) -> PydanticCustomError:
    """An error about several fields, reported on ``field`` (raise it in a model validator)."""
    return PydanticCustomError("helios", "{message}", {"message": message, "field": field})


def field_meta(info: FieldInfo) -> Meta:
    """The :class:`Meta` of a field (a plain one named after the field when it has none)."""
    for item in info.metadata:
        if isinstance(item, Meta):
            return item
    return Meta(label=info.title or "")


def walk(model: type[BaseModel], **wanted: Any) -> Iterator[tuple[str, FieldInfo, Meta]]:
    """The fields of ``model`` whose Meta has every attribute value in ``wanted``."""
    for name, info in model.model_fields.items():
        meta = field_meta(info)
        if all(getattr(meta, key) == value for key, value in wanted.items()):
            yield name, info, meta


# ---------------------------------------------------------------------------------------------
# Checking input
# ---------------------------------------------------------------------------------------------

# pydantic error types that say "the JSON type is wrong", worded by the field's Meta.kind.
_TYPE_ERRORS = {
    "string_type",
    "int_type",
    "int_parsing",
    "int_from_float",
    "bool_type",
    "bool_parsing",
    "list_type",
    "dict_type",
    "float_type",
    "model_type",
    "model_attributes_type",
    "literal_error",
    "enum",
    "none_required",
    "is_instance_of",
    "union_tag_invalid",
}


def _problem(model: type[BaseModel], error: Mapping[str, Any], prefix: str) -> FieldProblem:
    """One pydantic error, worded for a person and named by its top-level field."""
    loc = [str(part) for part in error.get("loc", ())]
    ctx = error.get("ctx") or {}
    name = loc[0] if loc else str(ctx.get("field", ""))
    shown = f"{prefix}{name}" if name else prefix.rstrip(".")
    kind = error["type"]
    info = model.model_fields.get(name)
    if kind == "helios":
        return FieldProblem(shown, str(ctx.get("message", error.get("msg", ""))))
    if kind == "extra_forbidden":
        allowed = ", ".join(model.model_fields) or "nothing"
        return FieldProblem(shown[:100], f"unknown field {name[:100]!r}: this takes {allowed}")
    if kind == "missing":
        return FieldProblem(shown, f"{shown} is required")
    if kind in _TYPE_ERRORS or kind.endswith("_type") or info is not None:
        wording = field_meta(info).kind if info is not None else "a valid value"
        return FieldProblem(shown, f"{shown} must be {wording}")
    return FieldProblem(shown, f"{shown}: {error.get('msg', 'is not valid')}")


def problems_of(model: type[BaseModel], exc: PydanticError, prefix: str = "") -> list[FieldProblem]:
    """Every problem of a pydantic ValidationError, one per field, in field order."""
    seen: dict[str, FieldProblem] = {}
    for error in exc.errors(include_url=False):
        problem = _problem(model, error, prefix)
        seen.setdefault(problem.field, problem)  # a union reports each member: keep the first
    order = {name: i for i, name in enumerate(model.model_fields)}
    return sorted(seen.values(), key=lambda p: order.get(p.field.removeprefix(prefix), len(order)))


def check(
    model: type[M],
    data: Any,
    *,
    strict: bool = False,
    prefix: str = "",
    context: Mapping[str, Any] | None = None,
) -> M:
    """``data`` validated by ``model``; :class:`Problems` listing every error otherwise.

    ``strict`` is for JSON bodies (a number must be a JSON number); forms and the CLI send
    text, which the lax mode turns into numbers where the field wants one.
    """
    try:
        return model.model_validate(data, strict=strict, context=dict(context or {}))
    except PydanticError as exc:
        raise Problems(problems_of(model, exc, prefix)) from None


_ADAPTERS: dict[tuple[type[BaseModel], str], TypeAdapter[Any]] = {}


def check_field(model: type[BaseModel], name: str, value: Any) -> Any:
    """One field's value checked and normalised alone (the CLI checks options this way)."""
    key = (model, name)
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        adapter = _ADAPTERS[key] = TypeAdapter(model.model_fields[name].rebuild_annotation())
    try:
        return adapter.validate_python(value)
    except PydanticError as exc:
        error = exc.errors(include_url=False)[0]
        problem = _problem(model, {**error, "loc": (name, *error.get("loc", ()))}, "")
        raise Problems([problem]) from None


def enum_values(kind: type[enum.Enum]) -> list[str]:
    """The values of a str enum, for choices and JSON Schema."""
    return [member.value for member in kind]

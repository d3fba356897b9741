"""The panel's forms (Flask-WTF, so each carries its CSRF token).

Forms only parse: most are derived from the schema (``schema_form``), whose rules the actions
apply; their errors are shown next to the field they name (see
``panel.web.pages.show_action_error``).
"""

from __future__ import annotations

import enum
import types
from typing import Any, Union, get_args, get_origin

from flask_wtf import FlaskForm
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from wtforms import (
    BooleanField,
    Field,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from panel.models import Role, TokenScope
from panel.schema.accounts import MemberIn, TeamIn, TokenIn
from panel.schema.apps import AppSettings, DeployIn, DomainIn, EnvIn, EnvKey, NewApp
from panel.schema.base import Meta, field_meta, walk
from panel.schema.hosts import HostIn

__all__ = [
    "EXPIRY_DAYS",
    "ROLE_CHOICES",
    "AppForm",
    "AuditFilterForm",
    "DeployForm",
    "DomainForm",
    "EnvForm",
    "HostForm",
    "MemberForm",
    "NewAppForm",
    "TeamForm",
    "TokenForm",
]

# Choices are plain values (shown as their own labels): the same in every WTForms 3 release.
ROLE_CHOICES = [r.value for r in Role]
# What a token's expiry choice means in days; None: it never expires.
EXPIRY_DAYS = {"30 days": 30, "90 days": 90, "1 year": 366, "never": None}


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


class SecretTextAreaField(TextAreaField):
    """A text area that never shows a value: what was pasted (a private key) stays out of the
    page, even when the form comes back with errors."""

    def _value(self) -> str:
        return ""


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types of a union (``X | None``), or the annotation alone."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _is_list(annotation: Any) -> bool:
    """True when the field holds a list (a select of several values)."""
    return any(get_origin(member) is list for member in _members(annotation))


def _choices(info: FieldInfo) -> list[str] | None:
    """A select's choices, as the schema states them: an enum's values, or the ``enum`` of the
    field's JSON Schema (of its items, for a list); None when the page sets them."""
    for member in _members(info.annotation):
        if isinstance(member, type) and issubclass(member, enum.Enum):
            return [item.value for item in member]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    items = extra.get("items")
    found = extra.get("enum") or (items.get("enum") if isinstance(items, dict) else None)
    return list(found) if isinstance(found, list) else None


def _widget_field(name: str, info: FieldInfo, meta: Meta) -> Field:
    """The WTForms field that shows one schema field: label, help and default from the schema.

    Every value arrives as text and is checked by the schema in the action (so a form with
    four bad fields shows four errors after one submit); only the widget differs. A select of
    a list is a set of checkboxes; a secret never shows its value back in the page.
    """
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if isinstance(default, enum.Enum):
        default = default.value
    many = meta.widget == "select" and _is_list(info.annotation)
    if isinstance(default, list | tuple) and not many:
        default = " ".join(default)
    options = {"label": meta.label or name, "description": info.description or "",
               "default": default}  # fmt: skip
    if meta.widget == "checkbox":
        return BooleanField(**options)
    if meta.widget == "select":
        choices = _choices(info)
        if many:
            return SelectMultipleField(
                **options, choices=choices, validate_choice=False,
                widget=ListWidget(prefix_label=False), option_widget=CheckboxInput(),
            )  # fmt: skip
        return SelectField(**options, choices=choices, validate_choice=False)
    render = {"spellcheck": "false"}
    if meta.placeholder:
        render["placeholder"] = meta.placeholder
    if meta.secret:
        render["autocomplete"] = "off"
    if meta.widget == "number":
        bounds = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        render.update(type="number", inputmode="numeric")
        render.update({k[:3]: v for k, v in bounds.items() if k in ("minimum", "maximum")})
    if meta.widget == "textarea":
        area = SecretTextAreaField if meta.secret else TextAreaField
        return area(**options, filters=[_strip], render_kw=render)
    if meta.widget == "password" or meta.secret:
        return PasswordField(**options, filters=[_strip], render_kw=render)
    return StringField(**options, filters=[_strip], render_kw=render)


def schema_form(
    *models: type[BaseModel], first: tuple[str, ...] = (), doc: str = ""
) -> type[FlaskForm]:
    """A form class with one field per field of ``models`` that a form shows (``first`` first).

    The form's ``values()`` are what the action takes; ``groups()`` yields the fields by the
    schema's groups, for the template.
    """
    infos = {name: info for model in models for name, info in model.model_fields.items()}
    names = [*first, *(name for name in infos if name not in first)]
    attrs: dict[str, object] = {"__doc__": doc or models[0].__doc__, "schemas": models}
    for name in names:
        meta = field_meta(infos[name])
        if meta.form:
            attrs[name] = _widget_field(name, infos[name], meta)
    return type(f"{models[0].__name__}Form", (FlaskForm, SchemaForm), attrs)


class SchemaForm:
    """What every form derived from a schema offers its view and its template."""

    schemas: tuple[type[BaseModel], ...]

    def _infos(self) -> dict[str, FieldInfo]:
        return {name: info for model in self.schemas for name, info in model.model_fields.items()}

    def values(self, *names: str) -> dict[str, object]:
        """The submitted values of the schema's fields (all, or ``names``) for the action.

        An empty number field means its default; other text is passed as typed.
        """
        out: dict[str, object] = {}
        infos = self._infos()
        for name in names or infos:
            field = self._fields.get(name)  # type: ignore[attr-defined]
            if field is None:
                continue
            value = field.data
            info = infos[name]
            if value in ("", None) and field_meta(info).widget == "number":
                value = None if info.is_required() else info.get_default()
            out[name] = value
        return out

    def groups(self) -> list[tuple[str, str, list[Field]]]:
        """(group, hint, fields) in schema order, for fieldsets."""
        found: dict[str, list[Field]] = {}
        hints: dict[str, str] = {}
        for model in self.schemas:
            hints.update(getattr(model, "groups", {}))
            for name, _info, meta in walk(model):
                field = self._fields.get(name)  # type: ignore[attr-defined]
                if field is not None and meta.group:
                    found.setdefault(meta.group, []).append(field)
        return [(group, hints.get(group, ""), fields) for group, fields in found.items()]


# An app's settings, the settings page's form; a new app adds its team and name first.
AppForm = schema_form(AppSettings)
NewAppForm = schema_form(NewApp, first=("team", "slug"))
DeployForm = schema_form(DeployIn)


EnvForm = schema_form(EnvKey, EnvIn, doc="Set one environment variable or secret.")

DomainForm = schema_form(DomainIn)

# A host to provision (operators). Its field "groups" hides SchemaForm.groups(): the page
# lays out the fields itself.
HostForm = schema_form(HostIn)

MemberForm = schema_form(MemberIn)

TeamForm = schema_form(TeamIn)


def _token_field(name: str) -> dict[str, str]:
    """The label and help of a field of TokenIn, for the token page's field of that name."""
    info = TokenIn.model_fields[name]
    return {"label": field_meta(info).label, "description": info.description or ""}


class TokenForm(FlaskForm):
    """A new personal API token.

    Made by hand, not by ``schema_form(TokenIn)``: the page offers the expiry as a few named
    durations ("30 days" … "never", turned into TokenIn's ``days``) and asks for the two
    required fields with its own prompts before anything is sent. Labels and help of the
    fields named as in TokenIn come from it, and ``create_token`` checks every value by it.
    """

    name = StringField(
        **_token_field("name"),
        filters=[_strip],
        validators=[DataRequired("Name the token, e.g. laptop CLI.")],
        render_kw={"placeholder": field_meta(TokenIn.model_fields["name"]).placeholder},
    )
    scopes = SelectMultipleField(
        **_token_field("scopes"),
        choices=[s.value for s in TokenScope],
        default=[TokenScope.READ.value],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired("Pick at least one scope.")],
    )
    expires = SelectField("Expires after", choices=list(EXPIRY_DAYS), default="90 days")


class AuditFilterForm(FlaskForm):
    """Filter the audit log (a GET form: it changes nothing, so it carries no CSRF token)."""

    class Meta:
        csrf = False

    subject = StringField(
        "Subject starts with",
        filters=[_strip],
        validators=[
            Optional(),
            Length(max=100),
            Regexp(r"^[a-z0-9._]+$", message="Use lowercase letters, digits, '.' and '_'."),
        ],
    )

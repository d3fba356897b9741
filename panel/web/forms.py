"""The panel's forms (Flask-WTF, so each carries its CSRF token).

Forms only parse: the rules live in ``panel.actions.apps``, whose errors are shown next to the field
they name (see ``panel.web.pages.show_action_error``).
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from wtforms import (
    BooleanField,
    EmailField,
    Field,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from panel.models import Role, TokenScope
from panel.schema.apps import AppSettings, DeployIn, DomainIn, EnvIn, EnvKey, NewApp
from panel.schema.base import Meta, field_meta, walk

__all__ = [
    "EXPIRY_DAYS",
    "ROLE_CHOICES",
    "AppForm",
    "AuditFilterForm",
    "DeployForm",
    "DomainForm",
    "EnvForm",
    "MemberForm",
    "NewAppForm",
    "TokenForm",
]

# Choices are plain values (shown as their own labels): the same in every WTForms 3 release.
ROLE_CHOICES = [r.value for r in Role]
# What a token's expiry choice means in days; None: it never expires.
EXPIRY_DAYS = {"30 days": 30, "90 days": 90, "1 year": 366, "never": None}


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _widget_field(name: str, info: FieldInfo, meta: Meta) -> Field:
    """The WTForms field that shows one schema field: label, help and default from the schema.

    Every value arrives as text and is checked by the schema in the action (so a form with
    four bad fields shows four errors after one submit); only the widget differs.
    """
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if isinstance(default, list | tuple):
        default = " ".join(default)
    options = {"label": meta.label or name, "description": info.description or "",
               "default": default}  # fmt: skip
    if meta.widget == "checkbox":
        return BooleanField(**options)
    if meta.widget == "select":
        return SelectField(**options, validate_choice=False)
    render = {"spellcheck": "false"}
    if meta.placeholder:
        render["placeholder"] = meta.placeholder
    if meta.widget == "number":
        bounds = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        render.update(type="number", inputmode="numeric")
        render.update({k[:3]: v for k, v in bounds.items() if k in ("minimum", "maximum")})
    if meta.widget == "textarea":
        return TextAreaField(**options, filters=[_strip], render_kw=render)
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


class MemberForm(FlaskForm):
    """Add a person with an account to a team."""

    email = EmailField(
        "Email", filters=[_strip], validators=[DataRequired("Give their email."), Length(max=254)]
    )
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.DEPLOYER.value)


class TokenForm(FlaskForm):
    """A new personal API token."""

    name = StringField(
        "Name",
        filters=[_strip],
        validators=[DataRequired("Name the token, e.g. laptop CLI."), Length(max=100)],
    )
    scopes = SelectMultipleField(
        "Scopes",
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

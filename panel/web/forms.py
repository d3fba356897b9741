"""The panel's forms (Flask-WTF, so each carries its CSRF token).

Forms only parse: the rules live in ``panel.actions.apps``, whose errors are shown next to the field
they name (see ``panel.web.pages.show_action_error``).
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from panel.models import Role, TokenScope

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


def _number(label: str, default: int, required: bool = True) -> IntegerField:
    check = InputRequired(f"Give the {label.lower()}.") if required else Optional()
    return IntegerField(label, default=default, validators=[check])


class AppForm(FlaskForm):
    """An app's settings: where its image comes from, how it runs and what it gets."""

    image = StringField("Docker image", filters=[_strip], validators=[Length(max=512)])
    repo = StringField("GitHub repository", filters=[_strip], validators=[Length(max=200)])
    branch = StringField("Branch", default="main", filters=[_strip])
    command = StringField("Command", filters=[_strip], validators=[Length(max=4096)])
    port = _number("Port", 8080)
    health_path = StringField("Health check path", default="/healthz", filters=[_strip])
    count = _number("Instances", 1)
    cpu_mhz = _number("CPU (MHz)", 250)
    memory_mb = _number("Memory (MB)", 256)
    memory_max_mb = _number("Memory limit (MB)", 0, required=False)

    def app_fields(self) -> dict[str, object]:
        """The values to hand to create_app / update_app ('' clears image or repo)."""
        return {
            "image": self.image.data or "",
            "repo": self.repo.data or "",
            "branch": self.branch.data or "main",
            "command": self.command.data or "",
            "port": self.port.data,
            "health_path": self.health_path.data or "",
            "count": self.count.data,
            "cpu_mhz": self.cpu_mhz.data,
            "memory_mb": self.memory_mb.data,
            "memory_max_mb": self.memory_max_mb.data or 0,
        }


class NewAppForm(AppForm):
    """A new app: its team and name, then the same settings as AppForm."""

    team = SelectField("Team", validators=[DataRequired("Pick a team.")])
    slug = StringField(
        "Name",
        filters=[_strip],
        validators=[DataRequired("Give the app a name, e.g. my-app."), Length(max=63)],
    )


class EnvForm(FlaskForm):
    """Set one environment variable or secret."""

    key = StringField(
        "Name", filters=[_strip], validators=[DataRequired("Give the variable a name.")]
    )
    value = StringField("Value")
    secret = BooleanField("Secret (encrypted, never shown again)")


class DomainForm(FlaskForm):
    """Route a custom domain to the app."""

    hostname = StringField(
        "Domain",
        filters=[_strip],
        validators=[DataRequired("Give a domain, e.g. app.example.com."), Length(max=253)],
    )


class DeployForm(FlaskForm):
    """Deploy the app's current settings, optionally with another image."""

    image = StringField("Image (optional)", filters=[_strip], validators=[Length(max=512)])


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

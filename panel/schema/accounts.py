"""People and access: API tokens, team members, the caller; and the API's error shape (pure)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, create_model

from panel.schema.apps import Time
from panel.schema.base import Meta, Resource, checked, enum_values
from panel.states import Role, TokenScope
from panel.validation import ValidationError, validate_slug

__all__ = [
    "MAX_TOKEN_DAYS",
    "TEAM_NAME_MAX",
    "TOKEN_NAME_MAX",
    "DeleteTeamIn",
    "ErrorOut",
    "MeOut",
    "MemberIn",
    "MembershipOut",
    "TeamIn",
    "TokenCreated",
    "TokenIn",
    "TokenOut",
    "list_model",
    "page_model",
]

MAX_TOKEN_DAYS = 366
TOKEN_NAME_MAX = 100
DEFAULT_TOKEN_DAYS = 90
EMAIL_MAX = 254  # characters (RFC 5321's limit on a path)
TEAM_NAME_MAX = 200  # characters, as Team.name holds


def validate_token_name(value: Any, name: str = "name") -> str:
    """A token's name: 1 to 100 printable characters (surrounding spaces dropped)."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > TOKEN_NAME_MAX or not text.isprintable():
        raise ValidationError(
            name, f"give the token a name of 1 to {TOKEN_NAME_MAX} printable characters"
        )
    return text


def validate_scopes(value: Any, name: str = "scopes") -> list[str]:
    """One or more known scopes, each once, sorted."""
    allowed = [scope.value for scope in TokenScope]
    if not value or any(scope not in allowed for scope in value):
        raise ValidationError(name, f"{name} must be one or more of: {', '.join(allowed)}")
    return sorted(set(value))


def validate_token_days(value: Any, name: str = "days") -> int:
    """Days until a token expires: 1 to 366 (null, meaning never, is allowed by the type)."""
    if not 1 <= value <= MAX_TOKEN_DAYS:
        raise ValidationError(name, f"{name} must be 1 to {MAX_TOKEN_DAYS}, or null for no expiry")
    return value


class TokenIn(Resource):
    """A new personal API token: never stronger or longer-lived than the token asking."""

    example: ClassVar[dict[str, Any] | None] = {"name": "ci", "scopes": ["deploy"], "days": 30}

    name: Annotated[
        str, checked(validate_token_name, "name"), Meta(label="Name", placeholder="laptop CLI")
    ] = Field(description="What the token is for, 1 to 100 characters.", examples=["laptop"])
    scopes: Annotated[
        list[str],
        checked(validate_scopes, "scopes"),
        Meta(label="Scopes", kind="a list of scopes", widget="select"),
    ] = Field(
        description="What the token may do: read, deploy (includes read), admin (includes both).",
        examples=[["read", "deploy"]],
        json_schema_extra={"items": {"type": "string", "enum": [s.value for s in TokenScope]}},
    )
    days: Annotated[
        int | None,
        checked(validate_token_days, "days"),
        Meta(label="Expires after (days)", kind="a whole number or null", widget="number"),
    ] = Field(
        DEFAULT_TOKEN_DAYS,
        description=f"Days until it expires (1 to {MAX_TOKEN_DAYS}); null: never.",
        json_schema_extra={"minimum": 1, "maximum": MAX_TOKEN_DAYS},
    )


class TokenOut(Resource):
    """An API token as its owner may see it: never the secret, nor its hash."""

    id: int
    name: str
    prefix: str = Field(description="The first characters of the secret, to recognise it.")
    scopes: list[TokenScope]
    created_at: Time
    expires_at: Time
    last_used_at: Time
    revoked_at: Time
    parent_id: int | None = Field(description="The token that minted this one, if any.")
    current: bool = Field(description="Whether this is the token of the request.")


class TokenCreated(Resource):
    """A new token and its secret, shown in this answer only."""

    token: TokenOut
    secret: str = Field(description="Send it as 'Authorization: Bearer <secret>'.")


def validate_member_email(value: Any, name: str = "email") -> str:
    """The email of an account to look up: 1 to 254 printable characters, lowercased
    (surrounding spaces dropped). Whether an account uses it is the action's to say."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not text or len(text) > EMAIL_MAX or not text.isprintable():
        raise ValidationError(name, "give the email of their account, e.g. ada@example.com")
    return text


class MemberIn(Resource):
    """Add a person with an account to a team."""

    example: ClassVar[dict[str, Any] | None] = {"email": "ada@example.com", "role": "deployer"}

    email: Annotated[
        str,
        checked(validate_member_email, "email"),
        Meta(label="Email", placeholder="name@example.com"),
    ] = Field(description="The email of an existing account.", examples=["ada@example.com"])
    role: Annotated[
        Role,
        Meta(label="Role", widget="select", kind=f"one of: {', '.join(enum_values(Role))}"),
    ] = Field(Role.DEPLOYER, description="What they may do in the team.")


def validate_team_name(value: Any, name: str = "name") -> str:
    """A team's display name: up to 200 printable characters (surrounding spaces dropped);
    empty means the slug stands for it."""
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > TEAM_NAME_MAX or not text.isprintable():
        raise ValidationError(
            name,
            f"give the team a name of 1 to {TEAM_NAME_MAX} printable characters, "
            "or leave it empty to use the slug",
        )
    return text


class TeamIn(Resource):
    """A new team; the person creating it is its first owner."""

    example: ClassVar[dict[str, Any] | None] = {"slug": "platform", "name": "Platform"}

    slug: Annotated[
        str, checked(validate_slug, "slug"), Meta(label="Slug", placeholder="my-team")
    ] = Field(
        description="The team's short name: lowercase letters, digits and single '-', "
        "starting with a letter. It cannot change.",
        examples=["platform"],
    )
    name: Annotated[
        str, checked(validate_team_name, "name"), Meta(label="Name", placeholder="My team")
    ] = Field("", description="A name to show; empty: the slug, capitalised.")


class DeleteTeamIn(Resource):
    """Delete the team: its slug, typed again, confirms it."""

    example: ClassVar[dict[str, Any] | None] = {"confirm": "acme"}

    confirm: str = Field(
        description="The team's slug, typed again to confirm its deletion.",
        examples=["acme"],
        max_length=200,
    )


class MembershipOut(Resource):
    """A team the caller belongs to, with the caller's role in it."""

    slug: str
    name: str
    role: Role
    nomad_namespace: str | None = Field(
        description="The Nomad namespace the team's apps run in; null: the installation's "
        "NOMAD_NAMESPACE (a team from before namespaces per team, not moved yet).",
        examples=["acme"],
    )


class UserOut(Resource):
    """A person."""

    email: str
    name: str


class MeOut(Resource):
    """The caller: who they are, their teams and the token of the request."""

    user: UserOut
    teams: list[MembershipOut]
    token: TokenOut


class FieldErrorOut(Resource):
    """One field at fault."""

    field: str
    message: str


class ErrorOut(Resource):
    """Every error of the API has this shape."""

    error: str = Field(description="A stable code: invalid, not_found, forbidden …")
    message: str = Field(description="What was wrong and how to fix it.")
    field: str | None = Field(None, description="The field or parameter at fault.")
    errors: list[FieldErrorOut] | None = Field(
        None, description="Every field at fault, when a body has several (422)."
    )
    request_id: str | None = Field(
        None,
        description="The request's id (also its X-Request-Id header): the panel's log names "
        "it beside what went wrong, so quote it when you report a failure.",
    )


_COLLECTIONS: dict[str, type[Resource]] = {}
PAGE_FIELDS: dict[str, Any] = {
    "page": (int, Field(description="This page's number, from 1.")),
    "per_page": (int, Field(description="Items per page (at most 100).")),
    "total": (int, Field(description="Items on all pages.")),
    "next": (str | None, Field(description="The path of the next page; null on the last.")),
}


def _collection(item: type[Resource], kind: str, doc: str, **more: Any) -> type[Resource]:
    """The model {"items": [item…], **more}, built once per item model and kind."""
    name = item.__name__.removesuffix("Out") + kind
    if name not in _COLLECTIONS:
        _COLLECTIONS[name] = create_model(
            name, __base__=Resource, __doc__=doc, items=(list[item], ...), **more
        )  # type: ignore[valid-type]
    return _COLLECTIONS[name]


def page_model(item: type[Resource]) -> type[Resource]:
    """The model of one page of ``item``s."""
    noun = item.__name__.removesuffix("Out").lower()
    return _collection(item, "Page", f"One page of {noun}s.", **PAGE_FIELDS)


def list_model(item: type[Resource]) -> type[Resource]:
    """The model of a whole (short) list of ``item``s: {"items": […]}."""
    noun = item.__name__.removesuffix("Out").lower()
    return _collection(item, "List", f"Every {noun}.")

"""Apps and what hangs off them: settings, variables, domains, releases, deployments (pure).

:class:`AppSettings` is the one list of an app's settings. The API's bodies and answers, the
OpenAPI document, the page forms, the CLI options, release snapshots and the manifest loader
are all derived from it: a new setting is one new field here (and its column and migration).
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from panel.render.build import (
    BUILD_ARGS_MAX,
    validate_build_arg_key,
    validate_build_arg_value,
    validate_relative_path,
)
from panel.schema.base import Meta, Resource, checked, cross, walk
from panel.states import BuildStatus, DeploymentStatus, Role
from panel.validation import (
    ValidationError,
    validate_branch,
    validate_command,
    validate_count,
    validate_cpu_mhz,
    validate_custom_domain,
    validate_domain,
    validate_env_key,
    validate_env_value,
    validate_git_sha,
    validate_health_path,
    validate_image,
    validate_memory_max_mb,
    validate_memory_mb,
    validate_port,
    validate_release,
    validate_repo,
    validate_slug,
)

__all__ = [
    "AppDeletedOut",
    "AppOut",
    "AppPatch",
    "AppSettings",
    "BuildOut",
    "DeleteAppIn",
    "DeployIn",
    "DeploymentOut",
    "DomainIn",
    "DomainOut",
    "EnvIn",
    "EnvOut",
    "NewApp",
    "ReleaseConfig",
    "ReleaseOut",
    "RollbackIn",
    "ScaleIn",
    "partial",
    "release_fields",
]

WHOLE = "a whole number"


def _build_args(value: Any, name: str) -> dict[str, str]:
    """Build arguments as stored: NAME -> value, each checked, sorted by name."""
    if not isinstance(value, dict):
        raise ValidationError(name, f"{name} must be an object of NAME: value strings")
    if len(value) > BUILD_ARGS_MAX:
        raise ValidationError(name, f"{name} has {len(value)} entries: at most {BUILD_ARGS_MAX}")
    return {
        validate_build_arg_key(key, name): validate_build_arg_value(text, f"{name}.{key}")
        for key, text in sorted(value.items(), key=lambda item: str(item[0]))
    }


def _command(value: Any, name: str) -> str:
    """A command as stored: argv joined so quoted arguments stay whole when split again."""
    return shlex.join(validate_command(value, name))


class AppSettings(Resource):
    """The settings of an app that can change after it is created.

    Where the code comes from (an image, or a GitHub repository and branch to build), how it
    runs (command, port, health check, instances) and what it gets (CPU and memory).
    Every field but the source is frozen into each release, and a rollback brings it back.
    """

    groups: ClassVar[dict[str, str]] = {
        "Source": "Give a Docker image, or a GitHub repository that Helios builds on every push.",
        "Serving": "",
        "Resources per instance": "",
    }

    image: Annotated[
        str | None,
        checked(validate_image, "image", optional=True),
        Meta(group="Source", label="Docker image", placeholder="registry.example.com/team/app:1.2"),
    ] = Field(
        None,
        description="The Docker image to run. Give this or repo, not both.",
        examples=["registry.example.com/acme/web:1.4"],
    )
    repo: Annotated[
        str | None,
        checked(validate_repo, "repo", optional=True),
        Meta(group="Source", label="GitHub repository", placeholder="octo-org/my-app"),
    ] = Field(
        None,
        description="The GitHub repository OWNER/REPO to build from. Give this or image.",
        examples=["acme/web"],
    )
    branch: Annotated[
        str, checked(validate_branch, "branch"), Meta(group="Source", label="Branch")
    ] = Field(
        "main", description="The branch of repo that is built and deployed.", examples=["main"]
    )
    dockerfile: Annotated[
        str,
        checked(validate_relative_path, "dockerfile"),
        Meta(group="Source", label="Dockerfile", placeholder="Dockerfile"),
    ] = Field(
        "Dockerfile",
        description="Path of the Dockerfile in the repository (repo apps).",
        examples=["docker/web.Dockerfile"],
    )
    build_context: Annotated[
        str,
        checked(validate_relative_path, "build_context"),
        Meta(group="Source", label="Build context", placeholder="."),
    ] = Field(
        ".",
        description="Folder of the repository the build sees (repo apps); '.' is the root.",
        examples=["services/web"],
    )
    build_args: Annotated[
        dict[str, str],
        checked(_build_args, "build_args"),
        Meta(
            group="Source",
            label="Build arguments",
            kind="an object of strings",
            cli=False,
            form=False,
        ),
    ] = Field(
        default_factory=dict,
        description="Dockerfile ARG values for builds (repo apps), NAME: value. Not secret: "
        "they are kept in the image's history.",
        examples=[{"PYTHON_VERSION": "3.12"}],
    )
    command: Annotated[
        str | list[str],
        checked(_command, "command"),
        Meta(group="Source", label="Command", kind="text or a list of strings", release=True),
    ] = Field(
        "",
        description="The command to run instead of the image's own: a string split like a "
        "shell would, or a list of arguments. Empty runs the image's default.",
        examples=["gunicorn app:app"],
    )
    port: Annotated[
        int,
        checked(validate_port, "port"),
        Meta(group="Serving", label="Port", kind=WHOLE, release=True, widget="number"),
    ] = Field(
        8080,
        description="The port the app listens on.",
        examples=[5000],
        json_schema_extra={"minimum": 1, "maximum": 65535},
    )
    health_path: Annotated[
        str,
        checked(validate_health_path, "health_path"),
        Meta(group="Serving", label="Health check path", release=True),
    ] = Field("/healthz", description="The HTTP path that answers 2xx when the app is healthy.")
    count: Annotated[
        int,
        checked(validate_count, "count"),
        Meta(group="Serving", label="Instances", kind=WHOLE, release=True, widget="number"),
    ] = Field(
        1,
        description="How many instances run.",
        examples=[2],
        json_schema_extra={"minimum": 1, "maximum": 50},
    )
    cpu_mhz: Annotated[
        int,
        checked(validate_cpu_mhz, "cpu_mhz"),
        Meta(
            group="Resources per instance",
            label="CPU (MHz)",
            kind=WHOLE,
            release=True,
            widget="number",
        ),
    ] = Field(
        250,
        description="CPU reserved for each instance, in MHz.",
        examples=[500],
        json_schema_extra={"minimum": 100, "maximum": 64000},
    )
    memory_mb: Annotated[
        int,
        checked(validate_memory_mb, "memory_mb"),
        Meta(
            group="Resources per instance",
            label="Memory (MB)",
            kind=WHOLE,
            release=True,
            widget="number",
        ),
    ] = Field(
        256,
        description="Memory reserved for each instance, in MB.",
        examples=[256],
        json_schema_extra={"minimum": 32, "maximum": 262144},
    )
    memory_max_mb: Annotated[
        int,
        checked(validate_memory_max_mb, "memory_max_mb", 32),
        Meta(
            group="Resources per instance",
            label="Memory limit (MB)",
            kind=WHOLE,
            release=True,
            widget="number",
        ),
    ] = Field(
        0,
        description="The most memory an instance may use, in MB: at least memory_mb, or 0 "
        "for no limit above the reservation.",
        examples=[512],
        json_schema_extra={"minimum": 0, "maximum": 262144},
    )

    @model_validator(mode="after")
    def _source_and_memory(self) -> AppSettings:
        """Exactly one source; a memory limit is at least the reservation."""
        if bool(self.image) == bool(self.repo):
            raise cross("image", "give either an image or a GitHub repo (OWNER/REPO)")
        try:
            validate_memory_max_mb(self.memory_max_mb, self.memory_mb)
        except ValueError as exc:
            raise cross("memory_max_mb", str(exc)) from None
        return self


def partial(model: type[Resource], name: str) -> type[Resource]:
    """``model`` with every field optional and no cross-field rule: a change to some fields.

    The action checks the whole result (the current values with the change) by ``model``.
    """
    fields: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        annotation = Annotated.__class_getitem__((info.annotation | None, *info.metadata))
        fields[field] = (
            annotation,
            Field(
                None,
                description=info.description,
                examples=info.examples,
                json_schema_extra=info.json_schema_extra,
            ),
        )
    patch = create_model(
        name, __base__=Resource, __doc__=f"A change to {model.__name__}.", **fields
    )
    return patch


AppPatch = partial(AppSettings, "AppPatch")
AppPatch.example = {"count": 2, "memory_mb": 512}


class NewApp(AppSettings):
    """A new app: its name and team, then its settings."""

    example: ClassVar[dict[str, Any] | None] = {
        "slug": "shop",
        "image": "nginx:1.27",
        "port": 80,
        "count": 2,
    }

    slug: Annotated[
        str, checked(validate_slug, "slug"), Meta(label="Name", placeholder="my-app", cli=False)
    ] = Field(
        description="The app's name: lowercase letters, digits and '-'. It names the Nomad "
        "job and the app's address and cannot change.",
        examples=["web"],
    )
    team: Annotated[
        str | None,
        checked(validate_slug, "team", optional=True),
        Meta(label="Team", widget="select", cli=True),
    ] = Field(
        None,
        description="The team that owns the app; needed when the caller belongs to several.",
        examples=["acme"],
    )


def release_fields() -> list[str]:
    """The settings a release freezes, in declaration order."""
    return [name for name, _info, _meta in walk(AppSettings, release=True)]


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

Time = Annotated[datetime | None, Field(description="UTC, ISO 8601 with a trailing Z.")]


class DeploymentOut(Resource):
    """A deployment of one release of an app."""

    id: int
    app: str
    release: int
    image: str
    git_sha: str
    rollback_of: int | None = Field(description="The release a rollback brought back.")
    status: DeploymentStatus
    status_message: str
    nomad_job_version: int | None
    triggered_by: str | None = Field(description="Who asked for it (null: Helios itself).")
    requested_at: Time
    started_at: Time
    finished_at: Time


class BuildOut(Resource):
    """A build of one commit of a repo app; once it succeeded, the deployment it queued."""

    number: int = Field(description="The build's number in the app.", ge=1)
    app: str
    status: BuildStatus
    status_message: str = Field(description="What is happening, or why it ended so.")
    git_sha: str = Field(description="The commit built (40 hex digits).")
    branch: str
    reason: str = Field(description="Why it was built: push, deploy or redelivery.")
    builder: str = Field(description="dockerfile or buildpacks; empty until chosen.")
    image: str = Field(description="The image pushed, by digest (empty until it succeeded).")
    exit_code: int | None = Field(description="The failing step's exit code, if one failed.")
    deployment_id: int | None = Field(description="The deployment it queued, once built.")
    settings_from_repo: list[str] = Field(description="The settings its helios.toml set.")
    requested_at: Time
    started_at: Time
    finished_at: Time


def _settings_out() -> dict[str, Any]:
    """The settings' fields as they are answered: the stored form (command as text)."""
    out: dict[str, Any] = {}
    for name, info in AppSettings.model_fields.items():
        annotation = str if name == "command" else info.annotation
        out[name] = (annotation, Field(description=info.description, examples=info.examples))
    return out


AppOut = create_model(
    "AppOut",
    __base__=Resource,
    __doc__="An app: its name, team and settings, and its last deployment.",
    slug=(str, Field(description="The app's name.")),
    team=(str, Field(description="The team that owns it.")),
    **_settings_out(),
    created_at=(Time, ...),
    updated_at=(Time, ...),
    stopped_at=(Time, Field(description="When a person stopped it (null: not stopped).")),
    stopped_by=(str, Field(description="Who stopped it (empty: not stopped).")),
    last_deployment=(DeploymentOut | None, ...),
)


ReleaseConfig = create_model(
    "ReleaseConfig",
    __base__=Resource,
    __doc__="The settings a release froze; secrets by name only.",
    **{name: spec for name, spec in _settings_out().items() if name in release_fields()},
    env=(dict[str, str], Field(description="Plain environment variables.")),
    secrets=(list[str], Field(description="Names of the secrets (never their values).")),
    domains=(list[str], Field(description="Custom domains routed to the app.")),
)


class ReleaseOut(Resource):
    """A release: an image and the settings frozen with it."""

    number: int
    image: str
    git_sha: str
    rollback_of: int | None
    created_by: str | None
    created_at: Time
    config: ReleaseConfig  # type: ignore[valid-type]


# ---------------------------------------------------------------------------------------------
# Requests besides the app's settings
# ---------------------------------------------------------------------------------------------


class EnvIn(Resource):
    """The value of one environment variable (its name is in the path)."""

    example: ClassVar[dict[str, Any] | None] = {"value": "info", "secret": False}

    value: Annotated[str, checked(validate_env_value, "value"), Meta(label="Value")] = Field(
        description="The value (UTF-8 text, at most 32 KiB).", examples=["info"]
    )
    secret: Annotated[
        bool,
        Meta(
            label="Secret (encrypted, never shown again)", kind="true or false", widget="checkbox"
        ),
    ] = Field(False, description="Encrypt the value and never return it again.")


class EnvKey(Resource):
    """The name of an environment variable."""

    key: Annotated[str, checked(validate_env_key, "key"), Meta(label="Name")] = Field(
        description="Uppercase letters, digits and '_', not starting with a digit.",
        examples=["LOG_LEVEL"],
    )


class EnvOut(Resource):
    """An environment variable; a secret's value is null, always."""

    key: str
    value: str | None
    secret: bool
    updated_at: Time


class DomainIn(Resource):
    """A custom domain to route to the app."""

    example: ClassVar[dict[str, Any] | None] = {"hostname": "shop.example.com"}

    hostname: Annotated[str, Meta(label="Domain", placeholder="app.example.com")] = Field(
        description="A hostname you own, not under the platform's base domain.",
        examples=["www.example.com"],
    )

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str, info: ValidationInfo) -> str:
        """A hostname; not under the platform's domain when the check knows it."""
        base = (info.context or {}).get("base_domain")
        try:
            if base:
                return validate_custom_domain(value, base, "domain")
            return validate_domain(value, "domain")
        except ValueError as exc:
            raise cross("hostname", str(exc)) from None


class DomainOut(Resource):
    """A custom domain of an app."""

    hostname: str
    created_at: Time


class DeleteAppIn(Resource):
    """Delete the app: its name, typed again, confirms it."""

    example: ClassVar[dict[str, Any] | None] = {"confirm": "web"}

    confirm: str = Field(
        description="The app's name, typed again to confirm its deletion.",
        examples=["web"],
        max_length=200,
    )


class AppDeletedOut(Resource):
    """What deleting an app did, and what happens next."""

    app: str
    deleted_at: Time
    retention_days: int = Field(description="Days its deployments and logs stay kept.")
    message: str


class DeployIn(Resource):
    """Deploy the app's current settings, optionally with another image."""

    example: ClassVar[dict[str, Any] | None] = {}

    image: Annotated[
        str | None,
        checked(validate_image, "image", optional=True),
        Meta(label="Image (optional)", changed_by=Role.DEPLOYER),
    ] = Field(
        None,
        description="Deploy this image instead of the app's own (needs the role of "
        "HELIOS_IMAGE_DEPLOY_ROLE, admin by default).",
        examples=["registry.example.com/acme/web:1.5"],
    )
    git_sha: Annotated[
        str, checked(validate_git_sha, "git_sha"), Meta(label="Git commit", form=False)
    ] = Field(
        "", description="The commit the image was built from, if known.", examples=["3f2a9c1"]
    )


class ScaleIn(Resource):
    """Change how many instances of the app run, without a new release."""

    example: ClassVar[dict[str, Any] | None] = {"count": 3}

    count: Annotated[
        int,
        checked(validate_count, "count"),
        Meta(label="Instances", kind=WHOLE, widget="number", changed_by=Role.DEPLOYER),
    ] = Field(
        description="How many instances run from now on; the next deploy keeps it.",
        examples=[3],
        json_schema_extra={"minimum": 1, "maximum": 50},
    )


class RollbackIn(Resource):
    """Deploy an earlier release again."""

    example: ClassVar[dict[str, Any] | None] = {"release": 1}

    release: Annotated[
        int,
        checked(validate_release, "release"),
        Meta(label="Release", kind=WHOLE, widget="number", changed_by=Role.DEPLOYER),
    ] = Field(
        description="The number of the release to bring back.",
        examples=[7],
        json_schema_extra={"minimum": 1, "maximum": 2**31 - 1},
    )

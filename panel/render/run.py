"""One-off commands: the Nomad batch job that runs a command once in an app's release (pure).

The job ``<app>-run-<id>`` has one group and one task, both ``run``: the docker task of the
release's image, env and resources, with the command as the docker driver's ``command`` and
``args`` (an argument list: no shell, unless the command itself names one, e.g. ``sh -c``).
Nomad still interpolates ``${...}`` in those values at run time, as for the app's processes.
It runs once: no restart, no reschedule. Its ``Meta`` says whose run it is
(``helios.app``, ``helios.run``, ``helios.requested_by``), so `nomad job status` tells.

Secrets never go into the job. A task may read the Nomad Variables under its own job's path
(``nomad/jobs/<job>``, "Task Access to Variables"), not the app's: the run's worker writes the
release's secrets, keyed as in the app's variable (``r<release>.<KEY>``), into the run's own
variable, and the task's template renders them into its environment exactly as the app's does.
The follower deletes that variable once the run ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from panel.render.nomad import SECRETS_DEST_PATH, SECRETS_TEMPLATE, render_secret_items
from panel.spec import AppSpec
from panel.validation import ValidationError, shown, validate_slug

__all__ = [
    "RUN_ARGS_MAX",
    "RUN_BYTES_MAX",
    "RUN_GROUP",
    "RUN_KIND",
    "RUN_TASK",
    "RUN_TIMEOUT_DEFAULT",
    "RUN_TIMEOUT_RANGE",
    "render_run_job",
    "render_run_variables",
    "run_job_id",
    "run_variable_path",
    "validate_run_command",
    "validate_run_timeout",
]

NS_PER_SECOND = 1_000_000_000
RUN_GROUP = "run"
RUN_TASK = "run"
RUN_KIND = "run"  # Meta helios.kind
RUN_ARGS_MAX = 64  # arguments of a one-off command, the program included
RUN_BYTES_MAX = 4096  # bytes of UTF-8 of all its arguments together
RUN_TIMEOUT_DEFAULT = 1800  # seconds a run may take when no timeout is given
RUN_TIMEOUT_RANGE = (1, 86_400)  # seconds
RUN_KILL_TIMEOUT_S = 10  # seconds between SIGTERM and SIGKILL when a run is stopped
_EXAMPLE = "['python', 'manage.py', 'migrate']"


def run_job_id(slug: str, run_id: int) -> str:
    """The Nomad job ID of one run: <slug>-run-<id>."""
    if not isinstance(run_id, int) or run_id < 1:
        raise ValueError(f"a run id is a whole number from 1, not {run_id!r}")
    return f"{validate_slug(slug)}-run-{run_id}"


def run_variable_path(job_id: str) -> str:
    """The Nomad Variable the run's task reads its secrets from (its own job's path)."""
    return f"nomad/jobs/{job_id}"


def validate_run_command(value: object, field: str = "command") -> tuple[str, ...]:
    """A one-off command: a non-empty list of strings (the program first), at most
    RUN_ARGS_MAX of them and RUN_BYTES_MAX bytes together, without NUL."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str | bytes)
        or not all(isinstance(arg, str) for arg in value)
    ):
        raise ValidationError(field, f"{field} is a list of strings, e.g. {_EXAMPLE}")
    argv = tuple(value)
    if not argv or not argv[0]:
        raise ValidationError(field, f"{field} names no program: give it first, e.g. {_EXAMPLE}")
    if len(argv) > RUN_ARGS_MAX:
        raise ValidationError(
            field, f"{field} has {len(argv)} arguments: use at most {RUN_ARGS_MAX} (put a long "
            "list in a script in the image)",
        )  # fmt: skip
    size = 0
    for arg in argv:
        if "\x00" in arg:
            raise ValidationError(field, f"{field} argument {shown(arg)} contains NUL: remove it")
        try:
            size += len(arg.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValidationError(
                field, f"{field} argument {shown(arg)} is not valid Unicode text: use UTF-8"
            ) from None
    if size > RUN_BYTES_MAX:
        raise ValidationError(
            field, f"{field} is {size} bytes long: keep it within {RUN_BYTES_MAX} bytes (put "
            "a long command in a script in the image)",
        )  # fmt: skip
    return argv


def validate_run_timeout(value: object, field: str = "timeout") -> int:
    """A run's timeout in seconds (None: the default), within RUN_TIMEOUT_RANGE."""
    if value is None:
        return RUN_TIMEOUT_DEFAULT
    low, high = RUN_TIMEOUT_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            field, f"{field} is a whole number of seconds from {low} to {high}, not "
            f"{shown(value)} (the default is {RUN_TIMEOUT_DEFAULT})",
        )  # fmt: skip
    return value


def render_run_variables(spec: AppSpec, secrets: Mapping[str, str]) -> dict[str, str]:
    """The items of the run's variable: the release's secrets, keyed as in the app's."""
    return render_secret_items(spec.release, secrets)


def render_run_job(
    spec: AppSpec, *, run_id: int, command: Sequence[str], requested_by: str
) -> dict[str, Any]:
    """Render the register body {"Job": {...}} of the batch job that runs ``command`` once in
    the release ``spec`` describes."""
    argv = validate_run_command(command)
    job_id = run_job_id(spec.slug, run_id)
    job = {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Datacenters": list(spec.datacenters),
        "Meta": {
            "helios.app": spec.slug,
            "helios.team": spec.team,
            "helios.release": str(spec.release),
            "helios.git_sha": spec.git_sha,
            "helios.kind": RUN_KIND,
            "helios.run": str(run_id),
            "helios.requested_by": requested_by,
        },
        "TaskGroups": [
            {
                "Name": RUN_GROUP,
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [_render_task(spec, job_id, run_id, argv)],
            }
        ],
    }
    return {"Job": job}


def _render_task(spec: AppSpec, job_id: str, run_id: int, argv: tuple[str, ...]) -> dict:
    config: dict[str, Any] = {"image": spec.image, "command": argv[0]}
    if len(argv) > 1:
        config["args"] = list(argv[1:])
    env = dict(spec.env)
    env.update(HELIOS_APP=spec.slug, HELIOS_RELEASE=str(spec.release), HELIOS_RUN=str(run_id))
    resources = {"CPU": spec.cpu_mhz, "MemoryMB": spec.memory_mb}
    if spec.memory_max_mb > 0:
        resources["MemoryMaxMB"] = spec.memory_max_mb
    task: dict[str, Any] = {
        "Name": RUN_TASK,
        "Driver": "docker",
        "Config": config,
        "Env": dict(sorted(env.items())),
        "Resources": resources,
        "KillTimeout": RUN_KILL_TIMEOUT_S * NS_PER_SECOND,
    }
    if spec.secret_keys:
        text = SECRETS_TEMPLATE.format(path=run_variable_path(job_id), prefix=f"r{spec.release}")
        task["Templates"] = [
            {
                "EmbeddedTmpl": text,
                "DestPath": SECRETS_DEST_PATH,
                "Envvars": True,
                "ChangeMode": "noop",  # a one-off run is never restarted for a new value
            }
        ]
    return task

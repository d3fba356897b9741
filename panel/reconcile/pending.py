"""Nomad's plan of an app's pending changes: the job its next deploy would register, planned
against the job that runs, as ``helios plan`` shows it.

The body is the deploy's own render (``preview_spec`` → ``render_job``) of the app as it is
configured now; Nomad's plan endpoint is a dry run, so asking changes nothing. An app built
from its repository is planned with its live image: its next image comes from a build, and the
plan shows what the settings change. The diff is formatted as the drift check formats its
(``format_plan``) and every secret of the app is masked in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from panel.actions.apps import preview_spec
from panel.actions.common import ActionError
from panel.actions.drift import live_deployments
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.drivers.nomad import NomadError, nomad_configured
from panel.logs.runtime import deployment_scrubber
from panel.models import App
from panel.namespaces import app_driver
from panel.reconcile.follow import describe_plan, placement_failure
from panel.reconcile.plan import format_plan
from panel.render.nomad import render_job

__all__ = ["PendingPlan", "like_the_running_job", "plan_pending"]

NO_CLUSTER = (
    "No Nomad cluster is configured, so there is no plan to show: set NOMAD_ADDR (e.g. "
    "https://nomad.internal:4646) for the panel."
)
_NO_SECRETS_MASKED = "the app's secrets could not be read to mask them, so the diff is withheld"


@dataclass(frozen=True)
class PendingPlan:
    """Nomad's plan of the app's next deploy: its diff as lines (secrets masked), what the
    scheduler would do, a placement warning; ``problem`` says why there is no plan instead."""

    lines: list[str] = field(default_factory=list)
    scheduler: str = ""
    warning: str = ""
    problem: str = ""


def like_the_running_job(body: dict[str, Any], running: dict[str, Any] | None) -> dict[str, Any]:
    """The preview's body with the running job's Meta["helios.deployment"], if it has one.

    A preview belongs to no deployment, so it renders without that key, and Nomad's diff would
    show it removed, which no deploy ever does (each writes its own id there). Carrying the
    running value over leaves the diff to what the app's configuration changes.
    """
    deployment = ((running or {}).get("Meta") or {}).get("helios.deployment")
    if deployment is None:
        return body
    meta = {**body["Job"].get("Meta", {}), "helios.deployment": deployment}
    return {**body, "Job": {**body["Job"], "Meta": meta}}


def plan_pending(app: App, settings: Settings) -> PendingPlan:
    """Ask Nomad to plan the job the app's next deploy would register (a dry run); never
    raises for Nomad's or the settings' sake: ``problem`` says what is wrong and what to do."""
    if not nomad_configured(settings):
        return PendingPlan(problem=NO_CLUSTER)
    live = live_deployments([app.id]).get(app.id)
    image = live.release.image if live is not None and app.repo else None
    try:
        spec = preview_spec(app, settings, image=image)
    except ActionError as exc:
        return PendingPlan(problem=f"The next deploy would not render: {exc}")
    try:
        driver = app_driver(settings, app)
        body = like_the_running_job(render_job(spec), driver.read_job(app.slug))
        plan = driver.plan_job(app.slug, body)
    except NomadError as exc:
        return PendingPlan(problem=f"Nomad did not answer the plan: {exc}")
    try:
        scrubber = deployment_scrubber(app, live, SecretCipher.from_settings(settings))
    except SecretKeyError:
        return PendingPlan(problem=f"Nomad planned it, but {_NO_SECRETS_MASKED}.")
    return PendingPlan(
        lines=scrubber.scrub("\n".join(format_plan(plan))).split("\n"),
        scheduler=describe_plan(plan),
        warning=placement_failure(plan.get("FailedTGAllocs")),
    )

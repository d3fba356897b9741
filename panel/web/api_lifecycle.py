"""The API's everyday actions on a running app: scale, restart, stop and start.

Thin over ``panel.actions.lifecycle``, the functions the app page and `helios apps
scale|restart|stop|start` reach: the same checks (the deployer role, a token with the deploy
scope), the same events. Scale and stop answer with the app; restart and start queue a
deployment of the live release and answer with it (202, its address in ``Location``).

The routes belong to the API blueprint (bearer tokens, scopes, JSON errors): ``panel.web.api``
imports this module, which registers them on its ``bp``.
"""

from __future__ import annotations

from flask import jsonify

from panel.actions.lifecycle import restart_app, scale_app, start_app, stop_app
from panel.models import App, Role, TokenScope
from panel.schema.apps import AppOut, DeploymentOut, ScaleIn
from panel.web.api import _accepted, _app, _apps_json, _redis, _settings, _user, bp
from panel.web.api_io import read_body
from panel.web.openapi import operation

__all__ = ["restart_app_view", "scale_app_view", "start_app_view", "stop_app_view"]


def _app_answer(app: App):
    return jsonify(_apps_json([_app(app.slug)])[0])


@bp.post("/apps/<slug>/scale")
@operation("apps", TokenScope.DEPLOY, body=ScaleIn, out=AppOut, errors=(404, 409))
def scale_app_view(slug: str):
    """Run another number of instances of the app, without a new release.

    `count` becomes the app's instance count (the next deploy keeps it) and a worker asks Nomad
    to scale the running job: instances start or stop, the others keep running. 409 while a
    deployment of the app is queued or running, or before its first deployment succeeded. A
    stopped app keeps the count for when it starts."""
    app = _app(slug, Role.DEPLOYER)
    body = read_body(ScaleIn)
    scale_app(actor=_user(), app=app, count=body.count, redis_conn=_redis())
    return _app_answer(app)


@bp.post("/apps/<slug>/restart")
@operation(
    "deployments", TokenScope.DEPLOY, out=DeploymentOut, ok=202, location=True, errors=(404, 409)
)
def restart_app_view(slug: str):
    """Replace every instance of the app with a fresh one, keeping it up.

    A deployment of the live release (reason `restart`): new instances start and pass their
    checks before old ones stop, as in any deployment. 409 for a stopped app (start it) or one
    never deployed."""
    app = _app(slug, Role.DEPLOYER)
    requested = restart_app(actor=_user(), app=app, settings=_settings(), redis_conn=_redis())
    return _accepted(app, requested.deployment)


@bp.post("/apps/<slug>/stop")
@operation("apps", TokenScope.DEPLOY, out=AppOut, errors=(404, 409))
def stop_app_view(slug: str):
    """Stop every instance of the app; start brings it back.

    A worker stops its Nomad job (not purged: its versions stay); its settings, releases and
    domains stay. `stopped_at` and `stopped_by` say when and by whom. 409 when it is stopped
    already, never deployed, or while a deployment of it is queued or running."""
    app = _app(slug, Role.DEPLOYER)
    stop_app(actor=_user(), app=app, redis_conn=_redis())
    return _app_answer(app)


@bp.post("/apps/<slug>/start")
@operation(
    "deployments", TokenScope.DEPLOY, out=DeploymentOut, ok=202, location=True, errors=(404, 409)
)
def start_app_view(slug: str):
    """Start a stopped app again with its live release.

    A deployment of the live release (reason `start`), with its canaries and checks. 409 when
    the app is not stopped."""
    app = _app(slug, Role.DEPLOYER)
    requested = start_app(actor=_user(), app=app, settings=_settings(), redis_conn=_redis())
    return _accepted(app, requested.deployment)

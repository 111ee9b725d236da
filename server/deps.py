"""FastAPI dependencies as ``Annotated`` aliases: settings, runtime, index, model, jobs, auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.errors import ApiError
from server.runtime import LoadedIndex, LoadedModel, Runtime
from server.services.jobs import Supervisor
from server.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="SLOTCON_API_TOKEN (required when a token is configured)")


def get_runtime(request: Request) -> Runtime:
    """The app's :class:`Runtime` (built in the lifespan)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_app_settings(runtime: RuntimeDep) -> Settings:
    """The settings the app was created with."""
    return runtime.settings


def get_index(runtime: RuntimeDep) -> LoadedIndex:
    """The active index, or 503 ``no_index``."""
    return runtime.require_index()


def get_model(runtime: RuntimeDep) -> LoadedModel:
    """The model for uploads, or 503 ``no_model``."""
    return runtime.require_model()


def get_supervisor(runtime: RuntimeDep) -> Supervisor:
    """The jobs supervisor."""
    return runtime.supervisor


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
IndexDep = Annotated[LoadedIndex, Depends(get_index)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]
SupervisorDep = Annotated[Supervisor, Depends(get_supervisor)]


def require_token(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Mutating routes and reads that reveal paths or logs: when a token is configured (always, when
    exposed), require it as a bearer token."""
    settings = runtime.settings
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if not token:
        if runtime.exposed:  # the lifespan refuses this configuration; never serve it by accident
            raise ApiError(403, "forbidden", "server is exposed without an API token")
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "this route needs 'Authorization: Bearer <SLOTCON_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "invalid API token", headers={"WWW-Authenticate": "Bearer"})


Authorized = Depends(require_token)

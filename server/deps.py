"""FastAPI dependencies as ``Annotated`` aliases: settings, runtime, index, model, jobs, auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Query, Request, Response
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


IndexParam = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the index to read (a name from GET /api/indexes; default: the default index)",
        examples=["cpu-demo-final"],
    ),
]
BuildParam = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9a-f]{1,64}$",
        description="the build the caller expects (an index's 'build'): 409 build_changed when it was rebuilt",
    ),
]


def resolve_index(runtime: Runtime, request: Request, index: str | None, build: str | None) -> LoadedIndex:
    """The index a read names (``?index=NAME``, opened in a work slot when not open yet), else the default
    one (503 ``no_index`` without one); 404 for no such index, 409 ``build_changed`` when ``build`` is
    not its build."""
    if index is None:
        loaded = runtime.require_index()
    else:
        loaded = runtime.open_index(index, runtime.budget(request.scope, f"opening index {index!r}"))
    if build is not None and build != loaded.build:
        raise ApiError(
            409,
            "build_changed",
            f"index {loaded.name!r} was rebuilt since this link was made (the link names build {build}, the index "
            f"is build {loaded.build}): its segments and ids are not the ones linked; open the index again",
        )
    return loaded


def get_index(
    runtime: RuntimeDep, request: Request, response: Response, index: IndexParam = None, build: BuildParam = None
) -> LoadedIndex:
    """:func:`resolve_index` of the request's ``?index=`` and ``?build=``; the answer names the index and its
    build in the ``X-Index`` and ``X-Index-Build`` headers (JSON answers)."""
    loaded = resolve_index(runtime, request, index, build)
    response.headers["X-Index"] = loaded.name
    response.headers["X-Index-Build"] = loaded.build
    return loaded


def get_model(runtime: RuntimeDep) -> LoadedModel:
    """The model for uploads, or 503 ``no_model``."""
    return runtime.require_model()


def get_supervisor(runtime: RuntimeDep) -> Supervisor:
    """The jobs supervisor."""
    return runtime.supervisor


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
IndexDep = Annotated[LoadedIndex, Depends(get_index)]


def get_index_model(runtime: RuntimeDep, loaded: IndexDep) -> LoadedModel:
    """The model of the index the request reads (409 when its checkpoint is missing or another model)."""
    return runtime.model_of(loaded)


IndexModelDep = Annotated[LoadedModel, Depends(get_index_model)]
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

"""Indexes as resources: the listing (what ``?index=`` takes), the default one, renaming and deleting."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from server.deps import Authorized, RuntimeDep
from server.routers.health import index_info
from server.schemas import DefaultIndexRequest, ErrorBody, IndexEntry, IndexInfo, IndexList, RenameIndexRequest
from server.services.indexes import delete_index, list_indexes, rename_index

router = APIRouter(prefix="/indexes", tags=["indexes"])
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422, 503)}
IndexName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="an index under the indexes directory", examples=["cpu-demo"]),
]


@router.get("", responses=ERRORS)
def get_indexes(runtime: RuntimeDep) -> IndexList:
    """The indexes under the indexes directory (what ``?index=``, ``/api/compare`` and the default take), each
    with its build id, checkpoint (run, epoch, step), images, K and build time; ``default`` names the one
    the routes answer from without ``?index=``."""
    default = runtime.index.name if runtime.index is not None else None
    return IndexList(items=list_indexes(runtime), default=default)


@router.put("/default", dependencies=[Authorized], responses=ERRORS)
def put_default_index(body: DefaultIndexRequest, runtime: RuntimeDep) -> IndexInfo:
    """Make an index the default (all or nothing: the index and its checkpoint are validated first, the
    previous default stays on any error), stored in the state database so it survives a restart; logged."""
    return index_info(runtime.make_default(body.name, "PUT /api/indexes/default"))


@router.post("/{name}/rename", dependencies=[Authorized], responses=ERRORS)
def post_rename_index(name: IndexName, body: RenameIndexRequest, runtime: RuntimeDep) -> IndexEntry:
    """Rename an index (not the default one: 409 ``default_index``; 409 ``index_exists`` when the new name
    is taken, ``index_busy`` while a job writes or evaluates it). Links naming the old name then answer 404."""
    return rename_index(runtime, name, body.name)


@router.delete("/{name}", status_code=204, dependencies=[Authorized], responses=ERRORS)
def delete_named_index(name: IndexName, runtime: RuntimeDep) -> Response:
    """Delete an index and its files (not the default one: 409 ``default_index``; 409 ``index_busy`` while a
    job writes or evaluates it)."""
    delete_index(runtime, name)
    return Response(status_code=204)

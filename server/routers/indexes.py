"""Indexes as resources: the listing (what ``?index=`` takes), the default one, renaming and deleting."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from server.deps import Authorized, RuntimeDep
from server.routers.health import index_info
from server.schemas import (
    CarriedName,
    CarriedNames,
    CarryNamesRequest,
    DefaultIndexRequest,
    ErrorBody,
    IndexEntry,
    IndexInfo,
    IndexList,
    RenameIndexRequest,
)
from server.services.compare import comparison
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


@router.post("/{name}/names/carry", dependencies=[Authorized], responses=ERRORS)
def post_carry_names(request: Request, name: IndexName, body: CarryNamesRequest, runtime: RuntimeDep) -> CarriedNames:
    """Carry concept names over from ``source`` (an index of another checkpoint on the same images) through
    Compare's matching: each matched pair with IoU >= ``min_iou`` whose source prototype is named gives its
    name to the target prototype (unless it has one and ``overwrite`` is false). The names go to the target's
    model (every index of its weights). 422 ``not_comparable`` for indexes of different images."""
    budget = runtime.budget(request.scope, f"carrying names from {body.source} to {name}")
    with runtime.work_slot(budget):
        source, target = runtime.open_index(body.source), runtime.open_index(name)
        result = comparison(runtime, source, target)
    source_names = {r.id: r.label for r in source.index.prototypes() if r.label}
    target_names = {r.id: r.label for r in target.index.prototypes() if r.label}
    carried, skipped = [], 0
    for pair in result.pairs:
        label = source_names.get(pair.a)
        if label is None:
            continue
        if pair.iou < body.min_iou or (pair.b in target_names and not body.overwrite):
            skipped += 1
            continue
        runtime.set_name(target, pair.b, label)
        carried.append(CarriedName(source_prototype=pair.a, prototype=pair.b, label=label, iou=pair.iou))
    return CarriedNames(items=carried, skipped=skipped)


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

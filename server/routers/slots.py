"""``POST /api/slots``: the slots of an uploaded image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from indexer.store import SpaceUnavailableError
from server.deps import BuildParam, IndexParam, RuntimeDep, resolve_index
from server.errors import ApiError
from server.schemas import ErrorBody, SlotsResult, Space
from server.services.slots import analysis_size, analyze
from server.services.uploads import decode_upload

router = APIRouter(tags=["slots"])
ERRORS = {code: {"model": ErrorBody} for code in (400, 409, 413, 415, 422, 503)}


@router.post("/slots", responses=ERRORS)
def post_slots(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="an image (JPEG, PNG, WebP, ...); size-limited")],
    neighbors: Annotated[int, Query(ge=0, le=50, description="nearest dataset segments per slot")] = 5,
    crop: Annotated[
        bool,
        Query(
            description=(
                "segment the index's centre crop (the release's protocol: the segments of an indexed image then equal "
                "its index entry) instead of the whole image"
            )
        ),
    ] = False,
    space: Annotated[
        Space,
        Query(
            description="the embedding each slot's nearest dataset segments are searched in: 'projector' (what the "
            "prototypes score) or 'encoder' (the backbone's features pooled per slot, as the index stores them)",
            examples=["encoder"],
        ),
    ] = "projector",
    index: IndexParam = None,
    build: BuildParam = None,
) -> SlotsResult:
    """Run the model on an uploaded image: its assignment map and overlay (inline base64 PNGs), and per
    slot the prototype, label, area share, score, RLE mask and nearest dataset segments. The whole image
    is segmented (shorter side resized, no crop: every pixel assigned) unless ``?crop=true``.

    With ``?index=NAME`` the image is analysed by that index's model and its neighbours searched in it (404
    no such index, 409 ``build_changed`` as for the reads); otherwise by the default index's (or the
    configured checkpoint's) model.

    Errors: 409 ``space_unavailable`` when the index stores no vectors of ``space``, 413 body or pixel
    count over the limit, 422 sides further apart than 20:1, 415 not an image, 400
    empty/truncated/corrupt, 503 ``busy`` when every upload slot stayed taken for
    ``upload_queue_s``. At most ``upload_concurrency`` uploads are decoded and analysed at once;
    the others wait with their bodies spooled (at most 1 MiB each in memory). 413 ``image_too_complex``
    when the file holds more JPEG scans, frames or chunks than the limits (counted before decoding), 503
    ``deadline_exceeded`` when the decode runs past ``decode_timeout_s``; the decode and the analysis stop
    when the client disconnects.
    """
    limits = runtime.settings
    if index is None and build is None:
        loaded, model = runtime.index, runtime.require_model()
    else:
        loaded = resolve_index(runtime, request, index, build)
        model = runtime.model_of(loaded)
    name = file.filename or "upload"
    waiting = runtime.budget(request.scope, f"{name[:80]!r}", limits.upload_queue_s)
    with runtime.upload_slot(waiting):
        data = file.file.read()
        resize, _ = analysis_size(loaded)
        budget = runtime.budget(request.scope, f"decoding {name[:80]!r}", limits.decode_timeout_s)
        img = decode_upload(
            data, limits.max_upload_pixels, resize, name, limits.max_decode_bytes, runtime.structure_limits, budget
        )
        del data
        try:
            return analyze(runtime, model, loaded, img, neighbors, crop, space, check=budget.check_stop)
        except SpaceUnavailableError as e:
            raise ApiError(409, "space_unavailable", str(e)) from None

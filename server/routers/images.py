"""Dataset images: listing for the picker, the image (or a thumbnail), segment overlays and all slots."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from server.deps import IndexDep, RuntimeDep
from server.schemas import MAX_ID, MAX_OFFSET, ErrorBody, ImagePage
from server.services import images
from server.services.records import image_out

router = APIRouter(prefix="/images", tags=["images"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 422, 503)}
ImageId = Annotated[int, Path(ge=0, le=MAX_ID)]
Size = Annotated[int | None, Query(ge=16, le=2048, description="longer side of a thumbnail, in pixels")]
CACHE = {"Cache-Control": "private, max-age=300"}
View = Annotated[
    Literal["crop", "full"],
    Query(
        description="crop: the region the model saw when indexing (the release's centre crop, as in its figures); "
        "full: the whole image with that region outlined"
    ),
]


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers=CACHE)


@router.get("", responses=ERRORS)
def list_images(
    loaded: IndexDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ImagePage:
    """The indexed images in id order (for the UI's picker)."""
    items = [image_out(r) for r in loaded.index.images(offset, limit)]
    return ImagePage(items=items, offset=offset, limit=limit, total=loaded.index.num_images)


@router.get("/{image_id}", response_class=Response, responses=ERRORS | {200: {"content": {"image/jpeg": {}}}})
def get_image(
    request: Request, runtime: RuntimeDep, image_id: ImageId, loaded: IndexDep, size: Size = None
) -> Response:
    """The image as JPEG; ``?size=`` gives a thumbnail whose longer side is ``size``."""
    with runtime.render_slot(request.scope, f"image {image_id}"):
        data = images.image_jpeg(loaded, image_id, size)
    return Response(data, media_type="image/jpeg", headers=CACHE)


@router.get("/{image_id}/overlay", response_class=Response, responses=ERRORS | {200: {"content": {"image/png": {}}}})
def get_overlay(
    request: Request,
    runtime: RuntimeDep,
    image_id: ImageId,
    loaded: IndexDep,
    prototype: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    segment: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    size: Size = None,
    view: View = "crop",
) -> Response:
    """PNG: the image with one mask tinted red as in the paper's Figure 3 (``?prototype=k`` or ``?segment=id``),
    showing what the model saw (``?view=``); no pixel of it is left unassigned."""
    with runtime.render_slot(request.scope, f"the overlay of image {image_id}"):
        return _png(images.segment_overlay(loaded, image_id, prototype, segment, size, view))


@router.get("/{image_id}/slots", response_class=Response, responses=ERRORS | {200: {"content": {"image/png": {}}}})
def get_slots_overlay(
    request: Request, runtime: RuntimeDep, image_id: ImageId, loaded: IndexDep, size: Size = None, view: View = "crop"
) -> Response:
    """PNG: all slots of the image at once, each prototype in its fixed palette colour (``?view=`` as for
    the overlay)."""
    with runtime.render_slot(request.scope, f"the slots of image {image_id}"):
        return _png(images.slots_overlay(loaded, image_id, size, view))

"""The images: upload one (``POST /images``), fetch one (``GET /images/{id}``), pick some (``GET /corpus/random``).

Another user's private image answers 404 exactly as an id that never existed: a 403
would confirm that it exists.
"""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel

from ..serving import ServingError
from .forms import int_or_none, parse_bool, read_upload, service_of, thumbnail_url

router = APIRouter(tags=["images"])


class UploadAnswer(BaseModel):
    image_id: int
    thumbnail_url: str
    timings_ms: dict[str, float]


class RandomAnswer(BaseModel):
    image_ids: list[int]


@router.post("/images", status_code=201, summary="Upload an image: stored, indexed, searchable at once")
def upload(
    request: Request,
    image: UploadFile | None = File(None, description="the image file"),
    user_id: str | None = Form(None, description="the owner"),
    tags: str | None = Form("", description="comma-separated manual tags"),
    is_private: str | None = Form("false", description="true: only the owner can see and find it"),
) -> UploadAnswer:
    service = service_of(request)
    uid = int_or_none(user_id, "user_id")
    if uid is None:
        raise ServingError("user_id (the owner) is required")
    if image is None:
        raise ServingError("an image file (field 'image') is required")
    data = read_upload(image, service.embedder.max_bytes)
    res = service.upload(data, owner_id=uid, tags=tags or "", is_private=parse_bool(is_private, "is_private"))
    return UploadAnswer(
        image_id=res.image_id, thumbnail_url=thumbnail_url(res.image_id, uid), timings_ms=res.timings_ms
    )


@router.get(
    "/images/{image_id}",
    summary="The image as PNG (404 for another user's private image)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_image(
    request: Request,
    image_id: int,
    user_id: int | None = Query(None, description="the requester"),
    size: int | None = Query(None, description="longer side in pixels, 8..1024"),
) -> Response:
    png = service_of(request).image_png(image_id, user_id, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get("/corpus/random", summary="Random visible images, for a picker")
def random_images(
    request: Request,
    n: int = Query(12, description="how many, 1..200"),
    user_id: int | None = Query(None, description="the requester"),
    seed: int | None = Query(None, description="for a repeatable pick"),
) -> RandomAnswer:
    return RandomAnswer(image_ids=service_of(request).random_ids(n, user_id, seed))

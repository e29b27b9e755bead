"""The images: upload (``POST /images``), fetch (``GET /images/{id}``), delete (``DELETE
/images/{id}``), pick some (``GET /corpus/random``) — each as the requester the credential names.

Another user's private image answers 404 exactly as an id that never existed: a 403
would confirm that it exists.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from pydantic import BaseModel

from ..serving import ServingError
from .forms import ERRORS, parse_bool, read_upload, service_of, thumbnail_url
from .security import refuse_claimed_form, requester, require_user

router = APIRouter(tags=["images"])
MAX_ID = 2**63 - 1


class UploadAnswer(BaseModel):
    image_id: int
    thumbnail_url: str
    timings_ms: dict[str, float]


class RandomAnswer(BaseModel):
    image_ids: list[int]


@router.post(
    "/images",
    status_code=201,
    summary="Upload an image as the signed-in user: stored, indexed, searchable and durable at once",
    responses=ERRORS,
)
def upload(
    request: Request,
    owner: int = Depends(require_user),
    image: UploadFile | None = File(None, description="the image file"),
    tags: str | None = Form("", description="comma-separated manual tags"),
    is_private: str | None = Form("false", description="true: only you can see and find it"),
    _: None = Depends(refuse_claimed_form),
) -> UploadAnswer:
    service = service_of(request)
    if image is None:
        raise ServingError("an image file (field 'image') is required")
    data = read_upload(image, service.embedder.max_bytes)
    private = parse_bool(is_private, "is_private")
    res = service.upload(data, owner_id=owner, tags=tags or "", is_private=private)
    return UploadAnswer(image_id=res.image_id, thumbnail_url=thumbnail_url(res.image_id), timings_ms=res.timings_ms)


@router.get(
    "/images/{image_id}",
    summary="The image as PNG (404 for an image you may not see)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the image"}, **ERRORS},
)
def get_image(
    request: Request,
    image_id: int = Path(ge=0, le=MAX_ID),
    size: int | None = Query(None, description="longer side in pixels, 8..1024"),
    user_id: int | None = Depends(requester),
) -> Response:
    png = service_of(request).image_png(image_id, user_id, size)
    headers = {"Cache-Control": "private, max-age=60", "Vary": "Authorization, Cookie"}
    return Response(png, media_type="image/png", headers=headers)


@router.delete(
    "/images/{image_id}",
    status_code=204,
    summary="Delete one of your images: its row, vector and file, and from every search at once",
    response_class=Response,
    responses=ERRORS,
)
def delete_image(
    request: Request, image_id: int = Path(ge=0, le=MAX_ID), owner: int = Depends(require_user)
) -> Response:
    service_of(request).delete(image_id, owner)
    return Response(status_code=204)


@router.get("/corpus/random", summary="Random images you may see, for a picker", responses=ERRORS)
def random_images(
    request: Request,
    n: int = Query(12, description="how many, 1..200"),
    seed: int | None = Query(None, ge=0, le=2**32 - 1, description="for a repeatable pick"),
    user_id: int | None = Depends(requester),
) -> RandomAnswer:
    return RandomAnswer(image_ids=service_of(request).random_ids(n, user_id, seed))

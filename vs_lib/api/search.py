"""``POST /search``: rank the images most similar to an uploaded file or to a platform image, as the requester."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel

from ..serving import MAX_K, ServingError
from .forms import ERRORS, int_or_none, read_upload, service_of, thumbnail_url
from .security import refuse_claimed_form, requester

router = APIRouter(tags=["search"])


class SearchHit(BaseModel):
    image_id: int
    score: float  # cosine similarity to the query
    rank: int  # from 1
    thumbnail_url: str
    tags: str


class SearchAnswer(BaseModel):
    results: list[SearchHit]
    timings_ms: dict[str, float]  # validate, embed, search, rerank, total (in the service), request
    candidates: int  # how many nearest neighbours the re-ranker examined
    fewer_than_k: bool  # the filters left fewer than k among the candidates a search may examine
    stop_reason: str  # k_results, index_exhausted, candidate_cap or deadline


@router.post(
    "/search", summary="Rank the images most similar to an uploaded image or a platform image", responses=ERRORS
)
def search(
    request: Request,
    user_id: int | None = Depends(requester),
    image: UploadFile | None = File(None, description="query image file (JPEG, PNG, ...); or give image_id"),
    image_id: str | None = Form(None, description="id of an image already on the platform"),
    crop: str | None = Form(None, description="x0,y0,x1,y1 in pixels of the original image"),
    k: str | None = Form("10", description=f"number of results, 1..{MAX_K}"),
    _: None = Depends(refuse_claimed_form),
) -> SearchAnswer:
    t0 = time.perf_counter()
    service = service_of(request)
    qid = int_or_none(image_id, "image_id")
    data = read_upload(image, service.embedder.max_bytes) if image is not None else None
    if data is not None and qid is not None:
        raise ServingError("give either an image file or an image_id, not both")
    if data is None and qid is None:
        raise ServingError("give an image file (field 'image') or an image_id")
    kk = int_or_none(k, "k")
    resp = service.search(data, image_id=qid, crop=crop, k=10 if kk is None else kk, user_id=user_id)
    hits = [
        SearchHit(image_id=r.image_id, score=round(r.score, 6), rank=r.rank, tags=r.tags,
                  thumbnail_url=thumbnail_url(r.image_id))
        for r in resp.results
    ]  # fmt: skip
    timings = {**resp.timings_ms, "request": round((time.perf_counter() - t0) * 1000, 3)}
    return SearchAnswer(
        results=hits,
        timings_ms=timings,
        candidates=resp.candidates,
        fewer_than_k=resp.fewer_than_k,
        stop_reason=resp.stop_reason,
    )

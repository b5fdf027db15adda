"""VCF upload into a twin (a background job) and the job status resource.

``POST /patients/{id}/vcf`` takes the VCF as the raw request body (plain text or gzip/bgzip,
up to ``settings.max_vcf_bytes``; 413 beyond), streams it to a temporary file, and answers 202
with ``Location: /jobs/{job_id}``; ``GET /jobs/{job_id}`` says ``queued``, ``running``,
``succeeded`` (with the twin's new version) or ``failed`` (with a one-line reason).
``If-Match`` is optional here: when given, the upload is refused (412) unless the twin is still at
that version; the genotype is appended at whatever version the twin has when the call is done.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..store.errors import ConcurrentWriteError
from ..store.repository import TwinStore
from ..store.service import JobRecord, ServiceStore
from .auth import Principal, require
from .deps import service_store, twin_store
from .idempotency import check_key, request_hash, run_idempotent
from .jobs import VCF_JOB, JobRunner
from .rest_common import PatientIdPath, entry_point, error_responses, header_doc, if_match_version, json_response
from .rest_twins import IdempotencyKey, IfMatch
from .schemas import JobView

router = APIRouter(tags=["jobs"])

VCF_MEDIA_TYPES = ("text/plain", "text/vcf", "text/x-vcf", "application/gzip", "application/x-gzip",
                   "application/octet-stream")
_UPLOAD_BODY = {
    "required": True,
    "description": "the VCF file itself (plain or gzip/bgzip compressed), one sample or name it with `sample`",
    "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in VCF_MEDIA_TYPES},
}
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def job_view(job: JobRecord) -> dict[str, object]:
    view = JobView(id=job.id, kind=job.kind, status=job.status, patient_id=job.patient_id,  # type: ignore[arg-type]
                   created_at=job.created_at, updated_at=job.updated_at, result=job.result, error=job.error,
                   href=f"/jobs/{job.id}")
    return view.model_dump(mode="json")


async def _receive_upload(request: Request) -> tuple[Path, str, int]:
    """The request body streamed to a temporary file: (path, SHA-256, bytes)."""
    fd, name = tempfile.mkstemp(prefix="pgxtwin-upload-", suffix=".vcf")
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


@router.post("/patients/{patient_id}/vcf", status_code=202, response_model=JobView, summary="Upload a VCF",
             openapi_extra={"requestBody": _UPLOAD_BODY},
             responses={**error_responses(404, 412, 415, 422),
                        202: {"headers": {"Location": header_doc("/jobs/{job_id}: the job's status")}}})
async def upload_vcf(
    patient_id: PatientIdPath, request: Request,
    sample: str | None = Query(None, min_length=1, max_length=200, description="the sample of a multi-sample VCF"),
    assembly: Literal["GRCh38", "GRCh37"] = Query("GRCh38", description="genome assembly of the VCF"),
    principal: Principal = Depends(require("write")), twins: TwinStore = Depends(twin_store),
    service: ServiceStore = Depends(service_store), if_match: str | None = IfMatch,
    idempotency_key: str | None = IdempotencyKey,
) -> Response:
    """Call the patient's genotype from a germline VCF in the background (a job) and record it in the twin."""
    principal.check("write", patient_id)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in VCF_MEDIA_TYPES:
        raise HTTPException(415, f"Content-Type {media or 'missing'}: send the VCF as {', '.join(VCF_MEDIA_TYPES)}")
    expected = None if if_match is None else if_match_version(if_match)
    key = check_key(idempotency_key)
    actor, where = principal.actor, entry_point(request)
    runner: JobRunner = request.app.state.jobs
    upload, body_sha256, size = await _receive_upload(request)
    handed_over = False

    def submit() -> Response:
        nonlocal handed_over
        if size == 0:
            raise HTTPException(400, "empty body: send the VCF file as the request body")
        current = twins.current_version(patient_id)
        if expected is not None and expected != current:
            raise ConcurrentWriteError(patient_id, expected, current)
        job = service.create_job(VCF_JOB, actor=actor, patient_id=patient_id)
        twins.audit(patient_id, "upload_vcf", actor=actor, entry_point=where, version=current,
                    detail=f"job {job.id}: {size} bytes")
        runner.submit_vcf(job, upload, sample=sample, assembly=assembly, entry_point=where)
        handed_over = True
        return json_response(job_view(job), 202, {"Location": f"/jobs/{job.id}"})

    try:
        return await run_in_threadpool(run_idempotent, service, actor, key,
                                       request_hash(request, None, body_digest=body_sha256), submit)
    finally:
        if not handed_over:
            upload.unlink(missing_ok=True)


@router.get("/jobs/{job_id}", response_model=JobView, summary="A job's status", responses=error_responses(404))
def read_job(request: Request, job_id: str = PathParam(pattern=_UUID, description="from the upload's Location"),
             principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store),
             service: ServiceStore = Depends(service_store)) -> Response:
    """``queued``, ``running``, ``succeeded`` (``result`` has the twin's new version) or ``failed`` (``error``)."""
    job = service.job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    principal.check("read", job.patient_id)
    twins.audit(job.patient_id, "read_job", actor=principal.actor, entry_point=entry_point(request),
                detail=f"job {job.id}: {job.status}")
    return json_response(job_view(job))

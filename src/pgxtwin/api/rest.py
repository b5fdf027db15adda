"""The REST API over the twins (the router ``app.py`` includes).

Resources (all but ``/health``, ``/openapi.json`` and ``/docs`` need a bearer token):

* ``/patients`` — create (POST) and list (GET, cursor pagination) twins;
  ``/patients/{id}`` — a twin at its current or a past version (``ETag: "<version>"``);
  ``/patients/{id}/history`` — its versions;
* writes, each with ``If-Match`` and an optional ``Idempotency-Key``:
  ``/patients/{id}/covariates``, ``/medications``, ``/observations`` (re-estimates), ``/events``;
* ``/patients/{id}/vcf`` — VCF upload, a background job at ``/jobs/{job_id}``;
* decisions: ``/patients/{id}/evaluate`` (GET/POST), ``/recommend``, ``/report`` (HTML);
  ``/simulate`` (stateless).

Errors are FHIR OperationOutcomes (``application/fhir+json``).  The job runner's thread pool is
started and stopped with the application through this router's lifespan.
"""

from __future__ import annotations

from fastapi import APIRouter

from .. import __version__
from . import jobs, rest_decisions, rest_jobs, rest_twins
from .schemas import Health

router = APIRouter(lifespan=jobs.lifespan)


@router.get("/health", response_model=Health, tags=["service"], summary="Liveness")
def health() -> Health:
    """The service is up (no token needed; says nothing about any patient)."""
    return Health(status="ok", version=__version__)


router.include_router(rest_twins.router)
router.include_router(rest_jobs.router)
router.include_router(rest_decisions.router)

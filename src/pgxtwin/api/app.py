"""The twin service: one FastAPI application with the REST, FHIR and CDS Hooks routers.

``create_app(settings)`` opens the store (SQLite default or ``PGXTWIN_DATABASE_URL``; migrations
run on open), loads the trusted issuers, and installs the limits and error handlers.
``pgxtwin serve`` runs it under uvicorn.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from .. import __version__
from ..errors import PgxInputError
from ..store.repository import TwinStore
from ..store.service import ServiceStore
from .cds.prefetch import fhir_client
from .cds.routes import router as cds_router
from .fhir.routes import router as fhir_router
from .keys import TrustedIssuers
from .limits import BodyLimit, RateLimit
from .problems import install_error_handlers
from .rest import router as rest_router
from .settings import Settings

log = logging.getLogger("pgxtwin.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.oauth_issuers and not settings.oauth_audience:
        # without an audience, a token a trusted issuer minted for another service would be accepted
        raise PgxInputError("PGXTWIN_OAUTH_AUDIENCE: required when PGXTWIN_OAUTH_ISSUERS is set")
    if settings.cds_clients and not settings.public_url:
        log.warning("PGXTWIN_PUBLIC_URL is not set: CDS JWTs' aud is checked against the URL as the request states it")
    twins = TwinStore(settings.database_url, entry_point="api", actor="pgxtwin-service")
    fhir = fhir_client(settings.fhir_timeout_s)  # outbound FHIR calls (CDS prefetch), one pool of connections
    oauth = TrustedIssuers.from_file(settings.oauth_issuers) if settings.oauth_issuers else None
    cds_clients = (TrustedIssuers.from_file(settings.cds_clients, fetch_timeout_s=settings.fhir_timeout_s)
                   if settings.cds_clients else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the threads that run the store-touching (plain def) endpoints, per process (see Settings.threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        # what startup built (knowledge base, drug library, models) lives as long as the process:
        # out of the collector's reach, full collections no longer traverse it mid-request
        gc.collect()
        gc.freeze()
        yield
        fhir.close()
        twins.close()

    app = FastAPI(
        title="pgxtwin",
        version=__version__,
        summary="Pharmacogenomic digital twin service: REST, FHIR R4 and CDS Hooks 2.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.twins = twins
    app.state.service = ServiceStore(twins)
    app.state.oauth_issuers = oauth
    app.state.cds_clients = cds_clients
    app.state.fhir_client = fhir
    install_error_handlers(app)
    app.include_router(rest_router)
    app.include_router(fhir_router)
    app.include_router(cds_router)
    # outermost first: refuse floods before reading bodies
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_vcf_bytes=settings.max_vcf_bytes)
    app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)
    return app

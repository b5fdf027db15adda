"""Configuration of the twin service, from the environment (``PGXTWIN_*``) or given directly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if parsed <= 0:
        raise ValueError(f"{name}={value!r} must be positive")
    return parsed


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@dataclass(frozen=True)
class Settings:
    """What the service needs to know at start-up.

    ``cds_clients`` and ``oauth_issuers`` name JSON files of trusted issuers
    (``[{"iss": ..., "jwks": {...}}]`` or ``[{"iss": ..., "jwks_url": ...}]``); without them every
    authenticated endpoint answers 401 (nothing is readable without a valid token).
    ``public_url`` (``PGXTWIN_PUBLIC_URL``) is the service's external base URL: a CDS Hooks JWT's
    ``aud`` must equal it + the path called.  Unset, ``aud`` is checked against the URL as the
    request states it, i.e. its ``Host`` header, which the client chooses (``create_app`` logs a
    warning): set it for any deployment behind a proxy or load balancer, and wherever clients
    could reach the service under another host name than the one it is known by.

    ``threads`` (``PGXTWIN_THREADS``) is how many requests of one process run their blocking part
    (the store, outbound FHIR calls) at once; the others wait their turn without a thread.  The
    default 16 is about what the store's connection pool serves (SQLAlchemy: 5 + 10 overflow):
    with anyio's 40, threads queue on the pool and contend for the GIL, and a CDS call's twin read
    cost 0.54 ms of CPU instead of 0.19 ms (``benchmarks/bench_cds.py``: p95 and CPU per call
    lower with 16).  Raise it when many calls wait on slow FHIR servers.
    """

    database_url: str | None = None
    cds_clients: Path | None = None
    oauth_issuers: Path | None = None
    oauth_audience: str | None = None
    public_url: str | None = None
    max_body_bytes: int = 1 << 20          # 1 MiB for JSON bodies
    max_vcf_bytes: int = 256 << 20         # VCF uploads have their own limit
    rate_limit_per_minute: int = 6000      # per client address
    fhir_timeout_s: float = 5.0            # outbound FHIR calls (CDS Hooks prefetch fallback)
    job_workers: int = 1
    threads: int = 16                      # worker threads per process for blocking endpoint work

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("PGXTWIN_DATABASE_URL") or None,
            cds_clients=_env_path("PGXTWIN_CDS_CLIENTS"),
            oauth_issuers=_env_path("PGXTWIN_OAUTH_ISSUERS"),
            oauth_audience=os.environ.get("PGXTWIN_OAUTH_AUDIENCE") or None,
            public_url=os.environ.get("PGXTWIN_PUBLIC_URL") or None,
            max_body_bytes=_env_int("PGXTWIN_MAX_BODY_BYTES", 1 << 20),
            max_vcf_bytes=_env_int("PGXTWIN_MAX_VCF_BYTES", 256 << 20),
            rate_limit_per_minute=_env_int("PGXTWIN_RATE_LIMIT_PER_MINUTE", 6000),
            job_workers=_env_int("PGXTWIN_JOB_WORKERS", 1),
            threads=_env_int("PGXTWIN_THREADS", 16),
        )

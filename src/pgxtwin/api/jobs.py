"""Background jobs of the REST API: calling an uploaded VCF into a twin's genotype.

``POST /patients/{id}/vcf`` stores the upload in a temporary file and queues a job (a row in the
store, ``queued``); a bounded pool of ``settings.job_workers`` threads runs it (``running``):
:func:`pgxtwin.genomics.caller.call_vcf` on the file, then a ``genotype_set`` event appended to the
twin (``succeeded``, with the new version), or ``failed`` with a one-line reason ("not a VCF
file ..."); the temporary file is deleted either way.  The new genotype replaces the VCF-based
call and keeps the twin's outside calls (CYP2D6 copy number, HLA typing) as they were.

The pool lives and dies with the application (the REST router's lifespan): on shutdown, jobs not
yet started are marked failed ("the service stopped ...") and running ones are waited for.
Nothing about a patient goes to the application log (job ids and exception types only).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ..errors import PgxInputError
from ..store.errors import ConcurrentWriteError, StoreError
from ..store.repository import TwinStore
from ..store.service import JobRecord, ServiceStore

__all__ = ["JobRunner", "VCF_JOB", "lifespan"]

log = logging.getLogger("pgxtwin.api.jobs")

VCF_JOB = "vcf_call"
_APPEND_TRIES = 5  # a genotype replaces the old one whatever else changed: retry on a concurrent write


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


class JobRunner:
    """A bounded thread pool running jobs against one application's stores."""

    def __init__(self, twins: TwinStore, service: ServiceStore, workers: int) -> None:
        self.twins, self.service = twins, service
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pgxtwin-job")
        self._pending: dict[str, tuple[Future[None], Path]] = {}
        self._lock = threading.Lock()

    def submit_vcf(self, job: JobRecord, upload: Path, *, sample: str | None, assembly: str, entry_point: str) -> None:
        """Queue the call of ``upload`` (deleted when the job ends) into ``job.patient_id``'s twin."""
        with self._lock:
            future = self._pool.submit(self._run_vcf, job, upload, sample, assembly, entry_point)
            self._pending[job.id] = (future, upload)
        future.add_done_callback(lambda _: self._forget(job.id))

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._pending.pop(job_id, None)

    def shutdown(self) -> None:
        """Fail the jobs not started, wait for the running ones, stop the threads."""
        with self._lock:
            pending = list(self._pending.items())
        for job_id, (future, upload) in pending:
            if future.cancel():
                upload.unlink(missing_ok=True)
                self.service.update_job(job_id, "failed",
                                        error="the service stopped before the job ran; upload the file again")
        self._pool.shutdown(wait=True)

    # --- the VCF job
    def _run_vcf(self, job: JobRecord, upload: Path, sample: str | None, assembly: str, entry_point: str) -> None:
        try:
            self.service.update_job(job.id, "running")
            result = self._call_into_twin(job, upload, sample, assembly, entry_point)
        except PgxInputError as exc:
            self._fail(job.id, _one_line(str(exc).replace(str(upload), "upload")))
        except StoreError as exc:
            self._fail(job.id, _one_line(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a job must end failed, not hang in "running"
            log.error("job %s (%s) failed: %s", job.id, job.kind, type(exc).__name__)
            self._fail(job.id, "internal error while calling the VCF")
        else:
            self.service.update_job(job.id, "succeeded", result=result)
        finally:
            upload.unlink(missing_ok=True)

    def _fail(self, job_id: str, message: str) -> None:
        try:
            self.service.update_job(job_id, "failed", error=message)
        except Exception as exc:  # noqa: BLE001 - the store itself is down: nothing more to record
            log.error("job %s: could not record its failure: %s", job_id, type(exc).__name__)

    def _call_into_twin(self, job: JobRecord, upload: Path, sample: str | None, assembly: str,
                        entry_point: str) -> dict[str, Any]:
        from ..genomics.caller import call_vcf

        assert job.patient_id is not None
        results = list(itertools.islice(call_vcf(upload, assembly=assembly, sample=sample), 2))
        if len(results) != 1:
            raise PgxInputError("the VCF has more than one sample: name the patient's with ?sample=")
        call = results[0].model_copy(update={"source": f"upload (job {job.id})"})
        recorded_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        for attempt in range(_APPEND_TRIES):
            state = self.twins.state_at(job.patient_id, actor=job.actor, entry_point=entry_point)
            event = {"type": "genotype_set", "call_result": call.model_dump(mode="json"),
                     "outside_calls": {g: r.model_dump(mode="json") for g, r in state.genotype.outside_calls.items()},
                     "recorded_at": recorded_at}
            try:
                state = self.twins.append(job.patient_id, event, state.version, actor=job.actor,
                                          entry_point=entry_point)
                break
            except ConcurrentWriteError:
                if attempt == _APPEND_TRIES - 1:
                    raise
        called = sorted(g for g, r in call.genes.items() if r.status == "called")
        return {"patient_id": job.patient_id, "version": state.version, "sample": call.sample,
                "assembly": call.assembly, "knowledge_base": call.knowledge_base.version,
                "genes_called": called, "href": f"/patients/{job.patient_id}?version={state.version}"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The application's job runner (``app.state.jobs``), shut down with the application."""
    runner = JobRunner(app.state.twins, app.state.service, app.state.settings.job_workers)
    app.state.jobs = runner
    try:
        yield
    finally:
        await run_in_threadpool(runner.shutdown)

"""Run a trial's chunks on Dask distributed and stream their results to Parquet.

The population is partitioned by patient index into chunks of at most ``chunk_size`` patients
per replicate; each chunk is one task.  A task builds its chunk's table (generate, enrol,
simulate, endpoints), writes it as its own Parquet part file (atomically: a temporary file in
the same folder, then ``os.replace``), reduces it to a small aggregate and returns only that,
with counts, its duration and the worker's peak memory: per-patient rows never travel back to
the driver, and a worker holds one chunk at a time.

Clusters: a ``LocalCluster`` of ``workers`` processes with one thread each (the default), or an
existing scheduler (``tcp://HOST:8786``) whose workers can import pgxtwin and reach the results
folder at the same path (a shared file system).
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_write
from ..errors import PgxInputError

# glibc mallopt parameters (malloc.h) and the values set in workers (see tune_malloc)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's ceiling for this parameter on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 * 2**20
# Parts are written at the speed of the simulation: LZ4 (40% faster than zstd level 1 here, files
# ~45% larger) and column statistics only where a reader filters (which replicate, which patients).
PART_COMPRESSION = "lz4"
PART_STATISTICS = ["replicate", "patient_id"]


@dataclass(frozen=True)
class ChunkJob:
    """Patients ``start`` .. ``start + size - 1`` of population replicate ``replicate``."""

    replicate: int
    start: int
    size: int

    @property
    def name(self) -> str:
        return f"part-r{self.replicate:04d}-{self.start:012d}.parquet"


@dataclass(frozen=True)
class PartResult:
    """What a task returns: never rows, only counts and the part's aggregate."""

    name: str
    rows: int
    counts: dict[str, int]
    aggregate: Any
    seconds: float
    peak_rss_mb: float
    worker: str


def plan_chunks(size: int, replicates: int, chunk_size: int) -> list[ChunkJob]:
    """Chunks covering ``size`` patients in each of ``replicates`` replicates."""
    if chunk_size < 1:
        raise PgxInputError(f"--chunk-size: must be at least 1 (got {chunk_size})")
    return [
        ChunkJob(r, start, min(chunk_size, size - start))
        for r in range(replicates)
        for start in range(0, size, chunk_size)
    ]


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: on an existing scheduler, else on a local cluster of ``workers`` processes
    (default: the machine's CPU count) with one thread each."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if workers is not None:
            raise PgxInputError("--workers and --scheduler exclude each other (the scheduler's workers are used)")
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise PgxInputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:
        yield client


def tune_malloc() -> bool:
    """Keep a worker's large numeric temporaries on the heap.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
    mmap threshold at 128 KiB: every block-sized numpy temporary is then mapped, page-faulted and
    unmapped again, which triples the cost of a chunk.  Raising both thresholds restores heap reuse
    (freed memory above 256 MiB at the heap's top still goes back to the system).  A no-op, False,
    where glibc's ``mallopt`` is not available."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def run_parts(
    client: Any,
    jobs: list[ChunkJob],
    *,
    build: Callable[[int, int, int], tuple[pa.Table, dict[str, int]]],
    summarise: Callable[[pa.Table], Any],
    folder: Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[PartResult]:
    """Run every job on the cluster; results sorted by part name.  The first failure cancels the rest."""
    from distributed import as_completed

    total = sum(j.size for j in jobs)
    client.run(tune_malloc)
    futures = [
        client.submit(run_part, build, summarise, job, str(folder), key=f"pgxtwin-{job.name}-{os.getpid()}-{time.time_ns()}", pure=False)
        for job in jobs
    ]
    results: list[PartResult] = []
    done = 0
    try:
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            done += result.counts["screened"]
            if progress is not None:
                progress(done, total)
    except BaseException:
        client.cancel(futures)
        raise
    return sorted(results, key=lambda r: r.name)


def run_part(
    build: Callable[[int, int, int], tuple[pa.Table, dict[str, int]]],
    summarise: Callable[[pa.Table], Any],
    job: ChunkJob,
    folder: str,
) -> PartResult:
    """One task: build the chunk's table, write its part file, return its aggregate."""
    started = time.perf_counter()
    table, counts = build(job.replicate, job.start, job.size)
    write_part(table, Path(folder) / job.name)
    aggregate = summarise(table)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return PartResult(
        job.name, table.num_rows, counts, aggregate, time.perf_counter() - started, peak_kb / 1024.0,
        f"{socket.gethostname()}:{os.getpid()}",
    )


def write_part(table: pa.Table, path: Path) -> None:
    """Write a table as Parquet to ``path`` atomically (:func:`pgxtwin.atomic.atomic_write`)."""
    sink = pa.BufferOutputStream()
    # dictionary pages only for the categorical columns: measurements have no repeats to gain from
    categorical = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    pq.write_table(table, sink, compression=PART_COMPRESSION, use_dictionary=categorical,
                   write_statistics=[c for c in PART_STATISTICS if c in table.column_names])
    atomic_write(path, sink.getvalue().to_pybytes())


def read_parts(folder: Path) -> Iterator[tuple[str, pa.Table]]:
    """(name, table) of every part file in ``folder``, in name order, one at a time."""
    for path in sorted(folder.glob("part-*.parquet")):
        yield path.name, pq.read_table(path)

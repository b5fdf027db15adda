"""CDS Hooks order-sign latency under load: prints figures, asserts nothing.

Starts the service in a subprocess (uvicorn on ``create_app``, as ``pgxtwin serve --workers N``
runs it) with a temporary SQLite store holding a few twins (CYP2C19 *1/*1, *1/*2,
*2/*2, *1/*17; CYP2D6 and CYP2C9 calls; weight, age, creatinine) and a temporary trusted CDS client
key.  This process then drives ``POST /cds-services/pgx-order-sign`` on loopback from ``--clients``
concurrent clients for ``--seconds``: threads with one keep-alive ``http.client`` connection each
(0.2 ms of client CPU per request, where httpx.AsyncClient took 2 ms and became the bottleneck on a
small machine).  Each request carries its own JWT (``--alg`` ES384 or RS384, unique jti, aud = the
URL), a random twin and a random draft order (clopidogrel by clinical-drug code, citalopram by
ingredient code, codeine by text, the spec's amoxicillin/clavulanate).  Prints p50/p95/p99
latency, throughput and errors.  Target: p95 < 150 ms with 50 clients, no errors.

The JWTs are signed before the timed window (``--tokens-per-second`` x ``--seconds`` of them, each
with its own jti, valid for 5 minutes): an EHR signs on its own machine, so signing (0.4 ms of CPU
per ES384 token) must not be taken from the service's two cores here.  The service still verifies
every token (signature, issuer, aud, exp/iat) and claims every jti once.  Should the pool run out,
the clients sign the rest as they go and the count is printed.

Before measuring, one request per (twin, order) warms the service's per-(twin version, drug, dose)
assessment cache (the twin state is immutable per version), as a running service is warm.

Each client JWT's ``jti`` is claimed in the store (``seen_tokens``, shared by the worker processes)
before the call is answered.  ``--workers 1 2`` (the default) measures one process, then two, each
on a fresh service and store.

Run: .venv/bin/python benchmarks/bench_cds.py [--seconds 30] [--clients 50] [--alg ES384|RS384] [--workers 1 2]
     [--tokens-per-second 1000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import psutil
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://ehr.bench.example/"
SERVICE = "pgx-order-sign"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
GENOTYPES = [  # (CYP2C19, CYP2D6, CYP2C9) diplotypes of the bench twins
    ("*1/*1", "*1/*1", "*1/*1"), ("*1/*2", "*1/*4", "*1/*2"), ("*2/*2", "*4/*4", "*1/*3"), ("*1/*17", "*1/*2", "*1/*1"),
]
# (medication CodeableConcept, doseQuantity, doses per day): a clinical-drug code (RxNorm SCD 309362, as in
# Synthea's medication table), an ingredient code (the drug library's citalopram CUI) with a mg dose, text
# only, and the spec's non-pharmacogenomic amoxicillin/clavulanate suspension (RxNorm 617993)
ORDERS: list[tuple[dict[str, Any], dict[str, Any], int]] = [
    ({"coding": [{"system": RXNORM, "code": "309362", "display": "Clopidogrel 75 MG Oral Tablet"}]},
     {"value": 1, "unit": "tablet"}, 1),
    ({"coding": [{"system": RXNORM, "code": "2556", "display": "citalopram"}]}, {"value": 20, "unit": "mg"}, 1),
    ({"text": "codeine phosphate 30 mg tablet"}, {"value": 30, "unit": "mg"}, 4),
    ({"coding": [{"system": RXNORM, "code": "617993",
                  "display": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension"}]},
     {"value": 5, "unit": "mL"}, 2),
]
SERVER = """
import uvicorn
uvicorn.run("pgxtwin.api.app:create_app", factory=True, host="127.0.0.1", port={port}, workers={workers},
            log_level="warning", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_twins(url: str, n: int) -> list[str]:
    """Create ``n`` twins with genotypes and covariates in the store at ``url``."""
    from pgxtwin.genomics.outside_calls import OutsideCall, outside_gene_result
    from pgxtwin.store.repository import TwinStore

    now = datetime.now(timezone.utc).isoformat()
    ids = []
    with TwinStore(url, actor="bench", entry_point="bench") as store:
        for i in range(n):
            pid = f"bench-{i:03d}"
            c19, d6, c9 = GENOTYPES[i % len(GENOTYPES)]
            events: list[dict[str, Any]] = [
                {"type": "demographics_set", "sex": "MF"[i % 2], "age_years": 40 + i % 40, "age_recorded_at": now},
                {"type": "covariate_recorded", "covariate": "weight", "value": 60 + i % 30, "unit": "kg", "time": now},
                {"type": "covariate_recorded", "covariate": "serum_creatinine", "value": 0.9, "unit": "mg/dL", "time": now},
            ]
            for gene, diplotype in (("CYP2C19", c19), ("CYP2D6", d6), ("CYP2C9", c9)):
                result = outside_gene_result(OutsideCall(gene, diplotype, None, "bench"))
                events.append({"type": "outside_call_set", "gene": gene, "result": result.model_dump(mode="json")})
            state = store.create_twin(pid)
            for event in events:
                state = store.append(pid, event, state.version)
            ids.append(pid)
    return ids


def request_body(patient_id: str, order: tuple[dict[str, Any], dict[str, Any], int]) -> dict[str, Any]:
    medication, dose, per_day = order
    draft = {
        "resourceType": "MedicationRequest", "id": f"draft-{uuid.uuid4().hex[:12]}", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"}, "medicationCodeableConcept": medication,
        "dosageInstruction": [{"timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                               "doseAndRate": [{"doseQuantity": dose}]}],
    }
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "PractitionerRole/bench", "patientId": patient_id,
                        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}}}


class Signer:
    """Signs a fresh CDS client JWT per request (unique jti, aud = the URL called)."""

    def __init__(self, key: Any, alg: str, url: str) -> None:
        self.key, self.alg, self.url = key, alg, url

    def headers(self) -> dict[str, str]:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "bench-client", "aud": self.url, "iat": now, "exp": now + 300,
                  "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": "bench"})
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def make_key(alg: str) -> Any:
    """The CDS client's private key: P-384 for ES384, RSA-2048 for RS384."""
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def start_server(tmp: Path, key: Any, alg: str, twins: int,
                 workers: int = 1) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    public = jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key())
    jwk = json.loads(public) | {"kid": "bench", "alg": alg}
    (tmp / "cds.json").write_text(json.dumps([{"iss": ISSUER, "jwks": {"keys": [jwk]}}]))
    url = f"sqlite:///{tmp / 'twins.db'}"
    ids = seed_twins(url, twins)
    port = _free_port()
    env = dict(os.environ, PGXTWIN_DATABASE_URL=url, PGXTWIN_CDS_CLIENTS=str(tmp / "cds.json"),
               PGXTWIN_RATE_LIMIT_PER_MINUTE=str(10**9))
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port, workers=workers)], env=env)
    base = f"http://127.0.0.1:{port}"
    signer = Signer(key, alg, f"{base}/cds-services")
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{base}/cds-services", headers=signer.headers(), timeout=5).status_code == 200:
                return proc, base, ids
        except httpx.TransportError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("the service did not start")
        time.sleep(0.2)


class TokenPool:
    """Authorization headers signed in advance, each handed out once (thread-safe)."""

    def __init__(self, signer: Signer, n: int) -> None:
        self._signer = signer
        self._headers = [signer.headers() for _ in range(n)]
        self._lock = threading.Lock()
        self.signed_late = 0  # headers signed during the run, after the pool ran out

    def take(self) -> dict[str, str]:
        with self._lock:
            if self._headers:
                return self._headers.pop()
            self.signed_late += 1
        return self._signer.headers()


def cpu_s(pid: int) -> float:
    """CPU time (s, user + system) of process ``pid`` and its children (the uvicorn workers)."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


@dataclass
class Run:
    latencies_s: list[float]
    cards: int
    errors: dict[str, int]
    signed_late: int         # JWTs signed during the run (the pool ran out)
    server_cpu_s: float      # CPU time of the service's processes during the run
    client_cpu_s: float      # CPU time of this process during the run


def drive(base: str, key: Any, alg: str, ids: list[str], seconds: float, clients: int,
          workers: int = 1, tokens: int = 30_000, server_pid: int | None = None) -> Run:
    """Warm up, sign ``tokens`` JWTs, then ``clients`` concurrent clients (threads, one keep-alive
    connection each) for ``seconds``."""
    signer = Signer(key, alg, f"{base}/cds-services/{SERVICE}")
    path = f"/cds-services/{SERVICE}"
    host, port = base.removeprefix("http://").split(":")
    # request bodies encoded once (a fresh hookInstance is spliced into each request)
    bodies = [json.dumps(request_body(pid, order)).encode() for pid in ids for order in ORDERS]
    with httpx.Client(base_url=base, timeout=120) as client:
        # warm-up: each (twin, order) once per worker process (a new connection per request lands on
        # any worker, so a few rounds reach them all)
        for _ in range(1 if workers == 1 else 3 * workers):
            for body in bodies:
                r = client.post(path, content=body, headers=signer.headers() | {"Connection": "close"})
                if r.status_code != 200:
                    raise SystemExit(f"warm-up request failed: {r.status_code} {r.text[:300]}")
    pool = TokenPool(signer, tokens)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    cards = [0]
    lock = threading.Lock()

    def client_thread(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while time.perf_counter() < stop:
            body = rng.choice(bodies).replace(b'"hookInstance": "', f'"hookInstance": "{uuid.uuid4()}-'.encode(), 1)
            headers = pool.take()  # signed before the clock starts: the EHR's cost, not the service's
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                content = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                else:
                    cards[0] += content.count(b'"summary"')
        conn.close()

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(clients)]
    server0, client0 = (cpu_s(server_pid) if server_pid else 0.0), time.process_time()
    stop = time.perf_counter() + seconds
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server1, client1 = (cpu_s(server_pid) if server_pid else 0.0), time.process_time()
    return Run(latencies, cards[0], errors, pool.signed_late, server1 - server0, client1 - client0)


def measure(args: argparse.Namespace, key: Any, workers: int) -> None:
    """One service with ``workers`` processes on a fresh store, driven and reported."""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())  # other work on the machine skews the figures
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, ids = start_server(Path(tmp), key, args.alg, args.twins, workers)
        try:
            t0 = time.perf_counter()
            run = drive(base, key, args.alg, ids, args.seconds, args.clients, workers,
                        int(args.tokens_per_second * args.seconds), proc.pid)
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ms = np.asarray(run.latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else (float("nan"),) * 3
    n = max(len(ms), 1)
    print(f"order-sign, {args.clients} clients, {args.seconds:g} s ({wall:.1f} s with warm-up and signing), {len(ids)} twins,"
          f" {args.alg} client JWTs, {workers} service worker process(es)")
    print(f"load average before the run: {load}; JWTs signed during the run (pool ran out): {run.signed_late}")
    print(f"requests: {len(ms)} ({len(ms) / args.seconds:.0f}/s), cards returned: {run.cards}")
    print(f"CPU per request: service {run.server_cpu_s / n * 1000:.2f} ms, bench client {run.client_cpu_s / n * 1000:.2f} ms")
    print(f"latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}  max {ms.max() if len(ms) else float('nan'):.1f}")
    print(f"errors: {sum(run.errors.values())}" + (f" {run.errors}" if run.errors else ""))
    print(f"p95 < 150 ms and no errors (the target, at 50 clients): {'yes' if p95 < 150 and not run.errors else 'no'}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--twins", type=int, default=8)
    parser.add_argument("--alg", choices=("ES384", "RS384"), default="ES384",
                        help="the CDS client's JWT algorithm (the sandbox signs ES384; RS384 is cheaper to verify)")
    parser.add_argument("--tokens-per-second", type=float, default=1000.0,
                        help="JWTs signed before the run, per second of it (more than the service can answer)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="uvicorn worker processes of the service; several values: one run each, in turn")
    args = parser.parse_args()
    key = make_key(args.alg)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for workers in args.workers:
        measure(args, key, workers)


if __name__ == "__main__":
    main()

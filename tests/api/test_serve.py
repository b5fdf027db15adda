"""``pgxtwin serve`` as a real process: it answers /openapi.json and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(port: int, extra: list[str]) -> list[str]:
    """``python -m pgxtwin.cli serve`` once the command is registered; until then the same Typer
    command run on its own."""
    from pgxtwin.cli import app

    options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info", *extra]
    if any(c.name == "serve" or getattr(c.callback, "__name__", "") == "serve" for c in app.registered_commands):
        return [sys.executable, "-m", "pgxtwin.cli", "serve", *options]
    return [sys.executable, "-c", "import typer; from pgxtwin.cli_serve import serve; typer.run(serve)", *options]


@pytest.mark.parametrize("extra", [[], ["--workers", "1"]], ids=["default-workers", "one-process"])
def test_serve_answers_the_openapi_spec_and_stops_on_sigterm(tmp_path: Path, extra: list[str]):
    """The default (one worker per core) and a single in-process worker."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGXTWIN_")}
    env["PGXTWIN_DATABASE_URL"] = f"sqlite:///{tmp_path / 'twins.db'}"
    proc = subprocess.Popen(_serve_command(port, extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        spec = None
        while spec is None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "pgxtwin serve did not answer"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5)
                spec = r.json() if r.status_code == 200 else None
            except httpx.TransportError:
                time.sleep(0.2)
        assert spec["info"]["title"] == "pgxtwin" and "/patients" in spec["paths"]
        # without configured issuers nothing is readable
        assert httpx.get(f"http://127.0.0.1:{port}/patients", timeout=5).status_code == 401
        assert (tmp_path / "twins.db").is_file()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal (exit by SIGTERM, as an unhandled one)
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output and "Traceback" not in output
        assert "GET /patients" not in output  # no access log: request lines carry patient ids
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Knowledge-base version stamped on every result: pypgx version + checksums of what was read."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from .overlay import overlay_digest
from .tables import pypgx_version, tables_digest


@lru_cache(maxsize=1)
def knowledge_base_version() -> dict[str, str]:
    tables, overlay = tables_digest(), overlay_digest()
    combined = hashlib.sha256(f"{tables}:{overlay}".encode()).hexdigest()[:12]
    return {
        "source": "pypgx tables (pypgx/api/data) + pgxtwin overlay (knowledge/data/overlay.yaml)",
        "pypgx_version": pypgx_version(),
        "tables_sha256": tables,
        "overlay_sha256": overlay,
        "version": f"pypgx-{pypgx_version()}+{combined}",
    }

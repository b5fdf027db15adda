"""Run as a subprocess by test_store.py: appends one event and, through the store's test hook,
stops inside the transaction (after the event insert, before the commit) until it is killed.

usage: python crash_writer.py URL PATIENT_ID EXPECTED_VERSION MARKER_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pgxtwin.store import TwinStore
from pgxtwin.twin.state import CovariateRecorded

from tests.store.events import T0


def main() -> None:
    url, patient, expected, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

    def hang_inside_transaction() -> None:
        marker.write_text("inside transaction\n")
        time.sleep(120)  # the test kills us with SIGKILL here

    store = TwinStore(url, actor="crash-writer", entry_point="test", before_commit=hang_inside_transaction)
    store.append(patient, CovariateRecorded(covariate="weight", value=99.0, unit="kg", time=T0), expected)
    print("committed (the test should have killed this process first)")


if __name__ == "__main__":
    main()

"""What the scripts run with QGIS's Python share (qgis_probe, qgis_edit, qgis_processing).

They run under the system ``/usr/bin/python3`` with Debian's QGIS bindings, never in the test
process; each prints one JSON line that the test reads (:func:`gis_helpers.run_qgis_script`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def headless_qgis() -> Iterator[Any]:
    """A started QgsApplication without GUI; exited on the way out (layers deleted first)."""
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    try:
        yield app
    finally:
        app.exitQgis()


def run_script(main: Callable[[list[str]], dict]) -> None:
    """Run ``main(argv)`` inside QGIS and print its answer as one JSON line."""
    with headless_qgis():
        print(json.dumps(main(sys.argv[1:])))
    sys.exit(0)


def read_spec(argv: list[str]) -> dict:
    """The JSON file named by the first argument."""
    with open(argv[0], encoding="utf-8") as f:
        return json.load(f)

"""The package's shape: production never imports training or evaluation; modules stay small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cracksurvey

PACKAGE = Path(cracksurvey.__file__).parent

#: Everything `cracksurvey process` and `cracksurvey report` run.
PRODUCTION = (
    "cracksurvey.cli",
    "cracksurvey.process",
    "cracksurvey.engine",
    "cracksurvey.summary",
    "cracksurvey.report",
    "cracksurvey.merge",
    "cracksurvey.vectorize",
    "cracksurvey.measure.cracks",
    "cracksurvey.measure.continuity",
    "cracksurvey.measure.width",
)


def test_production_imports_neither_training_nor_evaluation() -> None:
    code = (
        "import sys\n"
        f"for name in {PRODUCTION!r}: __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cracksurvey.train', "
        "'cracksurvey.evaluation'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_is_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 600} == {}

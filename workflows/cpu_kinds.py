"""fp32 and bf16 on this CPU and on this CPU capped to AVX2: test metrics and the examples.

    python workflows/cpu_kinds.py [--data ../shared/data] [--json]

For each CPU kind — this machine as it is, and the same machine with its instruction set capped
to AVX2 as the second run of ``make test`` does (the Makefile's ``AVX2_ONLY``: oneDNN, torch's
kernels, numba, numpy and OpenBLAS limited to AVX2, the way an AVX2-only CPU such as AMD Zen 3
runs them, bf16 emulated) — and each precision (``CRACKSURVEY_PRECISION``), it runs

- ``cracksurvey evaluate`` on the masonry_dais2021 and deepcrack test splits (F1, mean abs ΔCPP,
  width MAE), and
- ``cracksurvey process`` on ``examples/survey`` and ``examples/street`` (cracks, total length),

and prints one table row per kind and precision, with the time each took. About 6 minutes on
two cores. A benchmark, not a test: it asserts nothing (the tests carry the bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("masonry_dais2021", "deepcrack")
EXAMPLES = ("survey", "street")


def avx2_only_env() -> dict[str, str]:
    """The Makefile's ``AVX2_ONLY`` variables (one definition for both)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^AVX2_ONLY\s*:=\s*(.+)$", text, re.MULTILINE)
    if match is None:
        raise SystemExit("Makefile: no AVX2_ONLY definition")
    return dict(item.split("=", 1) for item in shlex.split(match.group(1)))


def run_kind(kind: str, precision: str, data: Path, out: Path) -> dict[str, Any]:
    env = dict(os.environ, CRACKSURVEY_PRECISION=precision)
    if kind == "avx2":
        env.update(avx2_only_env())
    exe = str(Path(sys.executable).with_name("cracksurvey"))
    cmd = [exe, "evaluate", "--split", "test", "--bootstrap", "0", "--json"]
    for name in DATASETS:
        cmd += ["--data", str(data / name)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    evaluated = json.loads(proc.stdout)["datasets"]
    t1 = time.perf_counter()
    row: dict[str, Any] = {"kind": kind, "precision": precision, "evaluate_s": round(t1 - t0, 1)}
    for name in DATASETS:
        d = evaluated[name]
        row[name] = {
            "f1": d["micro"]["f1"],
            "abs_delta_cpp": d["abs_delta_cpp_mean"],
            "width_mae_px": d["width_mae_px"],
        }
    for example in EXAMPLES:
        target = out / f"{kind}-{precision}-{example}"
        cmd = [exe, "process", str(ROOT / "examples" / example), "--out", str(target), "--overwrite"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        buildings = json.loads((target / "summary.json").read_text())["buildings"]
        row[example] = {
            "cracks": sum(b["n_cracks"] for b in buildings),
            "length_m": sum(b["total_length_m"] for b in buildings),
        }
    row["process_s"] = round(time.perf_counter() - t1, 1)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    missing = [name for name in DATASETS if not (args.data / name / "test").is_dir()]
    if missing:
        raise SystemExit(f"missing test splits {missing} under {args.data}; pass --data")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("native", "avx2"):
            for precision in ("fp32", "bf16"):
                rows.append(run_kind(kind, precision, args.data, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| CPU kind, precision | masonry test: F1 / mean abs ΔCPP / width MAE px | deepcrack test: the same "
          "| examples/survey: cracks / length | examples/street | time: evaluate / process |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[n]['f1']:.3f} / {r[n]['abs_delta_cpp']:.2f} / {r[n]['width_mae_px']:.2f}" for n in DATASETS]
        cells += [f"{r[e]['cracks']} / {r[e]['length_m']:.2f} m" for e in EXAMPLES]
        print(f"| {r['kind']}, {r['precision']} | {' | '.join(cells)} | {r['evaluate_s']:.0f} / {r['process_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

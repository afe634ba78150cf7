"""Cache by stage: a first run of `cracksurvey process` against a rerun with another vectorize
setting (the predictions are reused, the network does not run).

    python workflows/bench_cache.py [SURVEY_DIR] [--repeat 3]

Each measurement is the wall time of the `cracksurvey` command in a fresh process (start-up and
imports included, as a user sees it): a first run into an empty output folder, then
`--overwrite --set vectorize.min_spur_px=12` on the same folder. Prints one line per pair, the
medians and the CPU model; the README and docs/performance.md quote its output.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(args: list[str]) -> float:
    command = [sys.executable, "-c", "from cracksurvey.cli import main; main()", *args]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("survey", nargs="?", default=str(ROOT / "examples" / "survey"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="cracksurvey-cache-") as tmp:
        out = Path(tmp) / "out"
        for i in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            first = timed(["process", args.survey, "--out", str(out), "-q"])
            rerun = timed(["process", args.survey, "--out", str(out), "-q", "--overwrite",
                           "--set", "vectorize.min_spur_px=12"])
            record = json.loads((out / "run.json").read_text())
            reused = record["cache"]["predictions"]["reused"]
            pairs.append({"first_s": first, "rerun_s": rerun, "ratio": rerun / first,
                          "predictions_reused": len(reused)})
            if not args.json:
                print(f"pair {i + 1}: first {first:.2f} s, rerun (min_spur_px 12) {rerun:.2f} s, "
                      f"ratio {rerun / first:.0%}, predictions reused {len(reused)}/"
                      f"{record['n_images']}")
    summary = {
        "survey": args.survey,
        "cpu": cpu_model(),
        "pairs": pairs,
        "median_first_s": statistics.median(p["first_s"] for p in pairs),
        "median_rerun_s": statistics.median(p["rerun_s"] for p in pairs),
        "median_ratio": statistics.median(p["ratio"] for p in pairs),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"median: first {summary['median_first_s']:.2f} s, rerun "
              f"{summary['median_rerun_s']:.2f} s, ratio {summary['median_ratio']:.0%} "
              f"({summary['cpu']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

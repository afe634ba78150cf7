"""Reproduce the shipped default model from scratch (one command, given the data path).

    python workflows/train_default_model.py --data ../shared/data --run runs/default [--resume]

Trains configs/train/mse+dice+topo.yaml (resumable: rerun with --resume after an interruption),
calibrates the threshold on validation, evaluates on the test splits, and copies the weights and
card into cracksurvey/weights/ under the default model id (with --install).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from cracksurvey.model import DEFAULT_MODEL_ID, SHIPPED_DIR, load_model, save_model
from cracksurvey.train.loop import load_config, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/train/mse+dice+topo.yaml"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--run", default=str(ROOT / "runs/default"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--install", action="store_true", help="copy the result into cracksurvey/weights/")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    cfg = load_config(args.config, {"data_root": args.data})
    summary = train(
        cfg,
        args.run,
        resume=args.resume,
        progress=lambda n, desc: tqdm(total=n, desc=desc, file=sys.stderr, mininterval=5),
    )
    print(summary)
    if args.install and summary.get("finished"):
        model, card = load_model(Path(args.run) / "model.safetensors")
        import dataclasses

        card = dataclasses.replace(card, model_id=DEFAULT_MODEL_ID)
        save_model(model, card, SHIPPED_DIR / DEFAULT_MODEL_ID)
        print("installed", SHIPPED_DIR / DEFAULT_MODEL_ID)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

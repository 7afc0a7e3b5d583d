"""Quality benchmark: train a bundle on the synthetic demo data on CPU, evaluate it, print the figures.

Not a test: it runs the real bundle commands (``monai.bundle run training`` with the bundle's
``configs/demo.json``, then ``evaluating``) on a copy of the bundle in a work folder, times them, and
prints the validation-case metrics from ``eval/metrics_summary.csv`` together with the wall time, so
the figures can be recorded in the bundle's ``docs/README.md``.

Example::

    python scripts/benchmark_bundle_quality.py liver_ct_unet3plus_2d_segmentation --minutes 20
    python scripts/benchmark_bundle_quality.py liver_ct_unetplusplus_3d_segmentation -o epochs=30
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from unet_monai.utils.io import save_json_atomic

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, timeout: float | None) -> tuple[float, bool]:
    """Run a ``monai.bundle`` command; stop it at ``timeout`` seconds. Returns (seconds, stopped early)."""
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, True
    return time.perf_counter() - start, False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle folder name under bundles/")
    parser.add_argument("--workdir", default="benchmark_results/quality", help="where the bundle copy runs")
    parser.add_argument(
        "--minutes", type=float, default=20.0, help="time limit of the training run (stopped there, then evaluated)"
    )
    parser.add_argument("-o", "--override", action="append", default=[], help="extra config override key=value")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    work = Path(args.workdir).resolve() / args.bundle
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(
        REPO / "bundles" / args.bundle, work, ignore=shutil.ignore_patterns("models", "eval", "predictions")
    )
    overrides = [arg for item in args.override for arg in ("--" + item.split("=", 1)[0], item.split("=", 1)[1])]
    configs = "['configs/train.json','configs/demo.json']"
    # the time limit is the run's: training stopped there is evaluated with the best model saved so far
    train_s, stopped = run(["run", "training", "--config_file", configs, *overrides], work, args.minutes * 60)
    eval_configs = "['configs/train.json','configs/demo.json','configs/evaluate.json']"
    eval_s, _ = run(["run", "evaluating", "--config_file", eval_configs, *overrides], work, None)

    with open(work / "eval" / "metrics_summary.csv") as f:
        summary = {row["metric"]: row for row in csv.DictReader(f)}
    history = json.loads((work / "eval" / "history.json").read_text())
    figures = {
        "bundle": args.bundle,
        "overrides": args.override,
        "train_minutes": round(train_s / 60, 2),
        "stopped_at_time_limit": stopped,
        "evaluate_seconds": round(eval_s, 1),
        "epochs": history["train"][-1]["epoch"] if history["train"] else 0,
        "best_epoch": max(history["validation"], key=lambda r: r.get("val_mean_dice", 0.0))["epoch"]
        if history["validation"]
        else None,
        "metrics": {name: {k: row[k] for k in ("mean", "std", "n")} for name, row in summary.items()},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        save_json_atomic(figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

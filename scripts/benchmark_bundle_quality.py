"""Quality benchmark: train a bundle on the synthetic demo data on CPU, evaluate it, print the figures.

Not a test: it runs the real bundle commands (``monai.bundle run training`` with the bundle's
``configs/demo.json``, then ``evaluating``) on a copy of the bundle in a work folder, times them, and
prints the validation-case metrics from ``eval/metrics_summary.csv`` together with the wall time, so
the figures can be recorded in the bundle's ``docs/README.md``.

The validation cases also chose the best epoch, so their figures lean optimistic, and 4 of them are noisy:
``--test-cases N`` (12 by default) then generates N held-out cases from the demo data's own distribution
(same generator arguments, another seed) and evaluates the same model on them (``--test_dir``), reported
as ``test_metrics``.

Example::

    python scripts/benchmark_bundle_quality.py liver_ct_unet3plus_2d_segmentation --minutes 20
    python scripts/benchmark_bundle_quality.py liver_ct_unetplusplus_3d_segmentation -o epochs=30 --test-cases 0
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

from unet_monai.data.synthetic import generate_dataset
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


def summary(eval_dir: Path) -> dict[str, dict[str, str]]:
    """``{metric: {"mean", "std", "n"}}`` from an evaluation's ``metrics_summary.csv``."""
    with open(eval_dir / "metrics_summary.csv") as f:
        return {row["metric"]: {k: row[k] for k in ("mean", "std", "n")} for row in csv.DictReader(f)}


def held_out_cases(demo_dir: Path, out_dir: Path, num_cases: int, seed: int) -> Path:
    """Generate ``num_cases`` cases like the demo data in ``demo_dir`` (its generator arguments) with another seed."""
    record = demo_dir / "generation.json"
    if not record.is_file():
        raise FileNotFoundError(
            f"{record} not found: held-out cases are drawn like the demo data (use --test-cases 0)."
        )
    arguments = json.loads(record.read_text())["arguments"]
    if int(arguments["seed"]) == seed:
        raise ValueError(f"--test-seed {seed} is the demo data's own seed: the held-out cases would be training cases.")
    # the recorded arguments are generate_dataset's own (its ranges as it stores them): replay them
    generate_dataset(out_dir, **{**arguments, "num_cases": num_cases, "seed": seed, "start_index": 0})
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle folder name under bundles/")
    parser.add_argument("--workdir", default="benchmark_results/quality", help="where the bundle copy runs")
    parser.add_argument(
        "--minutes", type=float, default=20.0, help="time limit of the training run (stopped there, then evaluated)"
    )
    parser.add_argument("-o", "--override", action="append", default=[], help="extra config override key=value")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--test-cases", type=int, default=12, help="held-out cases to evaluate on too (0: none)")
    parser.add_argument("--test-seed", type=int, default=1, help="generator seed of the held-out cases")
    args = parser.parse_args(argv)

    work = Path(args.workdir).resolve() / args.bundle
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(
        REPO / "bundles" / args.bundle,
        work,
        ignore=shutil.ignore_patterns("models", "eval", "eval_test", "predictions", "test_data"),
    )
    overrides = [arg for item in args.override for arg in ("--" + item.split("=", 1)[0], item.split("=", 1)[1])]
    configs = "['configs/train.json','configs/demo.json']"
    # the time limit is the run's: training stopped there is evaluated with the best model saved so far
    train_s, stopped = run(["run", "training", "--config_file", configs, *overrides], work, args.minutes * 60)
    eval_configs = "['configs/train.json','configs/demo.json','configs/evaluate.json']"
    eval_s, _ = run(["run", "evaluating", "--config_file", eval_configs, *overrides], work, None)
    test_metrics = None
    if args.test_cases > 0:
        test_dir = held_out_cases(work / "data" / "synthetic_lits", work / "test_data", args.test_cases, args.test_seed)
        test_eval = ["--test_dir", str(test_dir), "--output_dir", str(work / "eval_test")]
        run(["run", "evaluating", "--config_file", eval_configs, *overrides, *test_eval], work, None)
        test_metrics = summary(work / "eval_test")

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
        "metrics": summary(work / "eval"),
        "test_cases": args.test_cases,
        "test_seed": args.test_seed if args.test_cases > 0 else None,
        "test_metrics": test_metrics,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        save_json_atomic(figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

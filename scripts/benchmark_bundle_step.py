"""Seconds per training step of a bundle, with its own components on a batch of its own demo data.

The bundle's configs (``train.json`` plus ``configs/demo.json`` unless ``--no-demo``, then ``-o key=value``
overrides) are parsed in a temporary copy of the bundle folder, so the demo data is generated there and
nothing is written into the repository. One batch is drawn from ``train#dataloader`` and the step is what
``SupervisedTrainer`` runs per iteration: ``train#inferer`` with ``network``, ``loss``, backward and an
``optimizer`` step (data loading, a few ms per batch with the cached volumes, is not included).

``--compare-metatensor`` also times the same batch as MONAI ``MetaTensor`` with the metadata the training
chain gives it when its final ``EnsureTyped`` tracks metadata (as the 3D pipelines delivered their patches
before they ended in plain tensors), the two variants interleaved round by round
(``_bench.interleaved_times``), and prints the median of the per-round ratios: the cost of metadata
propagation through every op of the step.

Usage::

    python scripts/benchmark_bundle_step.py liver_ct_unetplusplus_3d_segmentation --compare-metatensor
    python scripts/benchmark_bundle_step.py liver_ct_unet3plus_3d_segmentation -o num_samples=4 --rounds 5

A benchmark prints figures; it is not a test. Run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import EnsureTyped

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

REPO = Path(__file__).resolve().parents[1]


def _parse(bundle: str, overrides: list[str], demo: bool, root: Path) -> ConfigParser:
    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")] + ([str(configs / "demo.json")] if demo else []))
    parser["bundle_root"] = str(root)
    for item in overrides:
        key, _, value = item.partition("=")
        parser[key] = json.loads(value)
    return parser


def _batch_with_metadata(parser: ConfigParser) -> dict:
    """One training batch with the training chain's final ``EnsureTyped`` tracking metadata."""
    preprocessing = parser.get_parsed_content("train#preprocessing")
    last = preprocessing.transforms[-1]
    if not isinstance(last, EnsureTyped):
        raise ValueError(f"the training chain ends in {type(last).__name__}, not EnsureTyped: nothing to compare")
    keys = list(last.keys)
    preprocessing.transforms = (*preprocessing.transforms[:-1], EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    return next(iter(parser.get_parsed_content("train#dataloader")))


def time_steps(parser: ConfigParser, compare_metatensor: bool, rounds: int) -> dict[str, list[float]]:
    """Training-step times per variant (``"plain tensors"``, and ``"MetaTensor"`` when compared), interleaved
    round-robin after one untimed step each (synchronised on CUDA)."""
    batch = _batch_with_metadata(parser)
    device = parser.get_parsed_content("device")
    image, label = batch["image"].to(device), batch["label"].to(device)
    if not isinstance(image, MetaTensor):
        raise ValueError("the training batch carries no metadata even with track_meta=True")
    variants = {"plain tensors": (image.as_tensor(), label.as_tensor())}
    if compare_metatensor:
        variants["MetaTensor"] = (image, label)
    network = parser.get_parsed_content("network")
    loss_function = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    inferer = parser.get_parsed_content("train#inferer")
    network.train()

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_function(inferer(inputs, network), targets).backward()
        optimizer.step()

    runs = {name: functools.partial(step, *tensors) for name, tensors in variants.items()}
    return bench.interleaved_times(runs, rounds, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="folder name under bundles/")
    p.add_argument("-o", "--override", action="append", default=[], help="key=JSON value, e.g. num_samples=4")
    p.add_argument("--no-demo", action="store_true", help="train.json alone (GPU-sized: slow on a CPU)")
    p.add_argument("--rounds", type=int, default=8, help="timed steps per variant")
    p.add_argument("--compare-metatensor", action="store_true", help="also time MetaTensor batches, print the ratio")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: the default)")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / args.bundle
        shutil.copytree(REPO / "bundles" / args.bundle, root, ignore=shutil.ignore_patterns("eval*", "models", "data"))
        parser = _parse(args.bundle, args.override, not args.no_demo, root)
        times = time_steps(parser, args.compare_metatensor, args.rounds)
    for name, values in times.items():
        stats = bench.summarize(values)
        print(
            f"{args.bundle} ({name}): {stats['median']:.3f} s per step (min {stats['min']:.3f}, "
            f"max {stats['max']:.3f}, {stats['n']} steps, {torch.get_num_threads()} threads)"
        )
    if args.compare_metatensor:
        ratio = bench.paired_ratio(times["MetaTensor"], times["plain tensors"])
        print(f"MetaTensor / plain tensors: {ratio:.2f}x (median of the per-round ratios)")


if __name__ == "__main__":
    main()

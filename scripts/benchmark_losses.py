"""Forward + backward time of unet_monai's MultiScaleSSIMLoss against pytorch-msssim, printed as a ratio.

Both sides get the same probabilities and one-hot targets and compute 1 - MS-SSIM (mean over batch and
channels) with the same window, so the work is identical; the two are timed alternately in one run, so the
ratio holds on a shared machine even when absolute times drift. Cases:

- 2D 8x3x320x320, window 11, 5 scales (pytorch-msssim's default setting);
- 3D 2x3x96x96x96, window 5, 5 scales: pytorch-msssim rejects window 11 below 161 voxels per side, so both
  use window 5 here;
- 3D 2x3x96x96x96, window 11: this project's default for 96^3 patches (4 scales after the automatic
  reduction); pytorch-msssim cannot run it, so only this loss's time is given.

Usage::

    python scripts/benchmark_losses.py [--repeats 5] [--threads N] [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_monai.losses import MultiScaleSSIMLoss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=g)
    label = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    target = torch.nn.functional.one_hot(label, shape[1]).movedim(-1, 1).float()
    probs = torch.softmax(logits, 1)
    return probs.to(device), target.to(device)


def _step(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], probs: torch.Tensor, target: torch.Tensor):
    def run() -> float:
        x = probs.detach().requires_grad_(True)
        loss = fn(x, target)
        loss.backward()
        return float(loss.detach())

    return run


def _time(run: Callable[[], float], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


#: (name, input shape, window, whether pytorch-msssim can run it)
CASES: list[tuple[str, tuple[int, ...], int, bool]] = [
    ("2D 8x3x320x320, win 11", (8, 3, 320, 320), 11, True),
    ("3D 2x3x96x96x96, win 5", (2, 3, 96, 96, 96), 5, True),
    ("3D 2x3x96x96x96, win 11 (4 scales)", (2, 3, 96, 96, 96), 11, False),
]
QUICK_CASES: list[tuple[str, tuple[int, ...], int, bool]] = [
    ("2D 2x3x176x176, win 11", (2, 3, 176, 176), 11, True),
    ("3D 1x3x48x48x48, win 3", (1, 3, 48, 48, 48), 3, True),
]


def run_cases(
    cases: list[tuple[str, tuple[int, ...], int, bool]], repeats: int, device: torch.device
) -> list[dict[str, object]]:
    """Median forward + backward time of both implementations per case (alternating runs), and |difference|."""
    from pytorch_msssim import ms_ssim as reference_ms_ssim

    rows: list[dict[str, object]] = []
    for name, shape, win, comparable in cases:
        probs, target = _inputs(shape, device)
        ours = MultiScaleSSIMLoss(win_size=win)
        run_ours = _step(ours, probs, target)
        ours_value = run_ours()  # warm-up, and the value to compare
        ours_times: list[float] = []
        ref_times: list[float] = []
        diff = float("nan")
        if comparable:
            run_ref = _step(lambda x, y, w=win: 1 - reference_ms_ssim(x, y, data_range=1.0, win_size=w), probs, target)
            diff = abs(run_ref() - ours_value)
        for _ in range(repeats):
            ours_times.append(_time(run_ours, device))
            if comparable:
                ref_times.append(_time(run_ref, device))
        t_ours = statistics.median(ours_times)
        t_ref = statistics.median(ref_times) if comparable else None
        rows.append(
            {
                "case": name,
                "shape": list(shape),
                "win_size": win,
                "ours_s": t_ours,
                "reference_s": t_ref,
                "ratio": t_ours / t_ref if t_ref else None,
                "abs_diff": diff if comparable else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side and case (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke test")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    header = f"{'case':<38} {'MultiScaleSSIMLoss s':>21} {'pytorch-msssim s':>17} {'ratio':>7} {'|diff|':>9}"
    print(header)
    print("-" * len(header))
    for r in run_cases(QUICK_CASES if args.quick else CASES, args.repeats, device):
        if r["reference_s"] is not None:
            print(
                f"{r['case']:<38} {r['ours_s']:>21.3f} {r['reference_s']:>17.3f} {r['ratio']:>6.2f}x"
                f" {r['abs_diff']:>9.1e}"
            )
        else:
            print(f"{r['case']:<38} {r['ours_s']:>21.3f} {'n/a':>17} {'':>7} {'':>9}")


if __name__ == "__main__":
    main()

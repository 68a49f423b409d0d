"""Inference benchmark: seconds per volume, overhead over the bare network, MONAI, and tile quality.

Two parts:

`speed`: seconds per 1 mm brain-sized volume (197 x 233 x 189 voxels, or that shape scaled by --scale on
a CPU) through `predict_sliding_window` with a small U-Net from `autosr.network`, for 1 and N folds, with
and without mirroring, against

  - the bare network time: the same number of forward passes on the same batch shape, in this process,
    without tiling, blending or flipping (the floor any sliding window can reach; target within 1.3x);
  - MONAI's `sliding_window_inference` with the same network, overlap, batch size and Gaussian mode
    (sigma_scale 1/8), mirroring done by calling it once per flip; skipped when MONAI is not importable.
    MONAI is not an autosr dependency: install it beside the benchmark only
    (`pip install --target /tmp/monai_site monai` and PYTHONPATH=/tmp/monai_site).

`quality`: trains the same small U-Net for a few hundred steps on phantom pairs (with random flips, so
mirroring is meaningful), then predicts held-out phantoms at several steps and tile sizes, and reports
PSNR against the target (inside the head mask) and the deviation from whole-volume inference (a fully
convolutional network applied to the whole volume has no seams: the deviation is the tiling error).
This is the measurement behind `DEFAULT_STEP_FRACTION` (documentation/inference.md, "Choosing the step").

    python benchmarks/bench_inference.py speed --scale 0.33 --patch 32 --folds 5 --threads 1
    python benchmarks/bench_inference.py quality --threads 1
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gpu_check import monai_predict  # the one MONAI comparison (benchmarks/gpu_check.py)

from autosr.device import autocast_dtype
from autosr.inference.mirroring import mirror_combinations
from autosr.inference.sliding_window import predict_sliding_window, tile_windows
from autosr.network import build_network

BRAIN_1MM_SHAPE = (197, 233, 189)


def small_network_plan(features: Sequence[int] = (8, 16, 32)) -> dict:
    """A 3-stage plain U-Net: small enough for a CPU, the same code path as a planned one."""
    n = len(features)
    return {
        "architecture": "PlainConvUNet",
        "dims": 3,
        "features_per_stage": list(features),
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "upsampling": "transposed",
        "deep_supervision": False,
    }


def make_networks(count: int, features: Sequence[int], device: torch.device) -> list[torch.nn.Module]:
    networks = []
    for k in range(count):
        torch.manual_seed(k)
        network = build_network(small_network_plan(features), 1, 1)
        network.deep_supervision = False
        networks.append(network.to(device).eval())
    return networks


def seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best of `repeats` wall-clock runs (the least disturbed by the other users of a shared machine)."""
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bare_network(networks, patch, n_inputs: int, batch: int, device: torch.device, use_amp: bool) -> None:
    """The same forward passes a sliding window makes, on one random batch, nothing else."""
    x = torch.randn(batch, 1, *patch, device=device)
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=use_amp)
    with torch.no_grad(), autocast:
        for network in networks:
            for start in range(0, n_inputs, batch):
                network(x[: min(batch, n_inputs - start)])


def autosr_predict(networks, image, patch, step, batch, mirror_axes, device) -> torch.Tensor:
    total = None
    for network in networks:
        out = predict_sliding_window(network, image, patch, step, batch, mirror_axes, device=device)
        total = out if total is None else total + out
    return total / len(networks)


def run_speed(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    shape = tuple(max(args.patch, int(round(s * args.scale))) for s in BRAIN_1MM_SHAPE)
    patch = (args.patch,) * 3
    image = torch.randn(1, *shape)
    networks = make_networks(args.folds, args.features, device)
    n_tiles = len(tile_windows(shape, patch, args.step))
    try:
        import monai  # noqa: F401

        has_monai = True
    except ImportError:
        has_monai = False
    results = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "volume_shape_zyx": list(shape),
        "scale_of_1mm_brain": args.scale,
        "patch": list(patch),
        "step_fraction": args.step,
        "tile_batch_size": args.batch,
        "features": list(args.features),
        "tiles_per_volume": n_tiles,
        "rows": [],
    }
    use_amp = device.type == "cuda"
    for n_folds, mirror in itertools.product(sorted({1, args.folds}), (False, True)):
        axes = (0, 1, 2) if mirror else ()
        nets = networks[:n_folds]
        n_inputs = n_tiles * len(mirror_combinations(axes))
        row = {"folds": n_folds, "mirroring": mirror, "network_inputs_per_fold": n_inputs}
        row["bare_network_s"] = seconds(
            functools.partial(bare_network, nets, patch, n_inputs, args.batch, device, use_amp), device, args.repeats
        )
        predict = functools.partial(autosr_predict, nets, image, patch, args.step, args.batch, axes, device)
        row["autosr_s"] = seconds(predict, device, args.repeats)
        row["autosr_over_bare"] = row["autosr_s"] / row["bare_network_s"]
        if has_monai and not args.no_monai:
            predict = functools.partial(
                monai_predict, nets, image, patch, args.step, args.batch, axes, device, autocast_dtype(device)
            )
            row["monai_s"] = seconds(predict, device, args.repeats)
            row["monai_over_autosr"] = row["monai_s"] / row["autosr_s"]
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    if has_monai and not args.no_monai:
        a = autosr_predict(networks[:1], image, patch, args.step, args.batch, (), device).cpu()
        m = monai_predict(networks[:1], image, patch, args.step, args.batch, (), device, autocast_dtype(device)).cpu()
        results["max_abs_difference_autosr_vs_monai"] = float((a - m).abs().max())
    return results


# --- quality: a briefly trained network on the phantom ----------------------------------------------------


def phantom_pairs(
    count: int, shape: tuple[int, int, int], seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input, target, mask) on the target grid, z-scored inside the mask like the planned pipeline."""
    from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_case
    from autosr.io import resample_to_geometry

    pairs = []
    for i in range(count):
        inp, inp_geo, tgt, tgt_geo, mask = make_phantom_case(PhantomSettings(shape_zyx=shape), case_seed=seed + i)
        inp = resample_to_geometry(inp, inp_geo, tgt_geo, order=3)
        m = mask > 0
        inp = (inp - inp[m].mean()) / inp[m].std()
        tgt = (tgt - tgt[m].mean()) / tgt[m].std()
        pairs.append((inp.astype(np.float32), tgt.astype(np.float32), m))
    return pairs


def train_small_network(pairs, patch: int, steps: int, features: Sequence[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = build_network(small_network_plan(features), 1, 1)
    network.deep_supervision = False
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: (1 - i / steps) ** 0.9)
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(2):
            inp, tgt, _ = pairs[rng.integers(len(pairs))]
            start = [rng.integers(0, s - patch + 1) for s in inp.shape]
            window = tuple(slice(s, s + patch) for s in start)
            x, y = inp[window], tgt[window]
            flips = tuple(a for a in range(3) if rng.random() < 0.5)
            xs.append(np.flip(x, flips).copy())
            ys.append(np.flip(y, flips).copy())
        x = torch.from_numpy(np.stack(xs))[:, None]
        y = torch.from_numpy(np.stack(ys))[:, None]
        loss = torch.nn.functional.l1_loss(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return network.eval()


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    data_range = float(ref[mask].max() - ref[mask].min())
    mse = float(np.mean((pred[mask] - ref[mask]) ** 2))
    return 10 * math.log10(data_range**2 / mse)


def run_quality(args: argparse.Namespace) -> dict:
    shape = (args.volume,) * 3
    started = time.perf_counter()
    train = phantom_pairs(6, shape, seed=0)
    test = phantom_pairs(2, shape, seed=1000)
    network = train_small_network(train, args.patch, args.train_steps, args.features)
    results = {"volume": list(shape), "train_patch": args.patch, "train_steps": args.train_steps, "rows": []}
    results["train_seconds"] = time.perf_counter() - started
    with torch.no_grad():
        whole = [network(torch.from_numpy(inp)[None, None])[0, 0].numpy() for inp, _, _ in test]
    results["input_psnr"] = float(np.mean([psnr(i, t, m) for i, t, m in test]))  # the no-learning baseline
    results["whole_volume_psnr"] = float(np.mean([psnr(w, t, m) for w, (_, t, m) in zip(whole, test)]))
    settings = [(args.patch, step, False) for step in args.steps]
    settings += [(args.patch, step, True) for step in args.mirror_steps]
    settings += [(tile, 0.5, False) for tile in args.large_tiles]
    for tile, step, mirror in settings:
        axes = (0, 1, 2) if mirror else ()
        row = {"tile": tile, "step": step, "mirroring": mirror, "tiles": len(tile_windows(shape, (tile,) * 3, step))}
        preds, start = [], time.perf_counter()
        for inp, _, _ in test:
            preds.append(predict_sliding_window(network, inp[None], (tile,) * 3, step, 4, axes)[0].numpy())
        row["seconds_per_volume"] = (time.perf_counter() - start) / len(test)
        row["psnr"] = float(np.mean([psnr(p, t, m) for p, (_, t, m) in zip(preds, test)]))
        row["mae"] = float(np.mean([np.abs(p - t)[m].mean() for p, (_, t, m) in zip(preds, test)]))
        # with instance norm, whole-volume inference is a different prediction (other statistics), not a
        # seamless reference; this is reported to show that, not as the tiling error
        differences = [np.abs(p - w)[m].mean() for p, w, (_, _, m) in zip(preds, whole, test)]
        row["mean_abs_difference_from_whole"] = float(np.mean(differences))
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    speed = sub.add_parser("speed", help="seconds per volume vs the bare network and MONAI")
    speed.add_argument("--scale", type=float, default=1.0, help="scale of the 197x233x189 volume (CPU: 0.33)")
    speed.add_argument("--patch", type=int, default=128)
    speed.add_argument("--step", type=float, default=0.5)
    speed.add_argument("--batch", type=int, default=4, help="tile batch size")
    speed.add_argument("--folds", type=int, default=5)
    speed.add_argument("--features", type=int, nargs="+", default=[8, 16, 32])
    speed.add_argument("--repeats", type=int, default=2)
    speed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    speed.add_argument("--no-monai", action="store_true")
    quality = sub.add_parser("quality", help="PSNR and tiling error vs step and tile size (trains a small net)")
    quality.add_argument("--volume", type=int, default=64, help="phantom edge length (voxels)")
    quality.add_argument("--patch", type=int, default=32)
    quality.add_argument("--train-steps", type=int, default=300)
    quality.add_argument("--features", type=int, nargs="+", default=[8, 16, 32])
    quality.add_argument("--steps", type=float, nargs="+", default=[0.125, 0.25, 0.5, 0.75, 1.0])
    quality.add_argument("--mirror-steps", type=float, nargs="*", default=[0.5], help="steps also run mirrored")
    quality.add_argument("--large-tiles", type=int, nargs="*", default=[64], help="inference tiles > the patch")
    for p in (speed, quality):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run_speed(args) if args.part == "speed" else run_quality(args)
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

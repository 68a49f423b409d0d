"""Every GPU figure of autosr in one prepared run: one command, one process, a JSON and a markdown table.

    python benchmarks/gpu_check.py --out DIR                       # on a GPU: the full check (< 6 min, H100)
    python benchmarks/gpu_check.py --device cpu --small --out DIR  # anywhere: the same code on tiny sizes

GPU time is scarce, so everything is measured in one call, each part under its own time cap; a part that
runs out of time says what it skipped. Parts:

1. `plan`: the planner on a synthetic fingerprint of 1 mm brains (20 cases, 197 x 233 x 189 voxels,
   cropped 170 x 200 x 170) with the device's memory: the 3d_fullres configuration everything below uses
   (and, on a GPU, the plan of `autosr plan`'s default 8 GB budget, for one more prediction row).
2. `training`: one training step through the real data pipeline (preprocessed cases on disk, batchgenerators
   workers, augmentation, transfer, forward, deep-supervised loss, backward, step) against the bare step on
   random tensors already on the device, same network, optimizer and precision, same process; their ratio;
   CUDA peak memory of the real step against the plan's `estimated_vram_gb`. Then the adversarial trainer's
   step (and every other registered trainer variant with its own step) through the same pipeline.
3. `prediction`: one 1 mm brain (197 x 233 x 189) with the planned network: 1 and 5 folds, with and without
   test-time mirroring, through the Predictor (tiles and mirrors batched, accumulation on the device) against
   (a) the bare network making the same forward passes on one random batch and (b) MONAI's
   `sliding_window_inference` (same network, overlap, batch, Gaussian mode) when MONAI is importable;
   bfloat16 vs float16 autocast (speed, and the largest deviation from float32); tiles per forward pass;
   channels-last memory layout.
4. `compile`: torch.compile of the network for prediction (the default 8 GB plan's on a GPU), first call
   and steady state against eager.

Networks have random weights (speed does not depend on them; batch norm is in eval mode with its initial
statistics). `--small` shrinks the volumes, the patch and the network so that a CPU finishes in about a
minute: it proves the script end to end (a test runs it), its figures mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

BRAIN_1MM = (197, 233, 189)
BRAIN_1MM_CROPPED = (170, 200, 170)


class Part:
    """One part of the check: its rows, what it skipped, and a deadline."""

    def __init__(self, name: str, cap_s: float):
        self.name, self.cap_s = name, cap_s
        self.start = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.notes: list[str] = []

    def time_left(self) -> float:
        return self.cap_s - (time.perf_counter() - self.start)

    def allows(self, what: str, estimate_s: float = 0.0) -> bool:
        """True when `what` (expected to take about `estimate_s`) still fits the cap; else it is skipped."""
        if self.time_left() > estimate_s:
            return True
        self.skipped.append(f"{what} (time cap {self.cap_s:.0f} s)")
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(time.perf_counter() - self.start, 1),
            "cap_s": self.cap_s,
            "rows": self.rows,
            "skipped": self.skipped,
            "notes": self.notes,
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> float:
    """Best wall-clock seconds of `repeats` runs of `fn`, the device synchronized around each."""
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def median_step(fn: Callable[[], Any], device: torch.device, steps: int) -> float:
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gib(value: float) -> float:
    return round(value / 2**30, 2)


# --- 1. plan ------------------------------------------------------------------------------------------------


def synthetic_fingerprint(scale: float, cases: int = 20) -> dict[str, Any]:
    shape = [max(16, int(round(s * scale))) for s in BRAIN_1MM]
    cropped = [max(16, int(round(s * scale))) for s in BRAIN_1MM_CROPPED]
    stats = {"p00_5": 0.0, "p99_5": 1000.0, "mean": 500.0, "std": 200.0, "median": 500.0}
    return {
        "dataset_name": "Dataset980_GpuCheck",
        "num_training_cases": cases,
        "cases": [
            {
                "case_id": f"c{i}",
                "input_spacing_zyx": [1.0, 1.0, 1.0],
                "target_spacing_zyx": [1.0, 1.0, 1.0],
                "target_shape_zyx": shape,
                "cropped_shape_zyx": cropped,
            }
            for i in range(cases)
        ],
        "intensity_statistics": {"input_channels": {"0": stats}, "target": stats},
        "median_target_mean_in_mask": 500.0,
        "median_target_std_in_mask": 200.0,
        "median_target_background": 0.0,
    }


def make_plans(args: argparse.Namespace, device: torch.device, part: Part, memory_gb: float | None = None):
    from autosr.formats.dataset_spec import parse_dataset_spec
    from autosr.network import total_stride
    from autosr.planning.planner import plan_experiment

    spec = parse_dataset_spec(
        {
            "name": "GpuCheck",
            "channel_names": {"0": "T1w"},
            "target_name": "T1w_7T",
            "target_modality": "MR",
            "file_ending": ".nii.gz",
        }  # fmt: skip
    )
    if memory_gb is not None:
        pass
    elif args.small:
        memory_gb = 1.15
    elif device.type == "cuda":
        memory_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
    else:
        memory_gb = 8.0
    plans = plan_experiment(
        synthetic_fingerprint(args.scale), spec, gpu_memory_gb=memory_gb, configurations=["3d_fullres"]
    )
    config = plans.raw["configurations"]["3d_fullres"]
    if args.small:  # a network a CPU runs in seconds; the code path is the planned one
        network = config["network"]
        network["features_per_stage"] = [max(4, min(f // 8, 16)) for f in network["features_per_stage"]]
        config["patch_size"] = [max(16, s) for s in total_stride(network)]
        config["batch_size"] = 2
    part.rows.append(
        {
            "gpu_memory_gb_planned_for": round(memory_gb, 1),
            "patch_size": config["patch_size"],
            "batch_size": config["batch_size"],
            "features_per_stage": config["network"]["features_per_stage"],
            "norm": config["network"].get("norm"),
            "estimated_vram_gb": config["estimated_vram_gb"],
        }
    )
    return plans


# --- 2. training --------------------------------------------------------------------------------------------


def write_preprocessed_cases(folder: Path, shape: list[int], count: int) -> list[str]:
    """Smooth random cases of `shape` on disk in the preprocessed format (what the loader reads)."""
    from scipy import ndimage

    from autosr.preprocessing.case_store import save_case

    rng = np.random.default_rng(0)
    ids = []
    for i in range(count):
        image = ndimage.zoom(rng.normal(size=[max(2, s // 8) for s in shape]), 8, order=1)[
            tuple(slice(0, s) for s in shape)
        ].astype(np.float32)
        mask = (image > -0.5).astype(np.uint8)
        save_case(folder, f"case{i}", image[None], {}, (2 * image + 1)[None], mask[None])
        ids.append(f"case{i}")
    return ids


def trainer_for(name: str, plans, data_folder: Path, out: Path, cases: list[str], device, workers: int):
    from autosr.training.trainer import TrainingContext
    from autosr.training.trainers import TRAINERS

    ctx = TrainingContext(
        plans=plans, configuration="3d_fullres", fold=0, output_folder=out / name, data_folder=data_folder,
        train_cases=cases[1:], val_cases=cases[:1], device=device, num_workers=workers, num_epochs=1000,
        iters_per_epoch=250,
    )  # fmt: skip
    return TRAINERS[name](ctx)


def check_training(args, plans, device: torch.device, part: Part, workdir: Path) -> None:
    from autosr.training.trainers import TRAINERS

    config = plans.configuration("3d_fullres")
    shape = [int(math.ceil(p * 1.25)) for p in config.patch_size]  # a case a little larger than the patch
    shape = [max(s, m) for s, m in zip(shape, config.raw["median_shape_zyx"])] if not args.small else shape
    data_folder = workdir / "preprocessed" / config.data_identifier
    cases = write_preprocessed_cases(data_folder, shape, 4 if args.small else 6)
    workers = args.workers
    steps, warmup = (3, 1) if args.small else (15, 5)
    variants = [
        t for t in TRAINERS if t in ("TrainerInterpolatingAugmentation", "AdversarialTrainer") or "Diffusion" in t
    ]
    for name in ["Trainer", *variants]:
        if args.trainers and name not in args.trainers:
            continue
        if part.allows(f"{name} step"):
            trainer = trainer_for(name, plans, data_folder, workdir / "results", cases, device, workers)
            part.rows.append({"trainer": name, "data_workers": workers, "case_shape": shape,
                              **time_training_step(trainer, device, steps, warmup)})  # fmt: skip
            if "cuda_peak_gib" in part.rows[-1]:
                part.rows[-1]["estimated_vram_gb"] = config.raw["estimated_vram_gb"]
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()


def time_training_step(trainer, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    """Median seconds of a real step (data pipeline included) and of the bare step on device tensors."""
    trainer.current_epoch = trainer.num_epochs // 2  # mid-schedule: every term of every variant is on
    train_iter, _ = trainer.make_iterators()
    for net in [trainer.network, *trainer.extra_networks.values()]:
        net.train()
    try:
        for _ in range(warmup):
            trainer.training_step(next(train_iter))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        real = median_step(lambda: trainer.training_step(next(train_iter)), device, steps)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        batch = next(train_iter)
        on_device = {k: torch.as_tensor(batch[k]).to(device) for k in ("input", "target", "mask")}
        bare = median_step(lambda: trainer.training_step(on_device), device, steps)
    finally:
        if hasattr(train_iter, "_finish"):
            train_iter._finish()
    row = {"step_s": round(real, 4), "bare_step_s": round(bare, 4), "ratio": round(real / bare, 3)}
    if peak is not None:
        row["cuda_peak_gib"] = gib(peak)
    return row


# --- 3. prediction ------------------------------------------------------------------------------------------


def networks_for(plans, count: int, device: torch.device) -> list[torch.nn.Module]:
    from autosr.network import build_network

    network_plan = plans.configuration("3d_fullres").network
    networks = []
    for k in range(count):
        torch.manual_seed(k)
        networks.append(build_network(network_plan, 1, 1).to(device).eval())
    return networks


def monai_predict(networks, image, patch, step, batch, mirror_axes, device, dtype) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    from autosr.device import autocast
    from autosr.inference.mirroring import mirror_combinations

    total, count = None, 0
    x = image[None].to(device)
    with torch.no_grad(), autocast(device, dtype):
        for network in networks:
            for flip in mirror_combinations(mirror_axes):
                dims = tuple(2 + a for a in flip)
                xi = torch.flip(x, dims) if flip else x
                out = sliding_window_inference(
                    xi, patch, batch, network, overlap=1 - step, mode="gaussian", sigma_scale=0.125
                )
                out = out[0] if isinstance(out, (list, tuple)) else out
                out = torch.flip(out, dims) if flip else out
                total = out.float() if total is None else total + out.float()
                count += 1
    return total[0] / count


def has_monai() -> bool:
    try:
        import monai  # noqa: F401
    except ImportError:
        return False
    return True


def compare_prediction(networks, plans, image, axes, step, tile_batch, device, repeats, part: Part) -> dict:
    """Seconds of the Predictor and of MONAI's sliding window on the same networks and settings."""
    from autosr.device import autocast_dtype
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    settings = PredictionSettings(
        device=str(device), step_fraction=step, use_mirroring=bool(axes), tile_batch_size=tile_batch
    )
    predictor = Predictor(networks, plans, "3d_fullres", settings=settings, mirror_axes=axes)
    predictor.predict_preprocessed(image)  # warm-up (cuDNN algorithm choice)
    ours = timed(lambda: predictor.predict_preprocessed(image), device, repeats)
    row: dict[str, Any] = {"autosr_s": round(ours, 3)}
    if has_monai() and part.allows("MONAI", ours * 1.5):
        patch = list(plans.configuration("3d_fullres").patch_size)
        dtype = autocast_dtype(device)
        monai_s = timed(
            lambda: monai_predict(networks, image, patch, step, tile_batch, axes, device, dtype), device, repeats
        )
        row.update(monai_s=round(monai_s, 3), autosr_over_monai=round(ours / monai_s, 3))
    return row


def check_prediction(args, plans, device: torch.device, part: Part) -> None:
    from autosr.device import autocast, autocast_dtype
    from autosr.inference.mirroring import mirror_combinations
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings
    from autosr.inference.sliding_window import tile_windows

    config = plans.configuration("3d_fullres")
    patch = list(config.patch_size)
    shape = [max(p, int(round(s * args.scale))) for s, p in zip(BRAIN_1MM, patch)]
    image = torch.randn(1, *shape)
    networks = networks_for(plans, 5, device)
    step = args.step
    repeats = 1 if args.small else 2
    single_settings = PredictionSettings(device=str(device), step_fraction=step, use_mirroring=False)
    single = Predictor(networks[:1], plans, "3d_fullres", settings=single_settings)
    tile_batch = single.tiles_per_pass()
    n_tiles = len(tile_windows(shape, patch, step))
    dtype = autocast_dtype(device)
    part.notes.append(
        f"volume {shape}, patch {patch}, step {step}, {n_tiles} tiles, {tile_batch} tiles per forward pass "
        f"({'measured from free GPU memory' if device.type == 'cuda' else 'the training batch on a CPU'}), autocast {dtype}"
    )
    x = torch.randn(tile_batch, 1, *patch, device=device)

    def bare_with(nets, tile_patch, passes: int, per_pass: int) -> None:
        batch = x if list(tile_patch) == patch else torch.randn(per_pass, 1, *tile_patch, device=device)
        with torch.no_grad(), autocast(device, dtype):
            for network in nets:
                for start in range(0, passes, per_pass):
                    network(batch[: min(per_pass, passes - start)])

    def bare(n_networks: int, passes: int) -> None:
        bare_with(networks[:n_networks], patch, passes, tile_batch)

    if not has_monai():
        part.notes.append("MONAI not importable: its column is empty")
    for n_folds, mirror in ((1, False), (1, True), (5, False), (5, True)):
        label = f"{n_folds} fold(s), mirroring {'on' if mirror else 'off'}"
        axes = (0, 1, 2) if mirror else ()
        passes = n_tiles * len(mirror_combinations(axes))
        estimate = 0.0 if not part.rows else part.rows[0]["autosr_s"] * n_folds * len(mirror_combinations(axes)) * 3
        if part.allows(label, estimate):
            part.rows.append(
                compare_prediction(networks[:n_folds], plans, image, axes, step, tile_batch, device, repeats, part)
            )
            part.rows[-1] = {"predict": label, "forward_passes": passes * n_folds, **part.rows[-1]}
            part.rows[-1]["bare_network_s"] = round(timed(lambda: bare(n_folds, passes), device, repeats), 3)  # noqa: B023
            part.rows[-1]["autosr_over_bare"] = round(part.rows[-1]["autosr_s"] / part.rows[-1]["bare_network_s"], 3)

    if args.default_plan is not None and part.allows("5 folds, mirroring on, autosr plan's default 8 GB plan", 20.0):
        small_plans = args.default_plan
        small_patch = list(small_plans.configuration("3d_fullres").patch_size)
        small_networks = networks_for(small_plans, 5, device)
        small_tiles = len(tile_windows(shape, small_patch, step))
        on_device = PredictionSettings(device=str(device))
        per_pass = Predictor(small_networks[:1], small_plans, "3d_fullres", settings=on_device).tiles_per_pass()
        row = compare_prediction(small_networks, small_plans, image, (0, 1, 2), step, per_pass, device, repeats, part)
        passes = small_tiles * 8
        bare_s = timed(lambda: bare_with(small_networks, small_patch, passes, per_pass), device, repeats)
        part.rows.append({"predict": f"5 fold(s), mirroring on, 8 GB plan (patch {small_patch}, {per_pass}/pass)",
                          "forward_passes": passes * 5, **row, "bare_network_s": round(bare_s, 3),
                          "autosr_over_bare": round(row["autosr_s"] / bare_s, 3)})  # fmt: skip

    # precision: speed and deviation from float32 of one fold without mirroring
    reference = None
    for name, precision in (("float32", None), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        if device.type != "cuda" and precision is not None:
            part.skipped.append(f"{name} autocast (CUDA only)")
            continue
        if not part.allows(f"precision {name}"):
            continue
        from autosr.inference.sliding_window import predict_sliding_window

        def run(p=precision):
            return predict_sliding_window(networks[0], image, patch, step, tile_batch, device=device, precision=p)

        run()
        seconds = timed(run, device, repeats)
        out = run().float()
        if reference is None:
            reference = out
        deviation = float((out - reference).abs().max() / reference.abs().max())
        part.rows.append({"precision": name, "seconds": round(seconds, 3), "max_deviation_from_fp32_rel": deviation})

    # tiles per forward pass

    for batch in sorted({1, 2, 4, 8, tile_batch}):
        if not part.allows(f"tile batch {batch}"):
            continue
        seconds = timed(
            lambda b=batch: predict_sliding_window(networks[0], image, patch, step, b, device=device), device, repeats
        )
        part.rows.append({"tiles_per_pass": batch, "seconds": round(seconds, 3), "auto": batch == tile_batch})

    # channels-last memory layout, one fold without mirroring
    if device.type == "cuda" and part.allows("channels_last_3d"):
        network = copy.deepcopy(networks[0]).to(memory_format=torch.channels_last_3d)
        seconds = timed(
            lambda: predict_sliding_window(network, image, patch, step, tile_batch, device=device), device, repeats
        )
        part.rows.append({"layout": "channels_last_3d", "seconds": round(seconds, 3)})


def check_compile(args, plans, device: torch.device, part: Part) -> None:
    """torch.compile of the network for prediction: the first call (compilation) and the steady state,
    against the eager network, one fold without mirroring."""
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    if device.type != "cuda":
        part.skipped.append("torch.compile (measured on a GPU only)")
        return
    plans = args.default_plan or plans  # the plan users get by default: the patch compiled most often
    config = plans.configuration("3d_fullres")
    shape = [max(p, int(round(s * args.scale))) for s, p in zip(BRAIN_1MM, config.patch_size)]
    image = torch.randn(1, *shape)
    network = networks_for(plans, 1, device)
    eager_settings = PredictionSettings(device=str(device), step_fraction=args.step, use_mirroring=False)
    eager = Predictor(network, plans, "3d_fullres", settings=eager_settings)
    eager.predict_preprocessed(image)
    eager_s = timed(lambda: eager.predict_preprocessed(image), device, 2)
    compiled_settings = replace(eager_settings, tile_batch_size=eager.tiles_per_pass(), compile_networks=True)
    compiled = Predictor(network, plans, "3d_fullres", settings=compiled_settings)
    try:
        first = timed(lambda: compiled.predict_preprocessed(image), device, 1)
        steady = timed(lambda: compiled.predict_preprocessed(image), device, 2)
        part.rows.append({"compiled": True, "first_call_s": round(first, 2), "steady_s": round(steady, 3),
                          "eager_s": round(eager_s, 3), "steady_over_eager": round(steady / eager_s, 3)})  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a backend that cannot compile is a finding, not a failure
        part.notes.append(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


# --- report -------------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# GPU check, {results['date']}", "", f"device: {results['device']}", ""]
    for name, part in results["parts"].items():
        lines.append(f"## {name} ({part['seconds']} s of a {part['cap_s']:.0f} s cap)")
        lines += [f"- {n}" for n in part["notes"]]
        for group in _groups(part["rows"]):
            keys = list(dict.fromkeys(k for row in group for k in row))
            lines.append("")
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in group]
        if part["skipped"]:
            lines.append("")
            lines.append("skipped: " + "; ".join(part["skipped"]))
        lines.append("")
    return "\n".join(lines)


def _groups(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive rows with the same first key form one table."""
    groups: list[list[dict[str, Any]]] = []
    for row in rows:
        if groups and next(iter(groups[-1][0])) == next(iter(row)):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes: proves the script, measures nothing")
    parser.add_argument("--parts", nargs="+", default=["training", "prediction", "compile"], help="besides the plan")
    parser.add_argument(
        "--trainers", nargs="+", default=None, help="training part: only these trainers (default: all measured ones)"
    )
    parser.add_argument("--step", type=float, default=None, help="sliding-window step (default: autosr's)")
    parser.add_argument("--workers", type=int, default=None, help="data workers (default: cores - 2, at most 12)")
    parser.add_argument(
        "--caps", type=float, nargs=3, default=(150.0, 150.0, 90.0), help="time caps (s): training, prediction, compile"
    )
    args = parser.parse_args(argv)
    from autosr.device import choose_device
    from autosr.inference.sliding_window import DEFAULT_STEP_FRACTION

    device = choose_device(args.device)
    args.scale = 0.1 if args.small else 1.0
    args.step = args.step or DEFAULT_STEP_FRACTION
    if args.workers is None:
        args.workers = 1 if args.small else max(1, min(12, (os.cpu_count() or 2) - 2))
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "small": args.small,
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "parts": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plan_part = Part("plan", 30.0)
    plans = make_plans(args, device, plan_part)
    args.default_plan = None
    if device.type == "cuda" and not args.small:
        from autosr.planning.planner import DEFAULT_GPU_MEMORY_GB

        args.default_plan = make_plans(args, device, plan_part, DEFAULT_GPU_MEMORY_GB)
    results["parts"]["plan"] = plan_part.to_json()
    with tempfile.TemporaryDirectory(prefix="autosr-gpu-check-") as tmp:
        for name, cap, fn in (
            ("training", args.caps[0], lambda p: check_training(args, plans, device, p, Path(tmp))),
            ("prediction", args.caps[1], lambda p: check_prediction(args, plans, device, p)),
            ("compile", args.caps[2], lambda p: check_compile(args, plans, device, p)),
        ):
            if name not in args.parts:
                continue
            part = Part(name, cap)
            try:
                fn(part)
            except Exception as e:  # noqa: BLE001 - report the failure and go on with the next part
                part.notes.append(f"failed: {type(e).__name__}: {e}")
                part.notes.append(traceback.format_exc()[-1500:])
            results["parts"][name] = part.to_json()
            (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
            print(f"[gpu_check] {name} done in {part.to_json()['seconds']} s", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()

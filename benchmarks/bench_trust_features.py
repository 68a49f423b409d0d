"""Which per-voxel features rank a model's errors? Candidate calibration tables, scored leave one case out.

    python benchmarks/bench_trust_features.py --workdir W --dataset brain [--max-cases 3] [--no-tta]
        [--out features.json] [--cache DIR] [--learned-only] [--learned log,2,0 ...] [--learned-steps 400]

Needs the trained model of `benchmarks/bench_trust.py` in the same `--workdir`. Predicts the clean held-out
cases as the stress test does (the 5-fold ensemble, mirroring unless `--no-tta`; each scan also once more
from its input smoothed by a Gaussian of 1 input voxel, a crude denoiser), then computes candidate features
of every voxel inside the mask on the target grid: from the prediction (intensity, edge strength, signed
and absolute residual against the 3 x 3 x 3 mean, residuals against Gaussian smoothings, the absolute
residual smoothed), from the input resampled to the target grid (its residual and absolute residual, local
noise, band-pass) and the change of the prediction when the input is smoothed (how much of the output the
input's noise made). Input features are divided by the input's 99th percentile in the mask so that scans
of other intensity scales share a table. For each candidate (a set of features and their quantile bin
counts) an `ErrorTable` is fitted on all cases but one and scored on that one: Spearman correlation of the
expected error with |error| and the sparsification ratio, means over the cases (what the stress test's
`uncertainty_error_spearman` and `sparsification_ratio` measure, with the calibration's leave one case out).

On the brains, each held-out subject is also rebuilt from its generator (as `bench_trust_ceiling.py` does,
checked equal to the written files) and predicted from its noise-free input, which gives two *oracle*
features no real scan has: the noise response (prediction - the noise-free input's prediction: what this
noise draw did to the output) and the noise-free error (|the noise-free input's prediction - target|: where
the model errs whatever the draw). Tables over them say how far knowing either would carry the ranking.

A *learned* candidate beside the tables: a tiny 3-d convolutional network (4 layers, 8 channels, receptive
field 9 voxels; `error_network`) over the prediction and the input on the target grid, each divided by its
99th percentile in the mask, trained (seeded, Adam, 400 random 24^3 patches, one CPU thread) to regress
log(|error| / scale + 1e-3) or |error| (softplus output) on the other cases' voxels inside the mask - the
single voxel's error or its Gaussian-smoothed local mean - alone or as a correction on top of the kept table
(its log expected error a third channel and the output's offset). It is scored leave one case out exactly as
the tables are. `--cache DIR` keeps every case's volumes and features, so a rerun skips the prediction.
documentation/trust.md quotes it; autosr/inference/calibration.py holds the kept table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATASETS = {"phantom": "Dataset951_TrustPhantom", "brain": "Dataset952_TrustBrain"}
CURRENT = ("prediction", "edges", "residual")
# (features, bins per feature): the table before (8 x 8 x 8 over intensity, edges, |residual|), the kept one,
# and the alternatives measured against them.
CANDIDATES: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
    (("prediction", "edges", "abs_residual"), (8, 8, 8)),
    (("prediction", "edges", "abs_residual"), (32, 4, 4)),
    (CURRENT, (32, 4, 4)),
    (CURRENT, (8, 8, 8)),
    (("prediction",), (32,)),
    (("prediction", "edges"), (16, 16)),
    (("prediction", "residual"), (32, 16)),
    (("prediction", "residual_g2"), (24, 16)),
    (("prediction", "edges", "abs_residual_smooth1"), (32, 4, 4)),
    (("prediction", "edges", "abs_residual_smooth2"), (32, 4, 4)),
    (("prediction", "edges", "input_abs_residual"), (32, 4, 4)),
    (("prediction", "edges", "input_residual"), (32, 4, 4)),
    (("prediction", "edges", "input_abs_residual_smooth1"), (32, 4, 4)),
    (("prediction", "edges", "input_abs_residual_smooth2"), (32, 4, 4)),
    (("prediction", "edges", "input_noise"), (32, 4, 4)),
    (("prediction", "edges", "input_bandpass"), (32, 4, 4)),
    (("prediction", "edges", "denoising_change"), (32, 4, 4)),
    (("prediction", "input_residual"), (24, 12)),
    (("prediction", "edges", "residual", "input_abs_residual_smooth1"), (16, 4, 4, 4)),
    (("prediction", "edges", "residual", "input_residual"), (16, 4, 4, 4)),
]
ORACLE_CANDIDATES: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
    (("prediction", "edges", "oracle_noise_response"), (32, 4, 4)),
    (("prediction", "oracle_noise_response"), (32, 16)),
    (("prediction", "edges", "residual", "oracle_noise_response"), (16, 4, 4, 8)),
    (("prediction", "oracle_noise_free_error"), (32, 16)),
    (("prediction", "oracle_noise_free_error", "oracle_noise_response"), (16, 8, 8)),
]


def voxel_features(prediction, smoothed_prediction, image, mask, spacing_zyx) -> dict[str, np.ndarray]:
    """Every candidate feature of the voxels inside `mask` (all arrays on the target grid)."""
    from scipy import ndimage

    from autosr.inference.calibration import edge_strength, residual

    prediction = np.asarray(prediction, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    scale = float(np.percentile(image[mask], 99)) or 1.0

    def gauss(a: np.ndarray, sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="reflect")

    def box(a: np.ndarray, size: int) -> np.ndarray:
        return ndimage.uniform_filter(a, size, mode="reflect")

    input_residual = image - box(image, 3)
    features = {
        "prediction": prediction,
        "edges": edge_strength(prediction, spacing_zyx),
        "residual": residual(prediction),
        "abs_residual": np.abs(residual(prediction)),
        "residual_g2": prediction - gauss(prediction, 2),
        "abs_residual_smooth1": gauss(np.abs(residual(prediction)), 1),
        "abs_residual_smooth2": gauss(np.abs(residual(prediction)), 2),
        "input_residual": input_residual / scale,
        "input_abs_residual": np.abs(input_residual) / scale,
        "input_abs_residual_smooth1": gauss(np.abs(input_residual), 1) / scale,
        "input_abs_residual_smooth2": gauss(np.abs(input_residual), 2) / scale,
        "input_noise": np.sqrt(box(input_residual**2, 5)) / scale,
        "input_bandpass": np.abs(gauss(image, 1) - gauss(image, 3)) / scale,
        "denoising_change": prediction - np.asarray(smoothed_prediction, dtype=np.float64),
    }
    return {name: np.asarray(value)[mask] for name, value in features.items()}


def score(cases: list[dict[str, np.ndarray]], names: tuple[str, ...], bins: tuple[int, ...]) -> dict[str, float]:
    """Leave one case out: mean Spearman and sparsification ratio of the table fitted on the other cases."""
    from autosr.evaluation.stress.trust_metrics import sparsification, spearman
    from autosr.inference.calibration import ErrorTable

    rho, ratio, error_ratio = [], [], []
    for index, case in enumerate(cases):
        others = [c for i, c in enumerate(cases) if i != index]
        table = ErrorTable.fit(
            [np.concatenate([c[n] for c in others]) for n in names], np.concatenate([c["error"] for c in others]), bins
        )
        expected = table.lookup([case[n] for n in names])
        rho.append(spearman(expected, case["error"]))
        sparsified = sparsification(expected, case["error"])
        ratio.append(sparsified["ratio"])
        error_ratio.append(sparsified["error_ratio"])
    return {
        "spearman": float(np.mean(rho)),
        "sparsification_ratio": float(np.mean(ratio)),
        "sparsification_error_ratio": float(np.mean(error_ratio)),
    }


# The tiny network's candidates: (regression target, Gaussian sd in voxels of the |error| it regresses, whether
# it learns a correction on top of the kept table). Targets: "log": log(|error| / scale + 1e-3); "abs": |error|
# over its mean on the training voxels.
LEARNED_CANDIDATES: list[tuple[str, float, bool]] = [
    ("abs", 0.0, False),
    ("log", 0.0, False),
    ("log", 2.0, False),
    ("log", 0.0, True),
    ("log", 2.0, True),
]
EPS = 1e-3


def robust_scale(volume: np.ndarray, mask: np.ndarray) -> float:
    """The 99th percentile inside the mask: the unit of a case's intensities (as the input features use)."""
    return float(np.percentile(volume[mask], 99)) or 1.0


def table_volume(table, volume: dict[str, np.ndarray]) -> np.ndarray:
    """The kept table's expected error at every voxel of the grid (spacing 1: within one dataset every case
    shares its spacing, and the quantile bins do not see a common factor of the edge strength)."""
    from autosr.inference.calibration import edge_strength, residual

    prediction = volume["prediction"]
    features = [prediction, edge_strength(prediction, (1.0, 1.0, 1.0)), residual(prediction)]
    return table.lookup(features).reshape(prediction.shape)


def fit_table(volumes: list[dict[str, np.ndarray]]):
    """The kept table (intensity, edges, residual; 32 x 4 x 4) on the cases' voxels inside the mask."""
    from autosr.inference.calibration import ErrorTable, edge_strength, residual

    columns: list[list[np.ndarray]] = [[], [], []]
    for v in volumes:
        p = v["prediction"]
        for column, f in zip(columns, [p, edge_strength(p, (1.0, 1.0, 1.0)), residual(p)]):
            column.append(f[v["mask"]])
    error = np.concatenate([v["error"][v["mask"]] for v in volumes]).astype(np.float64)
    return ErrorTable.fit([np.concatenate(c) for c in columns], error, (32, 4, 4))


def network_inputs(volume: dict[str, np.ndarray], table=None) -> tuple[np.ndarray, float]:
    """The network's channels (prediction and input on the target grid, each over its robust scale; with a
    table, its log expected error over the prediction's scale as a third) and the prediction's scale, the unit
    of the regressed error: scans of other intensity scales share the network."""
    scale = robust_scale(volume["prediction"], volume["mask"])
    channels = [volume["prediction"] / scale, volume["image"] / robust_scale(volume["image"], volume["mask"])]
    if table is not None:
        channels.append(np.log(table_volume(table, volume) / scale + EPS))
    return np.stack(channels).astype(np.float32), scale


def error_network(inputs: int, channels: int = 8):
    """A few 3 x 3 x 3 convolutions (receptive field 9 voxels: the second dilated) mapping the channels to one
    expected-error map; small enough to fit on one CPU thread in well under a minute. The last layer starts
    at zero, so a network on top of the table starts as the table."""
    import torch

    last = torch.nn.Conv3d(channels, 1, 1)
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return torch.nn.Sequential(
        torch.nn.Conv3d(inputs, channels, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(channels, channels, 3, padding=2, dilation=2),
        torch.nn.ReLU(),
        torch.nn.Conv3d(channels, channels, 3, padding=1),
        torch.nn.ReLU(),
        last,
    )


def smoothed_in_mask(volume: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian average over the mask's voxels only (sigma in voxels; 0: unchanged). A regression target
    of the *local mean* |error| is far less noisy than the single voxel's, and the expected error is what the
    network should learn; it is still scored against each voxel's own |error|."""
    if sigma <= 0:
        return volume
    from scipy import ndimage

    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    total = ndimage.gaussian_filter(np.where(mask, volume, 0.0).astype(np.float64), sigma)
    return np.where(mask, total / np.maximum(weight, 1e-6), 0.0)


def fit_error_network(volumes: list[dict[str, np.ndarray]], target: str, smooth: float, on_table: bool,
                      steps: int = 400, patch: int = 24, seed: int = 0) -> dict:  # fmt: skip
    """Train the network on the cases' voxels inside the mask (random patches, Adam with a cosine decay,
    seeded); returns it with what applying it needs (the table, the target's unit)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    table = fit_table(volumes) if on_table else None
    net = error_network(3 if on_table else 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    data, goals = [], []
    for volume in volumes:
        channels, scale = network_inputs(volume, table)
        error = smoothed_in_mask(volume["error"], volume["mask"], smooth) / scale
        goals.append(error[volume["mask"]].mean())
        data.append((channels, error, volume["mask"]))
    unit = float(np.mean(goals))  # the "abs" target's unit: its mean is near 1
    tensors = []
    for channels, error, mask in data:
        goal = np.log(error + EPS) if target == "log" else error / unit
        tensors.append((torch.from_numpy(channels), torch.from_numpy(goal.astype(np.float32)),
                        torch.from_numpy(mask.astype(np.float32))))  # fmt: skip
    for step in range(steps):
        channels, goal, mask = tensors[step % len(tensors)]
        corner = [int(rng.integers(0, max(1, n - patch + 1))) for n in mask.shape]
        window = tuple(slice(c, c + patch) for c in corner)
        x = channels[(slice(None), *window)][None]
        out = net(x)[0, 0] + (x[0, 2] if on_table else 0.0)
        out = torch.nn.functional.softplus(out) if target == "abs" else out  # |error| is positive
        weight = mask[window]
        loss = (weight * (out - goal[window]) ** 2).sum() / weight.sum().clamp(min=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:  # cosine decay
            group["lr"] = 1e-2 * 0.5 * (1 + np.cos(np.pi * (step + 1) / steps))
    return {"net": net, "table": table, "target": target, "unit": unit}


def apply_error_network(model: dict, volume: dict[str, np.ndarray]) -> np.ndarray:
    """The expected |error| of every voxel inside the mask, in the prediction's units."""
    import torch

    channels, scale = network_inputs(volume, model["table"])
    with torch.no_grad():
        x = torch.from_numpy(channels)[None]
        out = model["net"](x)[0, 0] + (x[0, 2] if model["table"] is not None else 0.0)
    if model["target"] == "abs":
        out = torch.nn.functional.softplus(out)
    out = out.numpy().astype(np.float64)
    expected = np.exp(out) if model["target"] == "log" else out * model["unit"]
    return (expected * scale)[volume["mask"]]


def score_learned(volumes: list[dict[str, np.ndarray]], target: str, smooth: float, on_table: bool,
                  steps: int) -> dict[str, float]:  # fmt: skip
    """Leave one case out, as `score`: the network trained on the other cases, scored on the left-out one."""
    import time

    from autosr.evaluation.stress.trust_metrics import sparsification, spearman

    rho, ratio, error_ratio, seconds = [], [], [], []
    for index, volume in enumerate(volumes):
        start = time.perf_counter()
        model = fit_error_network([v for i, v in enumerate(volumes) if i != index], target, smooth, on_table, steps)
        seconds.append(time.perf_counter() - start)
        expected = apply_error_network(model, volume)
        error = volume["error"][volume["mask"]].astype(np.float64)
        rho.append(spearman(expected, error))  # None: the network collapsed to a constant
        if rho[-1] is None:
            print(f"[bench_trust_features] case {index}: constant expected error (no ranking)", flush=True)
        sparsified = sparsification(expected, error)
        ratio.append(sparsified["ratio"])
        error_ratio.append(sparsified["error_ratio"])
    return {
        "spearman": float(np.mean([np.nan if r is None else r for r in rho])),
        "sparsification_ratio": float(np.mean(ratio)),
        "sparsification_error_ratio": float(np.mean(error_ratio)),
        "spearman_per_case": rho,
        "fit_seconds": float(np.mean(seconds)),
    }


def save_cache(folder: str, case_id: str, features: dict[str, np.ndarray], volumes: dict[str, np.ndarray]) -> None:
    """One case's masked features and full volumes, so that candidates can be rescored without predicting."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    np.savez(Path(folder) / f"{case_id}.npz", **{f"f_{k}": v for k, v in features.items()},
             **{f"v_{k}": v for k, v in volumes.items()})  # fmt: skip


def load_cache(folder: str | None, case_ids: list[str]) -> tuple[list[dict], list[dict]]:
    """The cached cases (empty lists unless every case is cached)."""
    if not folder or not all((Path(folder) / f"{c}.npz").exists() for c in case_ids):
        return [], []
    voxels, volumes = [], []
    for case_id in case_ids:
        with np.load(Path(folder) / f"{case_id}.npz") as data:
            voxels.append({k[2:]: data[k] for k in data.files if k.startswith("f_")})
            volumes.append({k[2:]: data[k] for k in data.files if k.startswith("v_")})
        print(f"[bench_trust_features] {case_id}: MAE {voxels[-1]['error'].mean():.1f} (cached)", flush=True)
    return voxels, volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="bench_trust_work")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="brain")
    parser.add_argument("--max-cases", type=int, default=3)
    parser.add_argument("--no-tta", action="store_true", help="predict without mirroring")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--cache", default=None, help="folder of the cases' volumes and features: read if there, else written"
    )
    parser.add_argument("--learned", nargs="*", default=None, help="network candidates as target,smooth,on_table")
    parser.add_argument("--learned-steps", type=int, default=400, help="training steps of the error network")
    parser.add_argument("--learned-only", action="store_true", help="score only the error network")
    args = parser.parse_args()

    import torch
    from scipy import ndimage

    from autosr.evaluation.stress.api import evaluation_cases
    from autosr.evaluation.stress.trust_metrics import spearman
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings
    from autosr.io import read_image
    from autosr.io.resampling import resample_to_geometry
    from autosr.preprocessing.preprocess import preprocess_arrays

    torch.set_num_threads(1)
    raw = Path(args.workdir).resolve() / "raw" / DATASETS[args.dataset]
    model = Path(args.workdir).resolve() / "results" / DATASETS[args.dataset] / "Trainer__autosrPlans__2d"
    settings = PredictionSettings(device="cpu", use_mirroring=not args.no_tta)
    predictor = Predictor.from_trained(model, [0, 1, 2, 3, 4], "final", settings)
    cases, _ = evaluation_cases(raw, args.max_cases)

    def predict(image: np.ndarray, geometry, target_geometry) -> np.ndarray:
        scan = preprocess_arrays(image[None], geometry, predictor.plans, predictor.configuration_name)
        normalized, _ = predictor.predict_preprocessed(scan.input)
        predicted, out_geometry, _ = predictor.export(normalized, scan.properties, False, None, scan.foreground)
        if not out_geometry.same_grid(target_geometry):
            predicted = resample_to_geometry(predicted, out_geometry, target_geometry, order=1)
        return predicted

    def noise_free_input(case_id: str, written: np.ndarray) -> tuple[np.ndarray, object] | None:
        """A held-out brain's noise-free input and its geometry, rebuilt from the generator (None: phantom)."""
        if args.dataset != "brain":
            return None
        from autosr.dataset_conversion import synthetic_brain as sb

        brain = sb.SyntheticBrainSettings(num_train=12, num_test=4, target_spacing_mm=2.0)  # as bench_trust.py
        rng = np.random.default_rng([brain.seed, int(case_id.rsplit("_", 1)[1])])
        parts = sb.subject_parts(sb.load_template(brain.target_spacing_mm), brain.input_spacing, rng)
        if not np.allclose(written, sb.rician(parts.clean_input, rng), atol=1e-3):
            raise SystemExit(f"{case_id}: the rebuilt subject differs from the written files (other settings?)")
        return parts.clean_input.astype(np.float32), parts.input_geometry

    voxels, volumes = load_cache(args.cache, [c.case_id for c in cases])
    for case in cases if not voxels else []:
        image, geometry = read_image(case.channels[0])
        target, target_geometry = read_image(case.target)
        mask = read_image(case.mask)[0] > 0  # the bench_trust datasets have masks
        prediction = predict(image, geometry, target_geometry)
        smoothed = predict(
            ndimage.gaussian_filter(image.astype(np.float64), 1.0).astype(np.float32), geometry, target_geometry
        )
        on_target_grid = resample_to_geometry(image, geometry, target_geometry, order=1)
        features = voxel_features(prediction, smoothed, on_target_grid, mask, target_geometry.spacing_zyx)
        features["error"] = np.abs(prediction - target)[mask].astype(np.float64)
        clean = noise_free_input(case.case_id, image)
        if clean is not None:
            noise_free = predict(clean[0], clean[1], target_geometry)
            features["oracle_noise_response"] = (prediction - noise_free)[mask].astype(np.float64)
            features["oracle_noise_free_error"] = np.abs(noise_free - target)[mask].astype(np.float64)
        voxels.append(features)
        volumes.append(
            {
                "prediction": prediction.astype(np.float32),
                "image": on_target_grid.astype(np.float32),
                "mask": mask,
                "error": np.abs(prediction - target).astype(np.float32),
            }
        )
        print(f"[bench_trust_features] {case.case_id}: MAE {features['error'].mean():.1f}", flush=True)
        if args.cache:
            save_cache(args.cache, case.case_id, features, volumes[-1])
    single = {
        name: float(np.mean([spearman(c[name], c["error"]) for c in voxels])) for name in voxels[0] if name != "error"
    }
    rows = []
    oracle = ORACLE_CANDIDATES if "oracle_noise_response" in voxels[0] else []
    for names, bins in [] if args.learned_only else CANDIDATES + oracle:
        row = {"features": list(names), "bins": list(bins), **score(voxels, names, bins)}
        rows.append(row)
        print(f"  {' + '.join(names):60s} {'x'.join(map(str, bins)):>10s}  rho {row['spearman']:.3f}  "
              f"ratio {row['sparsification_ratio']:.3f}", flush=True)  # fmt: skip
    learned = []
    candidates = [
        c for c in LEARNED_CANDIDATES if args.learned is None or f"{c[0]},{c[1]:g},{int(c[2])}" in args.learned
    ]
    for target, smooth, on_table in candidates:
        row = {"target": target, "smooth": smooth, "on_table": on_table, "steps": args.learned_steps,
               **score_learned(volumes, target, smooth, on_table, args.learned_steps)}  # fmt: skip
        learned.append(row)
        name = f"network{' on the table' if on_table else ''}: {target} |error| smoothed {smooth:g}"
        print(f"  {name:60s} {args.learned_steps:>6d} steps  rho {row['spearman']:.3f}  "
              f"ratio {row['sparsification_ratio']:.3f}  to oracle {row['sparsification_error_ratio']:.3f}  "
              f"({row['fit_seconds']:.0f} s a fit)", flush=True)  # fmt: skip
    result = {
        "dataset": args.dataset,
        "cases": [c.case_id for c in cases],
        "mirroring": not args.no_tta,
        "single_feature_spearman": single,
        "candidates": rows,
        "learned": learned,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

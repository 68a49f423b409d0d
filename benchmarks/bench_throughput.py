"""Folder prediction throughput and per-scan quality flags: is the network the bottleneck?

    python benchmarks/bench_throughput.py --model-dir RESULTS/Dataset171_SyntheticBrain/Trainer__autosrPlans__2d \
        --input RAW/Dataset171_SyntheticBrain/imagesTs --workdir /tmp/throughput --folds 0 --no-tta \
        --workers 0 1 --threads 1 --out throughput.json

For each `--workers` value the whole input folder is predicted (`Predictor.predict_folder`, the code
`autosr predict` runs) into a fresh folder, in this one process, one run after the other:

- `--workers 0` runs every step in the main process, one after the other: its summed `network_s` is the
  network time alone (nothing of this process runs beside it), the reference of the ratio;
- `--workers k` overlaps reading, preprocessing and export with the network (autosr/inference/pipeline.py).

Reported per run: wall time, the summed per-scan times (preprocess, network, export), network-alone time /
wall time (the target: at least 0.85), the in-run network share, scans per hour, and the peak resident memory
of the process tree (main + workers, sampled every 0.2 s from /proc, Linux), also over the first quarter of
the run's wall time (the same = memory bounded whatever the number of scans). The flag count comes from summary.csv.

`--ood N` also writes three out-of-distribution versions of each of the first N input scans (3x the spacing,
intensities x10, intensities inverted inside the head: a T2-like contrast) and predicts them beside the
in-distribution scans, with `--uncertainty` when `--ood-uncertainty` is given (the model folder then needs an
uncertainty reference for that ensemble: `autosr qc-reference ... --uncertainty`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler:
    """Resident memory of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids, todo = [], [os.getpid()]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += _children(pid)
            self.samples.append((time.perf_counter(), sum(_rss_bytes(p) for p in pids)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_until(self, moment: float | None = None) -> int:
        values = [rss for t, rss in self.samples if moment is None or t <= moment]
        return max(values) if values else 0


def make_out_of_distribution(sources: list[Path], folder: Path) -> list[str]:
    """Three altered copies of each source scan; returns their case ids."""
    from autosr.io import grid_covering, read_image, resample_to_geometry, write_image

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for source in sources:
        case = source.name[: -len("_0000.nii.gz")]
        array, geometry = read_image(source)
        coarse = grid_covering(geometry, tuple(3 * s for s in geometry.spacing_zyx))
        resampled = resample_to_geometry(array, geometry, coarse, order=1)
        write_image(resampled, coarse, folder / f"ood_spacing3x_{case}_0000.nii.gz")
        write_image(array * 10, geometry, folder / f"ood_scaled10x_{case}_0000.nii.gz")
        head = array > 0.5 * np.percentile(array, 99)
        inverted = np.where(head, array.max() + array.min() - array, array)
        write_image(inverted, geometry, folder / f"ood_contrast_{case}_0000.nii.gz")
        cases += [f"ood_spacing3x_{case}", f"ood_scaled10x_{case}", f"ood_contrast_{case}"]
    return cases


def run_once(predictor, input_dir: Path, output_dir: Path, workers: int, uncertainty: bool) -> dict:
    import pandas as pd

    from autosr.inference.settings import FolderSettings

    shutil.rmtree(output_dir, ignore_errors=True)
    cases = sorted(p.name for p in input_dir.glob("*_0000.nii.gz"))
    with MemorySampler() as memory:
        start = time.perf_counter()
        settings = FolderSettings(num_workers=workers, uncertainty=uncertainty, progress=False)
        summary = predictor.predict_folder(input_dir, output_dir, settings)
        wall = time.perf_counter() - start
    table = pd.read_csv(output_dir / "summary.csv")
    predicted = table[table["status"] == "predicted"]
    first_quarter_end = start + wall / 4  # scans take about equally long: about the first quarter of them
    flagged = table["flag"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return {
        "workers": workers,
        "scans": len(cases),
        "predicted": len(summary.predicted),
        "failed": len(summary.failed),
        "wall_s": wall,
        "preprocess_s": float(predicted["preprocess_s"].sum()),
        "network_s": float(predicted["network_s"].sum()),
        "export_s": float(predicted["export_s"].sum()),
        "scans_per_hour": 3600 * len(summary.predicted) / wall,
        "peak_rss_mib": memory.peak_until() / 1024**2,
        "peak_rss_first_quarter_of_run_mib": memory.peak_until(first_quarter_end) / 1024**2,
        "flagged": sorted(table.loc[flagged, "case"].astype(str)),
        "reasons": dict(zip(table.loc[flagged, "case"].astype(str), table.loc[flagged, "reason"].astype(str))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--input", required=True, help="folder of <case>_0000.nii.gz scans")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--limit", type=int, default=None, help="only the first N scans (sorted)")
    parser.add_argument("--ood", type=int, default=0, help="out-of-distribution copies of the first N scans")
    parser.add_argument("--uncertainty", action="store_true", help="predict with --uncertainty")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch

    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    scans = workdir / "scans"
    shutil.rmtree(scans, ignore_errors=True)
    scans.mkdir(parents=True)
    sources = sorted(Path(args.input).glob("*_0000.nii.gz"))[: args.limit]
    for source in sources:
        shutil.copyfile(source, scans / source.name)
    ood_cases = make_out_of_distribution(sources[: args.ood], scans) if args.ood else []
    settings = PredictionSettings(use_mirroring=not args.no_tta, device="cpu")
    predictor = Predictor.from_trained(args.model_dir, folds=args.folds, settings=settings)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": args.threads,
        },
        "settings": {
            "folds": args.folds,
            "mirroring": not args.no_tta,
            "members": predictor.num_members,
            "uncertainty": args.uncertainty,
            "scans": len(sources),
            "ood_scans": ood_cases,
        },
        "runs": [],
    }
    for workers in args.workers:
        result = run_once(predictor, scans, workdir / f"out_workers{workers}", workers, args.uncertainty)
        result["load_average_after"] = os.getloadavg()
        record["runs"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "reasons"}), flush=True)
    alone = next((r["network_s"] for r in record["runs"] if r["workers"] == 0), None)
    for r in record["runs"]:
        r["network_share_in_run"] = r["network_s"] / r["wall_s"]
        r["network_alone_over_wall"] = alone / r["wall_s"] if alone is not None else None
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print("| workers | wall (s) | network in run (s) | preprocess (s) | export (s) | network alone / wall | "
          "network share in run | scans/h | peak RSS (MiB; first quarter) | flagged |")  # fmt: skip
    for r in record["runs"]:
        ratio = f"{r['network_alone_over_wall']:.2f}" if r["network_alone_over_wall"] is not None else "-"
        print(
            f"| {r['workers']} | {r['wall_s']:.1f} | {r['network_s']:.1f} | {r['preprocess_s']:.1f} | "
            f"{r['export_s']:.1f} | {ratio} | {r['network_share_in_run']:.2f} | {r['scans_per_hour']:.0f} | "
            f"{r['peak_rss_mib']:.0f} ({r['peak_rss_first_quarter_of_run_mib']:.0f}) | {len(r['flagged'])} |"
        )


if __name__ == "__main__":
    main()

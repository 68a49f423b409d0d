"""The stress test's pictures: the calibration plot, the sparsification curves, the error and flag score per
perturbation, and each lesion scan around its largest lesion (input | prediction | target, one grey window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autosr.io.atomic import atomic_path


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


def save_stress_pictures(
    folder: Path, summary: dict[str, Any], curves: dict[str, Any], lesion_scans: list[dict[str, Any]]
) -> list[str]:
    """Write the pictures into `folder`; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names = []

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    panels = (
        ("calibration", "expected error (calibrated, target units)", summary["uncertainty_error_spearman"]),
        ("spread_calibration", "ensemble spread (target units)", summary["spread_error_spearman"]),
    )
    for ax, (key, label, rho) in zip(axes, panels):
        uncertainty = [r["mean_uncertainty"] for r in summary[key]]
        error = [r["mean_abs_error"] for r in summary[key]]
        ax.plot(uncertainty, error, "o-", label="clean held-out voxels, per decile")
        top = max(max(uncertainty), max(error))
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="equal")
        ax.set_xlabel(label)
        ax.set_ylabel("mean |error| (target units)")
        ax.set_title(f"Spearman {rho if rho is not None else float('nan'):.2f}")
        ax.legend(fontsize=7)
    names.append(_save(fig, folder / "calibration.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    fractions = np.asarray(curves["fractions"])
    ax.plot(fractions, curves["by_uncertainty"], label="largest expected error first")
    ax.plot(fractions, curves["by_spread"], label="largest ensemble spread first")
    ax.plot(fractions, curves["oracle"], label="oracle (largest errors first)")
    ax.axhline(curves["random"], color="k", ls="--", lw=0.8, label="random order")
    ax.set_xlabel("fraction of voxels removed")
    ax.set_ylabel("mean |error| of the rest")
    ratio, to_oracle = (summary.get(k) or float("nan") for k in ("sparsification_ratio", "sparsification_error_ratio"))
    ax.set_title(f"sparsification ratio {ratio:.2f} (to the oracle {to_oracle:.2f})", fontsize=9)
    ax.legend(fontsize=7)
    names.append(_save(fig, folder / "sparsification.png"))

    rows = summary["perturbations"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [r["perturbation"] for r in rows]
    axes[0].bar(labels, [r["mae_ratio_to_clean"] or 0 for r in rows])
    axes[0].set_ylabel("MAE / clean MAE")
    axes[1].bar(labels, [r["flag_score"] or 0 for r in rows])
    axes[1].axhline(1.0, color="r", lw=0.8)
    axes[1].set_ylabel("flag score (>1: flagged)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=70, labelsize=7)
    names.append(_save(fig, folder / "perturbations.png"))

    for scan in lesion_scans:
        names.append(_save(_lesion_figure(scan), folder / f"{scan['name']}.png"))
    return names


def _lesion_figure(scan: dict[str, Any]):
    """The slice through the largest lesion's centre, cropped to three diameters around it; prediction and
    target share the target crop's grey window (the lesion included), the input has its own."""
    import matplotlib.pyplot as plt

    from autosr.evaluation.stress.lesions import sphere_mask

    lesion = max(scan["lesions"], key=lambda item: item.diameter_mm)
    geometry = scan["geometry"]
    inside = sphere_mask(geometry, lesion)
    centre = np.argwhere(inside).mean(axis=0).round().astype(int) if inside.any() else np.array(inside.shape) // 2
    half = [max(4, int(round(1.5 * lesion.diameter_mm / s))) for s in geometry.spacing_zyx[1:]]
    rows = slice(max(0, centre[1] - half[0]), centre[1] + half[0] + 1)
    cols = slice(max(0, centre[2] - half[1]), centre[2] + half[1] + 1)

    def crop(volume: np.ndarray) -> np.ndarray:
        return volume[centre[0], rows, cols]

    window = tuple(np.percentile(crop(scan["target"]), (0.5, 99.5)))
    panels = (
        ("input", scan["input"], None),
        ("prediction", scan["prediction"], window),
        ("target", scan["target"], window),
    )
    fig, axes = plt.subplots(1, 3, figsize=(8, 3))
    for ax, (title, volume, grey) in zip(axes, panels):
        image = crop(volume)
        grey = grey or tuple(np.percentile(image, (0.5, 99.5)))
        ax.imshow(image, cmap="gray", vmin=grey[0], vmax=grey[1], interpolation="nearest")
        ax.contour(crop(inside), levels=[0.5], colors="r", linewidths=0.6)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{scan['name']}: the {lesion.diameter_mm:g} mm lesion (outlined), axial slice", fontsize=9)
    return fig

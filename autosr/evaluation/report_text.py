"""Plain-text tables of a summary for the terminal: model vs baseline, mean +- std per metric."""

from __future__ import annotations

from typing import Any

SHOWN = (
    "ssim", "psnr", "mae", "nmse", "ms_ssim",
    "ssim_image", "psnr_image", "mae_image", "ms_ssim_image", "mae_outside_mask",
    "tissue_dice_low", "tissue_dice_mid", "tissue_dice_high",
)  # fmt: skip


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"{summary.get('num_cases', '?')} cases; region: {summary.get('region', 'the mask')} (metrics with _image: "
        f"the whole image); normalization: {summary.get('normalization')}"
    ]
    missing = summary.get("cases_missing_prediction") or []
    if missing:
        lines.append(
            f"WARNING: {len(missing)} reference case(s) without a prediction, not scored: {', '.join(missing)}"
        )
    stats = summary.get("metrics", {})
    # the baseline column is, per metric, the better of the two no-learning baselines shown after it
    methods = [m for m in ("model", "baseline", "baseline_linear", "baseline_standardized") if m in stats]
    lines.append(f"{'metric':<17}" + "".join(f"{m:>24}" for m in methods))
    for metric in SHOWN:
        cells = []
        for method in methods:
            s = stats[method].get(metric)
            cells.append(f"{s['mean']:>14.4f} +- {s['std']:<6.4f}" if s else f"{'-':>24}")
        if any(c.strip() != "-" for c in cells):
            lines.append(f"{metric:<17}" + "".join(cells))
    return lines

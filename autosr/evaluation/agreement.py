"""Agreement of a measurement (a structure's volume) made two ways over many cases: intraclass
correlation and Bland-Altman limits, and the Bland-Altman picture.

Why: Dice says how well two label maps overlap in one case; a study uses the *volumes*, over many
subjects. A synthetic scan is good enough for volumetry when the volumes measured on it agree with
those measured on the real scan across subjects, without bias.

**ICC** (Shrout & Fleiss, Psychol Bull 86(2) 1979; McGraw & Wong, Psychol Methods 1(1) 1996). For an
n x k table x (n cases, k = 2 ways of measuring), with grand mean m, case means r_i, column means c_j:

    MSR = k/(n-1)       sum_i (r_i - m)^2                        between cases
    MSC = n/(k-1)       sum_j (c_j - m)^2                        between the ways of measuring
    MSE = 1/((n-1)(k-1)) sum_ij (x_ij - r_i - c_j + m)^2         residual

    ICC(2,1) = (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)    two-way random, absolute agreement
    ICC(3,1) = (MSR - MSE) / (MSR + (k-1) MSE)                        two-way mixed, consistency

autosr reports **ICC(2,1)** (McGraw & Wong's ICC(A,1)) as the agreement figure: a synthetic scan that
inflates every hippocampus by 10% has perfect consistency (ICC(3,1) near 1) but is wrong for volumetry,
and ICC(2,1) penalises that bias. ICC(3,1) is reported beside it; a gap between the two is a systematic
offset. Both need n >= 2 and are undefined (None) when every value is the same.

**Bland-Altman** (Bland & Altman, Lancet 327(8476) 1986): differences d_i = b_i - a_i against means
(a_i + b_i)/2; bias = mean(d), limits of agreement = bias -+ 1.96 SD(d) (sample SD, n - 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

LOA_Z = 1.96  # limits of agreement: bias -+ 1.96 SD, 95% of differences under normality


def anova_mean_squares(table: np.ndarray) -> tuple[float, float, float]:
    """(MSR, MSC, MSE) of an (n cases, k ways) table, two-way ANOVA without replication."""
    x = np.asarray(table, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"need an (n >= 2, k >= 2) table, got shape {x.shape}")
    n, k = x.shape
    grand = x.mean()
    rows, columns = x.mean(axis=1), x.mean(axis=0)
    msr = k * float(((rows - grand) ** 2).sum()) / (n - 1)
    msc = n * float(((columns - grand) ** 2).sum()) / (k - 1)
    residual = x - rows[:, None] - columns[None, :] + grand
    mse = float((residual**2).sum()) / ((n - 1) * (k - 1))
    return msr, msc, mse


def icc(table: np.ndarray, form: str = "2,1") -> float | None:
    """ICC(2,1) (absolute agreement) or ICC(3,1) (consistency) of an (n, k) table; None if undefined."""
    x = np.asarray(table, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        return None
    n, k = x.shape
    msr, msc, mse = anova_mean_squares(x)
    if form == "2,1":
        denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    elif form == "3,1":
        denominator = msr + (k - 1) * mse
    else:
        raise ValueError(f"unknown ICC form '{form}'; use '2,1' or '3,1'")
    scale = max(abs(msr), abs(msc), abs(mse), 1e-300)
    if abs(denominator) <= 1e-12 * scale:
        return None
    return (msr - mse) / denominator


def bland_altman(reference: Sequence[float], other: Sequence[float]) -> dict[str, Any] | None:
    """{n, bias, sd, loa_low, loa_high} of other - reference; None with fewer than 2 pairs."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    if a.size < 2:
        return None
    d = b - a
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {"n": int(a.size), "bias": bias, "sd": sd, "loa_low": bias - LOA_Z * sd, "loa_high": bias + LOA_Z * sd}


def save_bland_altman_plot(
    path: str | os.PathLike,
    panels: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    unit: str = "mm³",
) -> None:
    """One PNG, one panel per compared source: {source: (reference values, source values)}, written atomically.

    x: mean of the two measurements; y: source minus reference; lines at the bias and the limits of
    agreement. Panels share the y axis so the sources compare at a glance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autosr.io import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (source, (reference, other)) in zip(axes[0], panels.items()):
        a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
        ax.scatter((a + b) / 2, b - a, s=14, alpha=0.8)
        stats = bland_altman(a, b)
        if stats is not None:
            for value, style in ((stats["bias"], "-"), (stats["loa_low"], "--"), (stats["loa_high"], "--")):
                ax.axhline(value, color="k", linestyle=style, linewidth=0.8)
            ax.set_title(
                f"{source} vs reference\nbias {stats['bias']:.4g}, LoA [{stats['loa_low']:.4g}, {stats['loa_high']:.4g}]",
                fontsize=9,
            )
        else:
            ax.set_title(f"{source} vs reference (n < 2)", fontsize=9)
        ax.axhline(0.0, color="0.6", linewidth=0.5)
        ax.set_xlabel(f"mean volume ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(f"source - reference ({unit})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)

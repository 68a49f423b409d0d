"""Does an uncertainty map predict the error, and does a per-scan score predict failure? Pure functions.

All take flat arrays of the voxels that count (inside the mask) or per-scan values, and return plain floats
or lists, so a notebook can score any uncertainty (not only autosr's) against any error:

- `spearman`: rank correlation of uncertainty and |error| (ties get their average rank; Spearman 1904).
- `calibration_table`: mean |error| and mean uncertainty per uncertainty decile (equal-count bins): a
  calibrated uncertainty in target units has the two equal in every row.
- `sparsification`: the mean |error| left after removing the fraction f of voxels with the largest
  uncertainty, for f on a grid; its area compared with the oracle (removing the largest errors first) and
  with a random ordering (a flat line at the mean error). `sparsification_ratio` = area(uncertainty) /
  area(random): 1 means the uncertainty ranks errors no better than chance, the oracle's ratio is the best
  possible (Ilg et al., ECCV 2018, "Uncertainty estimates and multi-hypotheses networks for optical flow").
  `error_ratio` is the literature's normalized reading: the area *between* the uncertainty's curve and the
  oracle's (AUSE, Ilg et al.) over the same area for a random ordering, i.e. (ratio - oracle_ratio) /
  (1 - oracle_ratio): 0 is the oracle, 1 chance. An "area against the oracle" can be read either way
  (documentation/trust.md gives both).
- `auroc`: the probability that a randomly chosen positive scan scores above a randomly chosen negative one
  (ties count one half; the Mann-Whitney U statistic over the product of the class sizes).
- `interval_coverage`: the fraction of voxels whose truth lies inside prediction +- half width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

SPARSIFICATION_STEPS = 20  # fractions removed: 0, 1/20, ..., 19/20 (the last bin keeps 5% of the voxels)


def spearman(uncertainty: np.ndarray, error: np.ndarray) -> float | None:
    """Spearman's rho of two equally long arrays (Pearson correlation of their average ranks); None when
    either is constant (rho is undefined)."""
    u = rankdata(np.asarray(uncertainty, dtype=np.float64).ravel())
    e = rankdata(np.asarray(error, dtype=np.float64).ravel())
    if u.size != e.size:
        raise ValueError(f"uncertainty has {u.size} values but error {e.size}")
    u, e = u - u.mean(), e - e.mean()
    denominator = np.sqrt((u * u).sum() * (e * e).sum())
    return float((u * e).sum() / denominator) if denominator > 0 else None


def calibration_table(uncertainty: np.ndarray, error: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per uncertainty bin of equal voxel count (deciles by default, lowest first): the bin's uncertainty
    range, mean uncertainty, mean |error| and voxel count. Voxels are ordered by uncertainty (stable sort),
    then split into `bins` consecutive groups of sizes differing by at most one."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    e = np.abs(np.asarray(error, dtype=np.float64).ravel())
    order = np.argsort(u, kind="stable")
    rows = []
    for part in np.array_split(order, bins):
        if part.size == 0:
            continue
        rows.append(
            {
                "uncertainty_low": float(u[part].min()),
                "uncertainty_high": float(u[part].max()),
                "mean_uncertainty": float(u[part].mean()),
                "mean_abs_error": float(e[part].mean()),
                "voxels": int(part.size),
            }
        )
    return rows


def sparsification_curve(
    score: np.ndarray, error: np.ndarray, steps: int = SPARSIFICATION_STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """(fractions removed, mean |error| of the voxels kept): voxels with the largest `score` removed first
    (stable order: among equal scores the later voxel goes first), `round(f * n)` voxels removed at f."""
    s = np.asarray(score, dtype=np.float64).ravel()
    e = np.abs(np.asarray(error, dtype=np.float64).ravel())
    n = e.size
    if n == 0:
        raise ValueError("no voxels to sparsify")
    order = np.argsort(s, kind="stable")  # ascending: the kept voxels are a prefix
    cumulative = np.concatenate([[0.0], np.cumsum(e[order])])
    fractions = np.arange(steps) / steps
    kept = n - np.round(fractions * n).astype(int)
    kept = np.maximum(kept, 1)
    return fractions, cumulative[kept] / kept


def sparsification(uncertainty: np.ndarray, error: np.ndarray, steps: int = SPARSIFICATION_STEPS) -> dict[str, float]:
    """Areas (mean over the fraction grid) of the sparsification curves of the uncertainty, the oracle
    (|error| itself) and a random ordering (the mean error everywhere), and `ratio` = uncertainty / random,
    `oracle_ratio` = oracle / random (the best a ratio can be on these voxels), `error_ratio` = (uncertainty -
    oracle) / (random - oracle), the area between the uncertainty's curve and the oracle's relative to a
    random ordering's (AUSE over its chance level; None when the oracle is no better than random: equal
    errors)."""
    e = np.abs(np.asarray(error, dtype=np.float64).ravel())
    _, by_uncertainty = sparsification_curve(uncertainty, e, steps)
    _, by_error = sparsification_curve(e, e, steps)
    random_area = float(e.mean())
    area, oracle = float(by_uncertainty.mean()), float(by_error.mean())
    return {
        "area": area,
        "oracle_area": oracle,
        "random_area": random_area,
        "ratio": area / random_area if random_area > 0 else None,
        "oracle_ratio": oracle / random_area if random_area > 0 else None,
        "error_ratio": (area - oracle) / (random_area - oracle) if random_area > oracle else None,
    }


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `scores` for the `positive` class (Mann-Whitney U / (n+ n-), ties half);
    None when one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(p.sum()), int((~p).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    u = ranks[p].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def interval_coverage(prediction: np.ndarray, truth: np.ndarray, half_width: np.ndarray) -> float:
    """The fraction of voxels with |truth - prediction| <= half_width."""
    difference = np.abs(np.asarray(truth, dtype=np.float64) - np.asarray(prediction, dtype=np.float64))
    return float(np.mean(difference <= np.asarray(half_width, dtype=np.float64)))

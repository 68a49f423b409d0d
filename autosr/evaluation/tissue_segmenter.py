"""autosr's own tissue segmenter for users without one: a Gaussian mixture with a smooth multiplicative
bias field and a Markov random field prior, fitted by EM.

Why: the quick tissue agreement of `tissue.py` labels each voxel by its intensity alone, so noise makes
speckled labels and a bias field (strong at 7T) shifts whole regions into the wrong class; and its
per-class variances let one class lock onto the narrow peak of pure white matter in a partial-volume
image (documentation/benchmark.md, "Tissue segmenters"). The model here:

- **intensities**: observed x = g(r) * t + noise, t the tissue class mean, g a smooth gain; K Gaussian
  classes with **one shared variance** (robust to narrow peaks), initialised by 1D k-means (Lloyd) on
  the region's intensities, class means sorted;
- **bias correction** (the EM-with-bias-field idea of Wells et al., IEEE TMI 15(4) 1996 and
  Van Leemput et al., IEEE TMI 18(10) 1999): log g is a polynomial of total degree `BIAS_DEGREE` in the
  physical coordinates, refitted after every M step by weighted least squares of
  log x - log(sum_k q_k mu_k) (weights (sum_k q_k mu_k)^2 / sigma^2, the precision of a log under the
  noise model), on every second voxel per axis, then centred (the means keep the overall scale);
- **spatial prior**: a Potts Markov random field on the 6-neighbourhood in the mean-field approximation
  (Zhang, IEEE TSP 40(10) 1992): the prior of class k at a voxel is proportional to
  w_k exp(beta sum_j a_j q_k(j)) over its neighbours j, a_j = smallest spacing / spacing along j's axis,
  so anisotropic grids weigh neighbours by distance.

EM runs `ITERATIONS` rounds (E step with the prior from the previous posteriors q; M step for weights,
means and the shared variance; then the bias). Labels: the class of highest posterior, 1..K by
increasing mean (1 CSF, 2 grey matter, 3 white matter on a T1-weighted brain), 0 outside the mask.
Without a mask the region is every voxel above `REGION_FRACTION` of the image's 99th percentile, holes
filled (right for skull-stripped images, whose dark CSF Otsu's threshold would cut off; give a brain mask
for anything else). BETA and BIAS_DEGREE were
chosen on synthetic brains (benchmarks/bench_tissue_segmenters.py; documentation/benchmark.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from autosr.evaluation.tissue import fit_gaussian_mixture

NUM_CLASSES = 3
BETA = 0.4  # MRF strength; measured, see documentation/benchmark.md "Tissue segmenters"
BIAS_DEGREE = 2  # polynomial degree of the log bias field; measured, same section
ITERATIONS = 15
LOG_FLOOR_FRACTION = 1e-3  # intensities below this fraction of the region's 99th percentile are clamped
INIT_MAX_SAMPLES = 200_000  # k-means initialisation on a sample of the region's voxels
MIN_WEIGHT = 1e-3  # a class never vanishes (its mixing weight stays above this)
REGION_FRACTION = 0.05  # without a mask: voxels above 5% of the 99th percentile (CSF of a T1w is ~15% of WM)


def default_region(image: np.ndarray) -> np.ndarray:
    """The region segmented without a mask: above `REGION_FRACTION` of the 99th percentile, holes filled."""
    image = np.asarray(image)
    return ndimage.binary_fill_holes(image > REGION_FRACTION * float(np.percentile(image, 99)))


def _bias_terms(degree: int) -> list[tuple[int, int, int]]:
    """Exponents (i, j, k) of z^i y^j x^k with 1 <= i + j + k <= degree (the constant stays in the means)."""
    return [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)][1:]


def _axis_powers(shape: tuple[int, ...], spacing_zyx: Sequence[float], degree: int) -> list[np.ndarray]:
    """Per axis, (degree + 1, n) powers of the physical coordinate, centred and scaled by the largest extent."""
    extent = max((n - 1) * s for n, s in zip(shape, spacing_zyx)) or 1.0
    powers = []
    for n, s in zip(shape, spacing_zyx):
        t = (np.arange(n) * s - (n - 1) * s / 2.0) / (extent / 2.0)
        powers.append(np.stack([t**p for p in range(degree + 1)]))
    return powers


def _evaluate_polynomial(
    coefficients: np.ndarray, terms: list[tuple[int, int, int]], powers: list[np.ndarray]
) -> np.ndarray:
    z, y, x = powers
    field = np.zeros((z.shape[1], y.shape[1], x.shape[1]), dtype=np.float64)
    for c, (i, j, k) in zip(coefficients, terms):
        field += c * (z[i][:, None, None] * y[j][None, :, None] * x[k][None, None, :])
    return field


def _neighbour_sum(q: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Sum over the 6 face neighbours of q (K, Z, Y, X), weighted per axis; zero beyond the box."""
    total = np.zeros_like(q)
    for axis, weight in enumerate(weights, start=1):
        lead = [slice(None)] * 4
        lag = [slice(None)] * 4
        lead[axis], lag[axis] = slice(1, None), slice(None, -1)
        total[tuple(lag)] += weight * q[tuple(lead)]
        total[tuple(lead)] += weight * q[tuple(lag)]
    return total


def kmeans_1d(values: np.ndarray, num_classes: int, iterations: int = 50) -> np.ndarray:
    """Sorted centres of 1D k-means (Lloyd's algorithm) started at the (k + 1/2)/K quantiles."""
    centres = np.quantile(values, (np.arange(num_classes) + 0.5) / num_classes)
    for _ in range(iterations):
        assignment = np.searchsorted((centres[1:] + centres[:-1]) / 2, values)
        updated = np.array(
            [values[assignment == k].mean() if np.any(assignment == k) else centres[k] for k in range(num_classes)]
        )
        if np.allclose(updated, centres):
            break
        centres = updated
    return np.sort(centres)


def segment_tissue(
    image: np.ndarray,
    spacing_zyx: Sequence[float],
    mask: np.ndarray | None = None,
    num_classes: int = NUM_CLASSES,
    beta: float = BETA,
    bias_degree: int = BIAS_DEGREE,
    iterations: int = ITERATIONS,
) -> np.ndarray:
    """Tissue labels (uint8, same shape as `image`): 1..`num_classes` by increasing intensity, 0 outside.

    `beta` 0 switches the spatial prior off, `bias_degree` 0 the bias correction.
    """
    image = np.asarray(image, dtype=np.float64)
    region = default_region(image) if mask is None else np.asarray(mask, dtype=bool)
    labels = np.zeros(image.shape, dtype=np.uint8)
    if int(region.sum()) < num_classes:
        return labels
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(region))
    inside = region[box]
    x = image[box]
    floor = LOG_FLOOR_FRACTION * max(float(np.percentile(x[inside], 99)), 1e-12)
    log_x = np.log(np.maximum(x, floor))
    sample = x[inside]
    if sample.size > INIT_MAX_SAMPLES:
        sample = np.random.default_rng(0).choice(sample, INIT_MAX_SAMPLES, replace=False)
    means = kmeans_1d(sample, num_classes)
    assignment = np.searchsorted((means[1:] + means[:-1]) / 2, sample)
    weights = np.maximum([np.mean(assignment == k) for k in range(num_classes)], MIN_WEIGHT)
    weights /= weights.sum()
    variance = float(np.mean((sample - means[assignment]) ** 2))
    floor_std = 1e-3 * (float(sample.std()) or 1.0)
    std = max(np.sqrt(variance), floor_std)
    terms = _bias_terms(bias_degree)
    design, powers = None, None
    fit_voxels = np.zeros_like(inside)
    fit_voxels[::2, ::2, ::2] = inside[::2, ::2, ::2]
    if terms:
        powers = _axis_powers(x.shape, spacing_zyx, bias_degree)
        zi, yi, xi = np.nonzero(fit_voxels)
        design = np.stack([powers[0][i][zi] * powers[1][j][yi] * powers[2][k][xi] for i, j, k in terms], axis=1)
    smallest = min(float(s) for s in spacing_zyx)
    axis_weights = [smallest / float(s) for s in spacing_zyx]
    gain = np.ones_like(x)  # multiplicative bias: observed = gain x tissue intensity
    q = None
    for _ in range(iterations):
        corrected = x / gain
        log_p = np.stack([np.log(w) - 0.5 * ((corrected - m) / std) ** 2 for w, m in zip(weights, means)])
        if beta > 0 and q is not None:
            log_p += beta * _neighbour_sum(q, axis_weights)
        log_p -= log_p.max(axis=0, keepdims=True)
        q = np.exp(log_p)
        q /= q.sum(axis=0, keepdims=True)
        q *= inside[None]
        mass = q.reshape(num_classes, -1).sum(axis=1) + 1e-12
        weights = np.maximum(mass / mass.sum(), MIN_WEIGHT)
        weights /= weights.sum()
        means = np.array([(q[k] * corrected).sum() / mass[k] for k in range(num_classes)])
        variance = sum(float((q[k] * (corrected - means[k]) ** 2).sum()) for k in range(num_classes)) / mass.sum()
        std = max(np.sqrt(variance), floor_std)
        if design is not None:
            # log observed = log gain + log tissue; residual per voxel against the posterior-mean tissue
            # intensity, weighted by its precision in the log domain (delta method: mean^2 / variance)
            expected = np.maximum((q * means[:, None, None, None]).sum(axis=0), floor)
            residual = (log_x - np.log(expected))[fit_voxels]
            root = expected[fit_voxels] / expected[fit_voxels].mean()
            coefficients, *_ = np.linalg.lstsq(design * root[:, None], residual * root, rcond=None)
            log_gain = _evaluate_polynomial(coefficients, terms, powers)
            gain = np.exp(log_gain - float(log_gain[inside].mean()))
    order = np.argsort(means)
    rank = np.empty(num_classes, dtype=np.uint8)
    rank[order] = np.arange(1, num_classes + 1, dtype=np.uint8)
    labels[box] = np.where(inside, rank[np.argmax(q, axis=0)], 0)
    return labels


def segment_tissue_intensity_only(image: np.ndarray, mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The quick model of `tissue.py` as a segmenter: a 1D mixture of the region's intensities, maximum
    posterior, labels 1..K by increasing mean, 0 outside (for comparisons with `segment_tissue`)."""
    region = np.asarray(mask, dtype=bool)
    labels = np.zeros(np.shape(image), dtype=np.uint8)
    values = np.asarray(image)[region]
    labels[region] = fit_gaussian_mixture(values, num_classes).predict(values) + 1
    return labels

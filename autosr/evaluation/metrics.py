"""Image-similarity metrics between a prediction and a reference volume: pure functions.

Every function takes (Z, Y, X) arrays, an optional boolean mask (the voxels that count) and, where the
metric needs one, an explicit `data_range` (the width of the intensity interval, R). Nothing here reads
files or picks defaults from data; `autosr.evaluation.case_scoring` decides mask, range and normalization and
records them beside the numbers.

Formulas (p = prediction, r = reference, sums over the N voxels of the mask):

- MAE  = 1/N sum |p - r|
- MSE  = 1/N sum (p - r)^2
- NMSE = sum (p - r)^2 / sum r^2
- PSNR = 10 log10(R^2 / MSE) dB; +inf when MSE == 0 (tables cap it, see `PSNR_CAP_DB`)
- SSIM (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 13(4) 2004, eqs. 6-13) with a 3D Gaussian window
  (sigma 1.5 voxels, truncated at 3.5 sigma = 11 taps, boundaries reflected), K1 = 0.01, K2 = 0.03,
  C1 = (K1 R)^2, C2 = (K2 R)^2, C3 = C2 / 2 and population (not sample) covariances, which is what
  scikit-image's `structural_similarity(gaussian_weights=True, use_sample_covariance=False)` computes:
      l = (2 mu_p mu_r + C1) / (mu_p^2 + mu_r^2 + C1)          luminance
      c = (2 s_p s_r + C2) / (s_p^2 + s_r^2 + C2)              contrast
      s = (s_pr + C3) / (s_p s_r + C3)                         structure
      SSIM = l c s = (2 mu_p mu_r + C1)(2 s_pr + C2) / ((mu_p^2 + mu_r^2 + C1)(s_p^2 + s_r^2 + C2))
  The local statistics are computed on the mask's bounding box grown by the window radius (so voxels
  of the mask see the same neighbourhood as on the full volume) and the maps are averaged over the
  mask. The mean of l, c and s maps is reported separately; their product is not the mean SSIM.
- MS-SSIM (Wang, Simoncelli, Bovik, Asilomar 2003): contrast-structure at scales 1..M-1 and the full
  SSIM at scale M, after 2x2x2 average pooling between scales, with the published weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). 3D brains are rarely big enough for 5 scales with an
  11-voxel window, so M is the largest number (at most 5) for which the coarsest box still holds one
  window on every axis; the weights used are the first M renormalized to sum 1, and M is returned.
  Negative terms are clipped to 0 before the fractional powers (otherwise the product is undefined).

Local means use scipy.ndimage on the CPU (float64) and a separable torch convolution (float32, with
intensities shifted by the reference mean first to avoid cancellation in E[x^2] - E[x]^2) on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Identical images have infinite PSNR. Tables (CSV, JSON, which must not hold Infinity) cap it here:
# 100 dB is an RMSE of 1e-5 of the data range, far below what float32 exports of real scans resolve.
PSNR_CAP_DB = 100.0


def _window_radius(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> int:
    return int(truncate * sigma + 0.5)


def _prepare(
    prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    if mask is None:
        mask = np.ones(reference.shape, dtype=bool)
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.shape != reference.shape:
        raise ValueError(f"mask shape {mask.shape} differs from reference shape {reference.shape}")
    if not mask.any():
        raise ValueError("the mask is empty: no voxel to score")
    return prediction, reference, mask


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    return data_range


def mae(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error inside `mask` (all voxels when None), in the images' units."""
    p, r, m = _prepare(prediction, reference, mask)
    return float(np.mean(np.abs(p[m].astype(np.float64) - r[m])))


def mse(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error inside `mask`, in squared units."""
    p, r, m = _prepare(prediction, reference, mask)
    d = p[m].astype(np.float64) - r[m]
    return float(np.mean(d * d))


def nmse(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalized MSE ||p - r||^2 / ||r||^2 inside `mask` (unitless; +inf when the reference is all 0)."""
    p, r, m = _prepare(prediction, reference, mask)
    r64 = r[m].astype(np.float64)
    d = p[m] - r64
    num, den = float(np.sum(d * d)), float(np.sum(r64 * r64))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def psnr(prediction: np.ndarray, reference: np.ndarray, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) in dB; +inf for identical images."""
    data_range = _check_range(data_range)
    err = mse(prediction, reference, mask)
    if err == 0.0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / err))


# --- local statistics --------------------------------------------------------------------------------


def _gaussian_kernel_1d(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _local_means_scipy(images: list[np.ndarray], sigma: float, truncate: float) -> list[np.ndarray]:
    return [ndimage.gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect") for a in images]


def _local_means_torch(images: list[np.ndarray], sigma: float, truncate: float, device: str) -> list[np.ndarray]:
    """Separable Gaussian filtering with torch; boundary = scipy's 'reflect' (edge voxel repeated)."""
    import torch

    radius = _window_radius(sigma, truncate)
    kernel = torch.as_tensor(_gaussian_kernel_1d(sigma, radius), dtype=torch.float32, device=device)
    stack = torch.as_tensor(np.stack(images).astype(np.float32), device=device)[:, None]  # (B, 1, Z, Y, X)
    for axis in range(3):
        dim = axis + 2
        n = stack.shape[dim]
        if n < radius:
            raise ValueError(f"image axis of {n} voxels is shorter than the SSIM window radius {radius}")
        # scipy's 'reflect' boundary: (c b a | a b c | c b a), the edge voxel repeated
        left = stack.narrow(dim, 0, radius).flip(dim)
        right = stack.narrow(dim, n - radius, radius).flip(dim)
        stack = torch.cat([left, stack, right], dim=dim)
        shape = [1, 1, 1, 1, 1]
        shape[dim] = kernel.numel()
        stack = torch.nn.functional.conv3d(stack, kernel.view(shape))
    return [t[0].cpu().numpy().astype(np.float64) for t in stack]


def resolve_backend(backend: str = "auto") -> str:
    """'scipy' (CPU, float64) or 'torch:<device>'; 'auto' picks torch on CUDA when available."""
    if backend == "auto":
        try:
            import torch

            return "torch:cuda" if torch.cuda.is_available() else "scipy"
        except ImportError:
            return "scipy"
    if backend == "scipy" or backend.startswith("torch"):
        return backend if backend != "torch" else "torch:cpu"
    raise ValueError(f"unknown backend {backend!r}; use 'auto', 'scipy', 'torch' or 'torch:<device>'")


@dataclass(frozen=True)
class SSIMMaps:
    """Per-voxel SSIM and its components on a box of the volume."""

    ssim: np.ndarray
    luminance: np.ndarray
    contrast: np.ndarray
    structure: np.ndarray


def ssim_maps(
    prediction: np.ndarray,
    reference: np.ndarray,
    data_range: float,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
    backend: str = "scipy",
) -> SSIMMaps:
    """SSIM, luminance, contrast and structure maps over the whole given arrays (see module docstring)."""
    data_range = _check_range(data_range)
    backend = resolve_backend(backend)
    p = np.asarray(prediction, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    shift = float(r.mean())  # variances are shift-invariant; means get the shift back below
    p0, r0 = p - shift, r - shift
    images = [p0, r0, p0 * p0, r0 * r0, p0 * r0]
    if backend == "scipy":
        mp, mr, mpp, mrr, mpr = _local_means_scipy(images, sigma, SSIM_TRUNCATE)
    else:
        mp, mr, mpp, mrr, mpr = _local_means_torch(images, sigma, SSIM_TRUNCATE, backend.split(":", 1)[1])
    vp = np.maximum(mpp - mp * mp, 0.0)
    vr = np.maximum(mrr - mr * mr, 0.0)
    cpr = mpr - mp * mr
    mp, mr = mp + shift, mr + shift
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    c3 = c2 / 2.0
    sp_sr = np.sqrt(vp * vr)
    luminance = (2 * mp * mr + c1) / (mp * mp + mr * mr + c1)
    contrast = (2 * sp_sr + c2) / (vp + vr + c2)
    structure = (cpr + c3) / (sp_sr + c3)
    ssim = luminance * (2 * cpr + c2) / (vp + vr + c2)
    return SSIMMaps(ssim, luminance, contrast, structure)


def _mask_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The mask's bounding box grown by `margin` voxels per side, clipped to the volume."""
    coords = np.nonzero(mask)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + 1 + margin, n)) for c, n in zip(coords, mask.shape)
    )


def ssim_3d(
    prediction: np.ndarray,
    reference: np.ndarray,
    data_range: float,
    mask: np.ndarray | None = None,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
    backend: str = "scipy",
) -> dict[str, float]:
    """Mean SSIM and mean luminance, contrast, structure inside `mask` (keys ssim, ssim_luminance, ...)."""
    p, r, m = _prepare(prediction, reference, mask)
    box = _mask_box(m, _window_radius(sigma))
    maps = ssim_maps(p[box], r[box], data_range, sigma, k1, k2, backend)
    inside = m[box]
    return {
        "ssim": float(maps.ssim[inside].mean()),
        "ssim_luminance": float(maps.luminance[inside].mean()),
        "ssim_contrast": float(maps.contrast[inside].mean()),
        "ssim_structure": float(maps.structure[inside].mean()),
    }


def _pool2(a: np.ndarray) -> np.ndarray:
    """2x2x2 average pooling (odd trailing voxels dropped)."""
    z, y, x = (s // 2 * 2 for s in a.shape)
    a = a[:z, :y, :x]
    return a.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))


def ms_ssim_3d(
    prediction: np.ndarray,
    reference: np.ndarray,
    data_range: float,
    mask: np.ndarray | None = None,
    max_scales: int = 5,
    backend: str = "scipy",
) -> tuple[float, int] | tuple[None, int]:
    """(MS-SSIM, number of scales used) inside `mask`; (None, scales) when fewer than 2 scales fit."""
    p, r, m = _prepare(prediction, reference, mask)
    window = 2 * _window_radius() + 1
    box = _mask_box(m, _window_radius())
    p, r, m = p[box].astype(np.float64), r[box].astype(np.float64), m[box].astype(np.float64)
    scales = 0
    size = np.asarray(p.shape)
    while scales < max_scales and np.all(size >= window):
        scales += 1
        size = size // 2
    if scales < 2:
        return None, scales
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    terms = []
    for level in range(scales):
        maps = ssim_maps(p, r, data_range, backend=backend)
        inside = m >= 0.5
        if not inside.any():
            return None, level
        value = maps.ssim if level == scales - 1 else maps.contrast * maps.structure
        terms.append(max(float(value[inside].mean()), 0.0))
        p, r, m = _pool2(p), _pool2(r), _pool2(m)
    return float(np.prod(np.asarray(terms) ** weights)), scales


def image_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray | None,
    data_range: float,
    with_ms_ssim: bool = True,
    backend: str = "scipy",
) -> dict[str, Any]:
    """All image metrics of one pair as a flat dict of finite floats (PSNR capped at `PSNR_CAP_DB`)."""
    p, r, m = _prepare(prediction, reference, mask)
    result: dict[str, Any] = {
        "mae": mae(p, r, m),
        "mse": mse(p, r, m),
        "nmse": nmse(p, r, m),
        "psnr": min(psnr(p, r, data_range, m), PSNR_CAP_DB),
    }
    result.update(ssim_3d(p, r, data_range, m, backend=backend))
    if with_ms_ssim:
        value, scales = ms_ssim_3d(p, r, data_range, m, backend=backend)
        result["ms_ssim"] = value
        result["ms_ssim_scales"] = scales
    return result

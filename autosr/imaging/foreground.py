"""What "foreground" means in autosr: the one definition every stage uses.

- **Input foreground** (`input_foreground`): the region of a scan that holds the subject, derived from the
  input channels alone, so it is the same at training, cross-validation and prediction. It decides the crop
  box, the region an MR input is z-scored in, and where exported predictions are set to the training
  targets' background (documentation/normalization.md). Per channel: CT-normalized channels (HU) count
  above `CT_FOREGROUND_HU`; every other channel is lightly smoothed and thresholded at Otsu's threshold
  (Otsu, IEEE SMC 9(1) 1979). Only the below-threshold region *connected to the volume's border* is
  background (air around the subject); dark structures inside (ventricles, sinuses) stay foreground. A scan
  whose border is not background at all (a field of view inside the body) is all foreground.
- **Subject region** (`subject_region`): the input foreground grown by `SUBJECT_MARGIN_VOXELS`. Outside it
  an exported prediction holds the training targets' background level instead of the network's output
  (documentation/normalization.md, "Background"); the region comes from the input alone, never a target.
- **Background level** (`border_values`): the median of the voxels on a volume's faces, per channel. Where
  a patch or tile reaches past the volume, training and prediction alike fill it with this level, so the
  network never meets an edge or a stripe there that it was not trained on.
- **Reference foreground** (`target_foreground`): the same rule on a target or reference image, used when a
  dataset has no masks (the target's normalization region, the evaluation region) and by the fingerprint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

CT_FOREGROUND_HU = -500.0  # between air (-1000) and fat (-100): the body's outline in any CT
# Smoothing before thresholding, in voxels: suppresses the speckle of Rician background noise without
# moving the outline by more than a voxel.
THRESHOLD_SMOOTHING_SIGMA = 1.0
# Otsu's threshold is computed on at most this many voxels (a regular subsample): the same threshold to
# within a histogram bin, 10x faster on a 1 mm brain.
OTSU_SAMPLE_VOXELS = 1_000_000
# Margin kept around the input foreground's box when cropping, in mm: the network sees some background at
# every border of the subject (and learns what it should be), and a slightly under-segmented outline loses
# nothing.
CROP_MARGIN_MM = 10.0
# The subject region of an exported prediction: the input foreground grown by this many voxels. Measured
# on the synthetic brains (3 mm) and phantoms (1 mm): reference-mask voxels lie at most 1.41 voxels outside
# the input foreground (documentation/benchmark.md, "Background"), so 2 voxels lose none of the subject.
SUBJECT_MARGIN_VOXELS = 2.0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold maximising the between-class variance of a histogram of `values`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > OTSU_SAMPLE_VOXELS:
        values = values[:: int(np.ceil(values.size / OTSU_SAMPLE_VOXELS))]
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _border_connected(background: np.ndarray) -> np.ndarray:
    """The parts of `background` that touch the volume's border."""
    labels, count = ndimage.label(background)
    if count == 0:
        return background
    border = np.zeros(background.shape, dtype=bool)
    for axis in range(background.ndim):
        index = [slice(None)] * background.ndim
        for end in (0, -1):
            index[axis] = end
            border[tuple(index)] = True
    touching = np.unique(labels[border & background])
    return np.isin(labels, touching[touching > 0])


def channel_foreground(image: np.ndarray, scheme: str = "zscore") -> np.ndarray:
    """Foreground of one channel (Z, Y, X) by the rule in the module docstring; `scheme` is its normalization."""
    image = np.asarray(image, dtype=np.float32)
    if scheme == "ct":
        below = image <= CT_FOREGROUND_HU
    else:
        if float(image.min()) == float(image.max()):
            return np.ones(image.shape, dtype=bool)
        smooth = ndimage.gaussian_filter(image, THRESHOLD_SMOOTHING_SIGMA)
        below = smooth <= otsu_threshold(smooth)
    return ~_border_connected(below)


def input_foreground(inputs: np.ndarray, schemes: Sequence[str]) -> np.ndarray:
    """Union of the channels' foregrounds of a (C, Z, Y, X) input, holes filled; bool (Z, Y, X)."""
    inputs = np.asarray(inputs)
    if len(schemes) != inputs.shape[0]:
        raise ValueError(f"{inputs.shape[0]} channels but {len(schemes)} normalization schemes")
    mask = np.zeros(inputs.shape[1:], dtype=bool)
    for channel, scheme in zip(inputs, schemes):
        mask |= channel_foreground(channel, scheme)
    return ndimage.binary_fill_holes(mask)


def target_foreground(target: np.ndarray, modality: str = "MR") -> np.ndarray:
    """Foreground of a target/reference image: CT above -500 HU, else the smoothed-Otsu rule; holes filled."""
    scheme = "ct" if modality.upper() == "CT" else "zscore"
    return ndimage.binary_fill_holes(channel_foreground(target, scheme))


def bounding_box(mask: np.ndarray, margin_voxels: Sequence[int] | int = 0) -> list[list[int]]:
    """[[z0, z1], [y0, y1], [x0, x1]] (half-open) of the mask's voxels grown by `margin_voxels` per axis and
    clipped to the array; the whole array when the mask is empty."""
    mask = np.asarray(mask, dtype=bool)
    if np.isscalar(margin_voxels):
        margin_voxels = [int(margin_voxels)] * mask.ndim
    if not np.any(mask):
        return [[0, int(n)] for n in mask.shape]
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other))
        lo = max(0, int(present[0]) - int(margin_voxels[axis]))
        hi = min(int(mask.shape[axis]), int(present[-1]) + 1 + int(margin_voxels[axis]))
        box.append([lo, hi])
    return box


def subject_region(foreground: np.ndarray) -> np.ndarray:
    """The input foreground grown by `SUBJECT_MARGIN_VOXELS` voxels (Euclidean, in voxel units)."""
    foreground = np.asarray(foreground, dtype=bool)
    if foreground.all() or not foreground.any():
        return np.ones_like(foreground) if foreground.all() else foreground.copy()
    return ndimage.distance_transform_edt(~foreground) <= SUBJECT_MARGIN_VOXELS


def crop_box(foreground: np.ndarray, spacing_zyx: Sequence[float]) -> list[list[int]]:
    """The box preprocessing crops a case to: the foreground's box grown by `CROP_MARGIN_MM` per axis."""
    return bounding_box(foreground, [int(np.ceil(CROP_MARGIN_MM / s)) for s in spacing_zyx])


def border_values(array):
    """Per channel, the median of the voxels on the faces of a (C, *spatial) array: the level a volume
    continues with beyond its edges (the lower middle value for an even count, torch's median, for numpy
    and torch alike). numpy in, float32 numpy out; a torch tensor in, a tensor on its device out."""
    if not isinstance(array, torch.Tensor):
        array = np.asarray(array)
        faces = [np.take(array, [e], axis=a).reshape(array.shape[0], -1) for a in range(1, array.ndim) for e in (0, -1)]
        return torch.from_numpy(np.concatenate(faces, axis=1).astype(np.float32)).median(dim=1).values.numpy()
    faces = [array.select(a, e).reshape(array.shape[0], -1) for a in range(1, array.ndim) for e in (0, -1)]
    return torch.cat(faces, dim=1).float().median(dim=1).values

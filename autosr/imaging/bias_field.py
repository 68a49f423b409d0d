"""N4 bias-field correction (SimpleITK's `N4BiasFieldCorrectionImageFilter`), on a shrunk image for speed.

MR images carry a smooth multiplicative intensity field from the receive and transmit coils (strong at 7T):
the same tissue is brighter near one side of the head than the other. N4 (Tustison et al., IEEE TMI 2010)
models the log of that field as a smooth B-spline and removes it. The field is smooth, so it is estimated
on a copy shrunk to about `SHRUNK_VOXELS_PER_AXIS` voxels per axis (bins averaged) and then evaluated at
full resolution: the corrected image keeps every detail of the original.

The region N4 fits is the image's own foreground (`autosr.imaging.foreground.channel_foreground`, the
same rule preprocessing crops and normalizes with), never a mask drawn on
another image, so that a scan is corrected the same way whether or not a target and a mask exist (training
and prediction see identical inputs). Used by the `n4_zscore` normalization scheme
(`autosr/preprocessing/normalization.py`) and by registration, where an uncorrected field pulls the mutual
information optimum off the true alignment (documentation/registration.md).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from autosr.imaging.foreground import channel_foreground

# The shrunk copy N4 works on has at most this many voxels along each axis. A 2 mm brain's 3 mm input
# (53x65x55) is shrunk by 2 and corrected in 0.8 CPU s, its white-matter CV falling from 0.069 to 0.049;
# unshrunk, 5-8 times the CPU time for a CV of 0.047 (documentation/registration.md, "Bias field";
# benchmarks/bench_registration.py bias --unshrunk).
SHRUNK_VOXELS_PER_AXIS = 48
# Three B-spline fitting levels (mesh of 1, 2, 4 spans per axis on top of the 4 control points): a field
# that varies over the head, not within a gyrus.
N4_ITERATIONS_PER_LEVEL = (50, 50, 50)
N4_CONVERGENCE_THRESHOLD = 1e-3


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """The image's own foreground as a uint8 image on its grid: the one foreground rule of preprocessing
    (smoothed Otsu threshold, background = the below-threshold region connected to the border)."""
    foreground = channel_foreground(sitk.GetArrayViewFromImage(image))
    mask = sitk.GetImageFromArray(foreground.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def shrink_factors(size_xyz: tuple[int, ...], voxels_per_axis: int = SHRUNK_VOXELS_PER_AXIS) -> list[int]:
    """Per-axis integer factors that bring `size_xyz` to about `voxels_per_axis` (never below 1)."""
    return [max(1, -(-n // voxels_per_axis)) for n in size_xyz]


def estimate_log_bias_field(
    image: sitk.Image, mask: sitk.Image | None = None, voxels_per_axis: int = SHRUNK_VOXELS_PER_AXIS
) -> sitk.Image:
    """The log of the multiplicative bias field of `image`, on `image`'s own grid (float32).

    `mask` (uint8, same grid) limits the fit; by default the image's Otsu foreground. Only voxels with a
    positive intensity take part (N4 works on the log of the image). An image without such voxels gets a
    zero field. The fit runs on a copy shrunk to at most `voxels_per_axis` voxels along each axis.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    region = foreground_mask(image) if mask is None else sitk.Cast(mask > 0, sitk.sitkUInt8)
    region = sitk.And(region, sitk.Cast(image > 0, sitk.sitkUInt8))
    if not np.any(sitk.GetArrayViewFromImage(region)):
        field = sitk.Image(image.GetSize(), sitk.sitkFloat32)
        field.CopyInformation(image)
        return field
    factors = shrink_factors(image.GetSize(), voxels_per_axis)
    shrunk = sitk.BinShrink(image, factors)
    shrunk_region = sitk.Cast(sitk.BinShrink(sitk.Cast(region, sitk.sitkFloat32), factors) >= 0.5, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(shrunk_region)):
        shrunk, shrunk_region = image, region
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(N4_ITERATIONS_PER_LEVEL))
    corrector.SetConvergenceThreshold(N4_CONVERGENCE_THRESHOLD)
    corrector.Execute(shrunk, shrunk_region)
    return sitk.Cast(corrector.GetLogBiasFieldAsImage(image), sitk.sitkFloat32)


def correct_bias_field(
    image: sitk.Image, mask: sitk.Image | None = None, voxels_per_axis: int = SHRUNK_VOXELS_PER_AXIS
) -> sitk.Image:
    """`image` divided by its N4 bias field (float32, same grid); see `estimate_log_bias_field`."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    return image / sitk.Exp(estimate_log_bias_field(image, mask, voxels_per_axis))


def correct_bias_field_array(array: np.ndarray) -> np.ndarray:
    """N4 on a (Z, Y, X) array without geometry (unit spacing): the field is smooth relative to the
    array's extent, so the spacing changes nothing but the physical units nobody reads here."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    return sitk.GetArrayFromImage(correct_bias_field(image)).astype(np.float32, copy=False)

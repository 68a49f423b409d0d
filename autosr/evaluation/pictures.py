"""One PNG per case: the middle slice of the region in three orientations, for input | prediction |
reference | absolute error, so a reader sees at a glance what the numbers mean.

What a person checks is shown the way they check it: input (mapped to the target's scale by the better
no-learning baseline when one was fitted), prediction and reference share one grey-value window, the
reference's range inside the scored region; the error map is scaled to the errors *inside* the scored
region (its 99th percentile), whose outline is drawn on it, so it saturates outside only where the
prediction is wrong there.
"""

from __future__ import annotations

import os

import numpy as np

ERROR_PERCENTILE = 99.0  # the error map's upper limit: this percentile of |error| inside the scored region


def _slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    z, y, x = centre
    return [volume[z], volume[:, y, :][::-1], volume[:, :, x][::-1]]


def save_case_picture(
    path: str | os.PathLike,
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    window: tuple[float, float],
    input_image: np.ndarray | None = None,
    title: str = "",
    input_label: str = "input",
    input_in_target_scale: bool = False,
) -> None:
    """Write the picture atomically; `window` (lo, hi) is the grey-value window for prediction/reference
    (and the input when `input_in_target_scale`; otherwise the input gets its own percentile window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autosr.io import atomic_path

    coords = np.nonzero(mask)
    centre = (
        tuple(int((c.min() + c.max()) // 2) for c in coords) if coords[0].size else tuple(s // 2 for s in mask.shape)
    )
    columns = []
    if input_image is not None:
        values = input_image[mask] if mask.any() else input_image.ravel()
        input_window = window if input_in_target_scale else tuple(np.percentile(values, (0.1, 99.9)))
        columns.append((input_label, input_image, input_window, "gray"))
    columns += [("prediction", prediction, window, "gray"), ("reference", reference, window, "gray")]
    error = np.abs(prediction.astype(np.float32) - reference)
    inside = error[mask] if mask.any() else error.ravel()
    error_top = float(np.percentile(inside, ERROR_PERCENTILE)) or 1.0
    columns.append((f"|prediction - reference| (0-{error_top:.3g})", error, (0.0, error_top), "magma"))
    fig, axes = plt.subplots(3, len(columns), figsize=(3 * len(columns), 9), squeeze=False)
    for col, (name, volume, (lo, hi), cmap) in enumerate(columns):
        for row, (plane, image) in enumerate(
            zip(("axial (z)", "coronal (y)", "sagittal (x)"), _slices(volume, centre))
        ):
            ax = axes[row][col]
            ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            if cmap == "magma":  # the scored region's outline on the error map
                ax.contour(_slices(mask.astype(np.float32), centre)[row], levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(plane, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)

"""One PNG per case: the middle slice of the region in three orientations, for input | prediction |
reference | absolute error, so a reader sees at a glance what the numbers mean."""

from __future__ import annotations

import os

import numpy as np

ERROR_WINDOW_FRACTION = 0.25  # absolute error shown from 0 to a quarter of the data range


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
) -> None:
    """Write the picture atomically; `window` (lo, hi) is the grey-value window for prediction/reference."""
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
        columns.append(("input", input_image, tuple(np.percentile(values, (0.1, 99.9))), "gray"))
    columns += [("prediction", prediction, window, "gray"), ("reference", reference, window, "gray")]
    error = np.abs(prediction.astype(np.float32) - reference)
    columns.append(("|prediction - reference|", error, (0.0, ERROR_WINDOW_FRACTION * (window[1] - window[0])), "magma"))
    fig, axes = plt.subplots(3, len(columns), figsize=(3 * len(columns), 9), squeeze=False)
    for col, (name, volume, (lo, hi), cmap) in enumerate(columns):
        for row, (plane, image) in enumerate(
            zip(("axial (z)", "coronal (y)", "sagittal (x)"), _slices(volume, centre))
        ):
            ax = axes[row][col]
            ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
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

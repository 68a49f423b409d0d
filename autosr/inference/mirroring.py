"""Test-time mirroring: which flips of the input are predicted and averaged.

A network trained with random flips along some axes is (nearly) equivariant to those flips, so averaging
the predictions of the flipped inputs (flipped back) cancels part of its error. Only the axes flipped in
training qualify: flipping an axis the network never saw flipped (e.g. left-right in a model trained
without it) gives a worse member, not a second opinion.

Axes are *spatial axes of the patch*: 0, 1, 2 = (z, y, x) for 3D configurations, 0, 1 = (y, x) for 2D.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence


def normalize_mirror_axes(axes: Iterable[int] | None, dims: int) -> tuple[int, ...]:
    """Sorted unique axes, checked against the patch dimensionality; None means every spatial axis."""
    if axes is None:
        return tuple(range(dims))
    result = tuple(sorted({int(a) for a in axes}))
    bad = [a for a in result if not 0 <= a < dims]
    if bad:
        raise ValueError(f"mirror axes {bad} do not exist for a {dims}D patch (valid: {list(range(dims))})")
    return result


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of `axes`, the identity first: 2**len(axes) flips whose predictions are averaged."""
    axes = tuple(axes)
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def volume_flip_dims(mirror: Sequence[int], dims: int) -> tuple[int, ...]:
    """The tensor dims of a (C, Z, Y, X) volume (or a (C, *window) tile) that patch axes `mirror` flip: a 3D
    patch's axis a is tensor dim 1 + a; a 2D patch's axes are the last two."""
    return tuple(1 + (3 - dims) + a for a in mirror)

"""Patch sampling from preprocessed cases and the (multi-process) loader around it.

Each batch draws `batch_size` cases at random; a fraction (`foreground_fraction`, default 1/3) of the
patches is centred on a random voxel inside the case's mask, the rest anywhere in the volume. A region
somewhat larger than the patch is cut (so rotation does not rotate padding into view), augmented per
sample (augmentation.py), and the batch is returned as

    {"input": (B, C, *patch), "target": (B, 1, *patch), "mask": (B, 1, *patch), "cases": [...]}

numpy arrays, float32 (mask: uint8 0/1, a quarter of the bytes to copy to the GPU). For 2D configurations a patch is one slice along one of the
configuration's `slice_axes` (drawn per sample), spanning the two other volume axes in order.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import DataLoader
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from autosr.device import num_workers_from_environment
from autosr.errors import AutosrError
from autosr.imaging.foreground import border_values
from autosr.preprocessing.case_store import load_case
from autosr.training.augmentation import sample_size, training_transforms
from autosr.worker_guard import exit_when_parent_dies

# Share of each batch centred inside the mask: the remaining 2/3 still see background and borders, so
# the network learns to leave the background alone. Standard choice, not tuned here.
FOREGROUND_FRACTION = 1 / 3


def default_num_workers() -> int:
    """AUTOSR_NUM_WORKERS, else the machine's cores minus one for the training process (at most 12)."""
    from_environment = num_workers_from_environment()
    if from_environment is not None:
        return from_environment
    return max(0, min(12, (os.cpu_count() or 1) - 1))


def crop_padded(
    array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: np.ndarray | None = None
) -> np.ndarray:
    """array[:, start:start+size] over the trailing axes; where the window leaves the array, each channel is
    filled with `fill[c]` (default 0)."""
    spatial = array.shape[1:]
    out = np.zeros((array.shape[0], *size), dtype=np.float32)
    if fill is not None:
        out[:] = np.asarray(fill, dtype=np.float32).reshape(-1, *([1] * len(size)))
    src, dst = [slice(None)], [slice(None)]
    for s, n, dim in zip(start, size, spatial):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def batch_seed(seed: int | None, place: int) -> int:
    """A 32-bit seed for batch `place` of the stream of `seed` (well mixed, so neighbouring places differ)."""
    return int(np.random.SeedSequence([0 if seed is None else int(seed), int(place)]).generate_state(1)[0])


def patch_start(centre: Sequence[int], patch_size: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Start of a patch around `centre`, shifted so the patch stays inside the volume where it fits (and is
    centred on the volume where it does not): training then sees what sliding-window inference sees,
    volume content rather than padding, and the centre voxel stays inside the patch."""
    start = []
    for c, p, n in zip(centre, patch_size, shape):
        lo, hi = min(0, n - p), max(0, n - p)
        if n < p:
            lo = hi = (n - p) // 2
        start.append(int(np.clip(c - p // 2, lo, hi)))
    return start


class CaseCache:
    """Memory-mapped cases plus each case's list of mask voxel coordinates (sampled, computed once)."""

    MAX_FOREGROUND_POINTS = 10000

    def __init__(self, folder: Path, case_ids: Sequence[str]):
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self._cases: dict[str, object] = {}
        self._foreground: dict[str, np.ndarray] = {}
        self._fill: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, case_id: str):
        if case_id not in self._cases:
            case = load_case(self.folder, case_id, mmap=True)
            if case.target is None:
                raise AutosrError(f"{self.folder}: case '{case_id}' has no target; re-run `autosr plan`")
            self._cases[case_id] = case
        return self._cases[case_id]

    def fill_values(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) background levels per channel: what a patch reaching past the volume sees, the
        same level the sliding window pads with at prediction (`border_values`)."""
        if case_id not in self._fill:
            case = self.get(case_id)
            self._fill[case_id] = (border_values(case.input), border_values(case.target))
        return self._fill[case_id]

    def foreground(self, case_id: str) -> np.ndarray:
        if case_id not in self._foreground:
            case = self.get(case_id)
            if case.mask is None:
                points = np.zeros((0, 3), dtype=np.int64)
            else:
                points = np.argwhere(np.asarray(case.mask[0]) > 0)
                if len(points) > self.MAX_FOREGROUND_POINTS:
                    # seeded by the case, not the batch stream: the subset must not depend on when (in which
                    # epoch, after a resume or not) the case is first drawn
                    rng = np.random.RandomState(zlib.crc32(case_id.encode()))
                    points = points[rng.choice(len(points), self.MAX_FOREGROUND_POINTS, replace=False)]
            self._foreground[case_id] = points
        return self._foreground[case_id]


@dataclass(frozen=True)
class PatchSampling:
    """What a batch of patches is: its size, how patches are drawn and how they are augmented. Built once by
    the trainer from the plans; the loader in every data worker receives the same object."""

    patch_size: tuple[int, ...]
    batch_size: int
    augment: bool = True
    # axes that test-time and training mirroring flip
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    # share of each batch centred on a foreground voxel (see FOREGROUND_FRACTION)
    foreground_fraction: float = FOREGROUND_FRACTION
    # how spatial augmentation resamples (training/augmentation.py: "interpolating" or "axis_permuting")
    spatial_policy: str = "interpolating"
    # groups of volume axes with equal spacing, which augmentation may swap
    axis_groups: tuple[tuple[int, ...], ...] = ()
    # 2D configurations: the volume axes a slice is taken along
    slice_axes: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        object.__setattr__(self, "axis_groups", tuple(tuple(int(a) for a in g) for g in self.axis_groups))
        object.__setattr__(self, "slice_axes", tuple(int(a) for a in self.slice_axes))
        if self.batch_size < 1:
            raise AutosrError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0 <= self.foreground_fraction <= 1:
            raise AutosrError(f"foreground fraction must be in [0, 1], got {self.foreground_fraction}")


class PatchLoader(DataLoader):
    """batchgenerators DataLoader that samples, crops and augments one batch of patches per call."""

    def __init__(
        self,
        folder: Path,
        case_ids: Sequence[str],
        sampling: PatchSampling,
        num_threads: int = 1,
        seed: int | None = None,
        first_batch: int = 0,
    ):
        if not case_ids:
            raise AutosrError(f"{folder}: no cases to sample patches from")
        super().__init__(list(case_ids), sampling.batch_size, num_threads, seed, infinite=True)
        self.cache = CaseCache(folder, case_ids)
        self.patch_size = list(sampling.patch_size)
        self.dims = len(self.patch_size)
        self.slice_axes = list(sampling.slice_axes)
        self.foreground_fraction = sampling.foreground_fraction
        self.augment = sampling.augment
        policy = sampling.spatial_policy
        self.sample_size = sample_size(self.patch_size, policy if sampling.augment else None, sampling.axis_groups)
        self.transforms = (
            training_transforms(self.patch_size, sampling.mirror_axes, policy=policy, axis_groups=sampling.axis_groups)
            if sampling.augment
            else None
        )
        self.seed = seed
        self.first_batch = int(first_batch)
        self._batches_made = 0
        self.rng = np.random.RandomState(seed)
        self._creator_pid = os.getpid()

    def _seed_batch(self) -> None:
        """Seed every generator a batch draws from (patch positions, numpy, torch and Python's `random`, used by
        the augmentation) from the seed and the batch's place in the stream.

        The n-th batch a process makes is batch `first_batch + thread_id + n * num_threads` of the stream, so
        each batch is a function of (seed, place) alone: a training resumed at epoch e (`first_batch` = e x
        batches per epoch) gets the very batches the uninterrupted run got, and forked workers never repeat
        each other. In a worker, the first call also starts the watch that ends it with its parent.
        """
        if os.getpid() != self._creator_pid:
            exit_when_parent_dies(self._creator_pid)
        place = self.first_batch + self.thread_id + self._batches_made * self.number_of_threads_in_multithreaded
        self._batches_made += 1
        seed = batch_seed(self.seed, place)
        self.rng = np.random.RandomState(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        random.seed(seed)

    def _centre(self, case_id: str, shape: Sequence[int], on_foreground: bool) -> list[int]:
        points = self.cache.foreground(case_id) if on_foreground else None
        if points is not None and len(points):
            return [int(v) for v in points[self.rng.randint(len(points))]]
        return [int(self.rng.randint(0, s)) for s in shape]

    def sample(self, case_id: str, on_foreground: bool) -> dict[str, np.ndarray]:
        """One (augmented) patch of `case_id` as {'input', 'target', 'mask'} (C, *patch) arrays."""
        case = self.cache.get(case_id)
        shape = case.input.shape[1:]
        centre = self._centre(case_id, shape, on_foreground)
        mask = case.mask if case.mask is not None else np.ones((1, *shape), dtype=np.uint8)
        if self.dims == 2:  # one slice along a slicing axis, the patch around the centre in its plane
            axis = (
                self.slice_axes[self.rng.randint(len(self.slice_axes))]
                if len(self.slice_axes) > 1
                else self.slice_axes[0]
            )
            index = [slice(None)] * 4
            index[1 + axis] = centre[axis]
            arrays = [np.asarray(a[tuple(index)]) for a in (case.input, case.target, mask)]
            centre = [c for a, c in enumerate(centre) if a != axis]
        else:
            arrays = [case.input, case.target, mask]
        start = patch_start(centre, self.patch_size, arrays[0].shape[1:])
        size = self.sample_size
        start = [s - (n - p) // 2 for s, n, p in zip(start, size, self.patch_size)]
        fills = (*self.cache.fill_values(case_id), None)
        inp, tgt, msk = (crop_padded(a, start, size, fill) for a, fill in zip(arrays, fills))
        if self.transforms is None:
            start = [(s - p) // 2 for s, p in zip(size, self.patch_size)]
            inp, tgt, msk = (crop_padded(a, start, self.patch_size) for a in (inp, tgt, msk))
            return {"input": inp, "target": tgt, "mask": msk}
        out = self.transforms(
            image=torch.from_numpy(inp), regression_target=torch.from_numpy(np.concatenate([tgt, msk]))
        )
        regression = out["regression_target"]
        return {
            "input": out["image"].numpy(),
            "target": regression[:1].numpy(),
            "mask": (regression[1:2] > 0.5).float().numpy(),
        }

    def generate_train_batch(self) -> dict[str, object]:
        self._seed_batch()
        cases = [self._data[i] for i in self.rng.randint(0, len(self._data), self.batch_size)]
        n_foreground = int(round(self.batch_size * self.foreground_fraction))
        samples = [self.sample(c, on_foreground=i < n_foreground) for i, c in enumerate(cases)]
        return {
            "input": np.stack([s["input"] for s in samples]).astype(np.float32),
            "target": np.stack([s["target"] for s in samples]).astype(np.float32),
            "mask": (np.stack([s["mask"] for s in samples]) > 0.5).astype(np.uint8),  # 1 byte: a quarter of the copy
            "cases": cases,
        }


def make_batch_iterator(
    folder: Path,
    case_ids: Sequence[str],
    sampling: PatchSampling,
    num_workers: int,
    seed: int = 0,
    first_batch: int = 0,
):
    """An infinite batch iterator starting at batch `first_batch` of the stream `seed` defines (see
    `PatchLoader._seed_batch`): single-process for `num_workers == 0`, else batchgenerators'
    NonDetMultiThreadedAugmenter with `num_workers` processes, which hands batches over in the order the
    workers finish them (so with workers the batches are the same random process, not the same sequence)."""
    if num_workers <= 0:
        return SingleThreadedAugmenter(
            PatchLoader(folder, case_ids, sampling, seed=seed, first_batch=first_batch), None
        )
    loader = PatchLoader(folder, case_ids, sampling, num_threads=num_workers, seed=seed, first_batch=first_batch)
    seeds = [seed * 1000 + i for i in range(num_workers)]
    return NonDetMultiThreadedAugmenter(
        loader, None, num_workers, num_cached=max(2, num_workers), seeds=seeds, pin_memory=torch.cuda.is_available()
    )


class DevicePrefetcher:
    """Batches already on a CUDA device: while the network works on one batch, the next one is copied on a
    side stream (from the augmenter's pinned memory), so the copy overlaps the step instead of preceding it.
    On other devices it passes batches through unchanged."""

    KEYS = ("input", "target", "mask")

    def __init__(self, iterator, device: torch.device):
        self.iterator, self.device = iterator, torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.pending = self._copy(next(self.iterator)) if self.stream is not None else None

    def _copy(self, batch: dict) -> dict:
        with torch.cuda.stream(self.stream):
            return {
                k: torch.as_tensor(v).to(self.device, non_blocking=True) if k in self.KEYS else v
                for k, v in batch.items()
            }

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.stream is None:
            return next(self.iterator)
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        batch = self.pending
        for key in self.KEYS:
            batch[key].record_stream(current)  # its memory is not reused before the step that reads it is done
        self.pending = self._copy(next(self.iterator))
        return batch

    def _finish(self) -> None:
        if hasattr(self.iterator, "_finish"):
            self.iterator._finish()

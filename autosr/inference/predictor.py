"""`Predictor`: the fold ensemble of a trained model, predicting arrays, cases and folders.

The ensemble is averaged in normalized space (where the networks were trained and their errors are
comparable), then the preprocessing is inverted once: intensities back to the target's units, the
cropped planned grid back onto the planned spacing over the input's whole physical extent (or onto the
input grid itself). Members are the folds x mirrorings; with uncertainty on, their per-voxel standard
deviation is tracked with Welford's algorithm (two volumes of memory, whatever the number of members).
A generative model (its checkpoints carry a `sampler` entry) is sampled instead (`autosr.inference.sampling`):
its members are folds x samples, the mirrorings and planes average its velocity inside every step.

    predictor = Predictor.from_trained(model_dir, folds=(0, 1, 2, 3, 4))
    predictor.predict_folder("new_scans/", "predictions/")            # what `autosr predict` runs
    predictor.predict_case([path_0000], "out.nii.gz")                # one case
    pred, geometry = predictor.predict_array(array_czyx, geometry)   # arrays from Python
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autosr.checkpoint import load_checkpoint
from autosr.device import choose_device, prefer_fixed_shape_kernels
from autosr.errors import AutosrError
from autosr.formats.dataset_spec import DatasetSpec, load_dataset_spec
from autosr.formats.plans import Plans
from autosr.inference.fast_path import compile_network, measured_tile_batch_size
from autosr.inference.folder import FolderSummary
from autosr.inference.mirroring import mirror_combinations, normalize_mirror_axes, volume_flip_dims
from autosr.inference.model_folder import configuration_of, require_checkpoints
from autosr.inference.running_stats import RunningMeanStd
from autosr.inference.sampling import SamplerSpec, minimum_volume_shape, sample_seed, sample_volume
from autosr.inference.scan_worker import ScanWorker
from autosr.inference.settings import (
    ALL_FOLDS,
    DEFAULT_CHECKPOINT,
    FolderSettings,
    PackageIdentity,
    PredictionSettings,
)
from autosr.inference.sliding_window import predict_sliding_window
from autosr.inference.student import is_student
from autosr.io import Geometry, write_image
from autosr.network.build import total_stride
from autosr.preprocessing.preprocess import PreprocessedScan, preprocess_arrays

NetworkBuilder = Callable[[dict, int, int], nn.Module]


def _default_builder() -> NetworkBuilder:
    from autosr.network import build_network

    return build_network


class Predictor:
    """A fold ensemble plus everything needed to go from scan files to exported predictions.

    `networks` are ready modules (weights loaded); most users call `Predictor.from_trained` instead.
    `settings` (`PredictionSettings`) say how each scan is predicted: tiles, mirroring, the background, the
    device, compilation and, for a generative model, sampling. `patch_size` is the inference tile (default:
    the training patch; larger tiles divisible by the total stride are accepted, but instance normalization
    makes them a different prediction: measured worse, documentation/inference.md). `mirror_axes`: the axes
    training mirrored (default: every spatial axis). `sampler`: the checkpoints' `sampler` entry of a
    generative model (None: a regression model). `package`: the model package the networks were unpacked from
    (its name and SHA-256 go into every prediction's provenance), None for a model folder.
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        plans: Plans,
        configuration: str,
        dataset_spec: DatasetSpec | None = None,
        settings: PredictionSettings | None = None,
        mirror_axes: Sequence[int] | None = None,
        patch_size: Sequence[int] | None = None,
        sampler: dict[str, Any] | None = None,
        package: PackageIdentity | None = None,
    ):
        if not networks:
            raise ValueError("a Predictor needs at least one network")
        self.settings = settings = settings or PredictionSettings()
        self.plans = plans
        self.configuration_name = configuration
        self.configuration = plans.configuration(configuration)
        self.dataset_spec = dataset_spec
        self.device = choose_device(settings.device)
        prefer_fixed_shape_kernels(self.device)
        self.networks = [self._prepare(n) for n in networks]
        # tiles per forward pass: given, else measured from free GPU memory at the first prediction
        # (fast_path.measured_tile_batch_size), else (CPU) the configuration's training batch size
        self.tile_batch_size = settings.tile_batch_size
        if settings.compile_networks:
            self.networks = [compile_network(n) for n in self.networks]
        dims = self.configuration.dims
        self.mirror_axes = normalize_mirror_axes(mirror_axes, dims) if settings.use_mirroring else ()
        self.patch_size = tuple(int(p) for p in (patch_size or self.configuration.patch_size))
        if len(self.patch_size) != dims:
            raise AutosrError(
                f"patch size {self.patch_size} does not match the {dims}D configuration '{configuration}'"
            )
        self._check_divisible(self.patch_size)
        self.sampler = SamplerSpec.from_json(sampler) if sampler else None
        if self.sampler is None and settings.generative_options_given:
            raise AutosrError(
                "--sampling-steps and --num-samples are for generative models (e.g. DiffusionTrainer); "
                "this model is a regression model: leave them out"
            )
        self.num_samples = settings.num_samples or 1
        # where the networks came from (set by from_trained): the folder's QC reference, the ensemble's name
        self.model_dir: Path | None = None
        self.folds: tuple[int, ...] | None = None
        self.checkpoint_name: str | None = None
        self.package = package

    # --- construction --------------------------------------------------------------------------------
    @classmethod
    def from_trained(
        cls,
        model_dir: str | os.PathLike,
        folds: Sequence[int] = ALL_FOLDS,
        checkpoint: str = DEFAULT_CHECKPOINT,
        settings: PredictionSettings | None = None,
        patch_size: Sequence[int] | None = None,
        network_builder: NetworkBuilder | None = None,
        package: PackageIdentity | None = None,
    ) -> Predictor:
        """Load the folds of a model folder (`<Trainer>__<plans>__<configuration>`).

        Checkpoints load with `weights_only=True`. Test-time mirroring uses the axes the checkpoint says
        training mirrored (`mirror_axes`), else the configuration's, else every spatial axis.
        `network_builder(network_plan, in_channels, out_channels)` defaults to `autosr.network.build_network`;
        pass another for an architecture registered outside autosr. A checkpoint's `sampler` entry makes the
        model generative (sampled as `settings` say). `package`: the package `model_dir` was unpacked from.
        """
        model_dir = Path(model_dir)
        files = require_checkpoints(model_dir, list(folds), checkpoint)
        plans = Plans.load(model_dir / "plans.json")
        spec = load_dataset_spec(model_dir) if (model_dir / "dataset.json").is_file() else None
        checkpoints = {fold: load_checkpoint(path) for fold, path in files.items()}
        first = next(iter(checkpoints.values()))
        configuration = configuration_of(model_dir, first, plans.configuration_names)
        builder = network_builder or _default_builder()
        sampler = first.get("sampler")
        in_channels = plans.num_input_channels + (SamplerSpec.state_channels if sampler else 0)
        networks = []
        for fold, ckpt in checkpoints.items():
            # the checkpoint records the network its trainer built (a variant may change the plan's)
            network_plan = ckpt.get("network_plan") or plans.configuration(configuration).network
            network = builder(network_plan, in_channels, 1)
            try:
                network.load_state_dict(ckpt["network_weights"])
            except RuntimeError as e:
                raise AutosrError(
                    f"{files[fold]}: its weights do not fit the network described by {model_dir / 'plans.json'} "
                    f"(was plans.json edited after training?): {str(e).splitlines()[0]}"
                ) from e
            networks.append(network)
        mirror_axes = first.get("mirror_axes", plans.configuration(configuration).raw.get("mirror_axes"))
        if is_student(files) and not (settings and settings.mirror_student):
            mirror_axes = ()  # the student learned the mirrored average (autosr/inference/student.py)
        predictor = cls(networks, plans, configuration, spec, settings, mirror_axes, patch_size, sampler, package)
        predictor.model_dir, predictor.folds, predictor.checkpoint_name = model_dir, tuple(files), checkpoint
        return predictor

    def _prepare(self, network: nn.Module) -> nn.Module:
        # deep-supervision outputs are left as they are: the sliding window uses the full-resolution one
        return network.to(self.device).eval()

    def _check_divisible(self, patch_size: tuple[int, ...]) -> None:
        if not self.configuration.network.get("strides"):
            return
        total = total_stride(self.configuration.network)
        if any(p % t for p, t in zip(patch_size, total)):
            raise AutosrError(
                f"inference patch size {patch_size} must be divisible by the network's total stride {total}"
            )

    @property
    def num_input_channels(self) -> int:
        return self.plans.num_input_channels

    @property
    def file_ending(self) -> str:
        return self.dataset_spec.file_ending if self.dataset_spec is not None else ".nii.gz"

    @property
    def ensemble_key(self) -> str | None:
        """Which ensemble this predictor's spread comes from (`qc.uncertainty_key`: the key of its QC
        uncertainty reference and of its calibration); None when it was not loaded by `from_trained`."""
        if self.folds is None:
            return None
        from autosr.inference.qc import uncertainty_key

        return uncertainty_key(
            self.folds, self.checkpoint_name, self.mirror_axes, self.settings.step_fraction, self.sampling_key
        )

    @property
    def sampling_key(self) -> str | None:
        """How a generative model is sampled (its spread depends on it), for the QC uncertainty key; None for
        a regression model."""
        if self.sampler is None:
            return None
        return f"samples={self.num_samples};sampling_steps={self.settings.sampling_steps or self.sampler.steps};seed={self.settings.seed}"

    @property
    def num_members(self) -> int:
        """Ensemble members per case: folds x planes (2D) x mirrorings; for a generative model folds x samples."""
        if self.sampler is not None:
            return len(self.networks) * self.num_samples
        return len(self.networks) * len(self.planes) * len(mirror_combinations(self.mirror_axes))

    # --- normalized space ----------------------------------------------------------------------------
    def predict_preprocessed(
        self,
        input_array: np.ndarray | torch.Tensor,
        with_uncertainty: bool = False,
        samples: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Ensemble prediction of a preprocessed (C, Z, Y, X) input, in normalized target space.

        Returns `(prediction (Z, Y, X) float32, uncertainty (Z, Y, X) float32 or None)`; the uncertainty is
        the standard deviation over folds x mirrorings (generative models: folds x samples), in normalized
        units. A generative model's samples are appended to `samples` (fold-major) when a list is given.
        """
        if isinstance(input_array, np.ndarray):
            input_array = np.ascontiguousarray(input_array, dtype=np.float32)  # memory-mapped or flipped views
        image = torch.as_tensor(input_array)
        if image.ndim != 4 or image.shape[0] != self.num_input_channels:
            raise AutosrError(
                f"input of shape {tuple(image.shape)} does not fit the model: it wants "
                f"({self.num_input_channels}, Z, Y, X), one channel per trained input"
            )
        image = _to_device_if_it_fits(image.float(), self.device)  # once for every fold and plane
        stats = RunningMeanStd(track_spread=with_uncertainty)
        for member, network in enumerate(self.networks):
            if self.sampler is not None:
                for sample in self._samples(member, network, image):
                    if samples is not None:
                        samples.append(sample[0].cpu().numpy().copy())  # update() consumes the sample
                    stats.update(sample)
                continue
            for plane in self.planes:
                volume = image.movedim(1 + plane, 1) if plane else image
                for member in self._members(network, volume, with_uncertainty):
                    stats.update(member.movedim(1, 1 + plane) if plane else member)
        prediction = stats.mean[0].cpu().numpy()
        uncertainty = stats.std()[0].cpu().numpy() if with_uncertainty else None
        return prediction, uncertainty

    @property
    def planes(self) -> tuple[int, ...]:
        """Volume axes a 2D network slices along (each a member of the ensemble); (0,) for 3D networks."""
        return self.configuration.slice_axes if self.configuration.dims == 2 else (0,)

    def _members(self, network: nn.Module, image: torch.Tensor, separately: bool):
        """The network's predictions of `image`: all mirrorings averaged in one sliding window, or (for the
        uncertainty) each mirroring on its own: the whole volume flipped, predicted, flipped back."""
        if not separately:
            yield self._sliding_window(network, image, self.mirror_axes)
            return
        for mirror in mirror_combinations(self.mirror_axes):
            flip = volume_flip_dims(mirror, len(self.patch_size))
            member = self._sliding_window(network, torch.flip(image, flip) if flip else image, ())
            yield torch.flip(member, flip) if flip else member

    def _samples(self, member: int, network: nn.Module, image: torch.Tensor):
        """`num_samples` samples (1, Z, Y, X) of a generative network, each from its own seeded noise volume;
        every step's velocity is the sliding window over the whole state (planes and mirrorings averaged)."""

        def velocity(state: torch.Tensor, t: float) -> torch.Tensor:
            timed = functools.partial(network, t=torch.tensor(t, device=self.device))
            total = None
            for plane in self.planes:
                volume = state.movedim(1 + plane, 1) if plane else state
                v = self._sliding_window(timed, volume, self.mirror_axes)
                v = v.movedim(1, 1 + plane) if plane else v
                total = v if total is None else total.add_(v)
            return total / len(self.planes)

        steps = self.settings.sampling_steps or self.sampler.steps
        minimum = minimum_volume_shape(self.patch_size, self.planes)
        for index in range(self.num_samples):
            seed = sample_seed(self.settings.seed, member, index)
            yield sample_volume(velocity, image, steps, seed, minimum, sampler=self.sampler)

    def tiles_per_pass(self) -> int:
        """Tiles (mirrored copies included) per forward pass: as given, or measured once on a GPU."""
        if self.tile_batch_size is None:
            network, channels = self.networks[0], self.num_input_channels
            if self.sampler is not None:  # the state channel beside the input, and a time
                network = functools.partial(network, t=torch.tensor(0.0, device=self.device))
                channels += SamplerSpec.state_channels
            self.tile_batch_size = measured_tile_batch_size(
                network, (channels, *self.patch_size), self.device, fallback=self.configuration.batch_size
            )
        return self.tile_batch_size

    def _sliding_window(self, network: nn.Module, image: torch.Tensor, mirror_axes: Sequence[int]) -> torch.Tensor:
        return predict_sliding_window(
            network,
            image,
            self.patch_size,
            step_fraction=self.settings.step_fraction,
            tile_batch_size=self.tiles_per_pass(),
            mirror_axes=mirror_axes,
            device=self.device,
            fixed_batch=self.settings.compile_networks,
        )

    # --- cases ---------------------------------------------------------------------------------------
    def scan_worker(self) -> ScanWorker:
        """The preprocessing and export of this model as plain data (what folder workers run)."""
        return ScanWorker(self.plans.raw, self.configuration_name, self.settings.background_fill)

    def preprocess(self, channel_files: Sequence[str | os.PathLike]) -> PreprocessedScan:
        """Read, resample, crop and normalize one case's channel files exactly as in training."""
        return self.scan_worker().preprocess(channel_files)

    def export(
        self,
        prediction: np.ndarray,
        properties: dict[str, Any],
        on_input_grid: bool = False,
        uncertainty: np.ndarray | None = None,
        foreground: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
        """Invert the preprocessing: (array in target units, Geometry, uncertainty in target units); see
        `ScanWorker.export`."""
        return self.scan_worker().export(prediction, properties, on_input_grid, uncertainty, foreground)

    def predict_case(
        self,
        channel_files: Sequence[str | os.PathLike],
        output_path: str | os.PathLike,
        uncertainty_path: str | os.PathLike | None = None,
        on_input_grid: bool = False,
    ) -> Path:
        """Predict one case from its channel files and write it (atomically) to `output_path`."""
        return self._predict_and_write(self.preprocess(channel_files), output_path, uncertainty_path, on_input_grid)

    def _predict_and_write(
        self,
        scan: PreprocessedScan,
        output_path: str | os.PathLike,
        uncertainty_path: str | os.PathLike | None,
        on_input_grid: bool,
    ) -> Path:
        prediction, uncertainty = self.predict_preprocessed(scan.input, with_uncertainty=uncertainty_path is not None)
        array, geometry, spread = self.export(prediction, scan.properties, on_input_grid, uncertainty, scan.foreground)
        if uncertainty_path is not None:
            write_image(spread, geometry, uncertainty_path)  # first: the prediction marks the case finished
        write_image(array, geometry, output_path)
        return Path(output_path)

    def predict_array(
        self, array: np.ndarray, geometry: Geometry, on_input_grid: bool = False
    ) -> tuple[np.ndarray, Geometry]:
        """Predict a (C, Z, Y, X) or (Z, Y, X) array with its geometry from Python; returns (array, Geometry).

        The same preprocessing as `predict_case` (`preprocess_arrays` is what reading the files leads to).
        """
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == 3:
            array = array[None]
        scan = preprocess_arrays(array, geometry, self.plans, self.configuration_name)
        prediction, _ = self.predict_preprocessed(scan.input)
        exported, exported_geometry, _ = self.export(prediction, scan.properties, on_input_grid, None, scan.foreground)
        return exported, exported_geometry

    # --- folders -------------------------------------------------------------------------------------
    def predict_folder(
        self,
        input_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        settings: FolderSettings | None = None,
    ) -> FolderSummary:
        """Predict every case of `input_dir` into `output_dir` as `<case><ending>`, with `summary.csv` (one row
        per scan, quality flags); see `autosr.inference.folder` and `autosr.inference.pipeline`.

        `settings` (`FolderSettings`): finished cases are skipped unless `overwrite`; reading, preprocessing and
        export run in `num_workers` worker processes beside the network; a case that fails is recorded and the
        run goes on; `uncertainty`, `save_samples` and `on_input_grid` say what is written.
        """
        from autosr.inference.pipeline import predict_folder

        return predict_folder(self, input_dir, output_dir, settings or FolderSettings())


def _to_device_if_it_fits(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The input volume on the device (one pinned copy for all folds), or where it is when it does not fit."""
    if tensor.device == device or device.type != "cuda":
        return tensor
    try:
        return tensor.pin_memory().to(device, non_blocking=True)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return tensor

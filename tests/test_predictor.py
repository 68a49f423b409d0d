"""Predictor: loading a model folder safely, fold ensembling and uncertainty in normalized space.

The networks here are a tiny stand-in (a real torch module) built by `tiny_builder`, so these tests do not
depend on autosr.network; `test_predict_cli.py` imports the model-folder helpers from this file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autosr.errors import AutosrError
from autosr.inference.model_folder import require_checkpoints
from autosr.inference.predictor import Predictor
from autosr.inference.settings import PredictionSettings
from autosr.model_layout import ModelFolder

torch.set_num_threads(1)

NETWORK_PLAN_3D = {
    "architecture": "PlainConvUNet",
    "dims": 3,
    "features_per_stage": [4, 8],
    "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [2, 2, 2]],
    "n_conv_per_stage": [1, 1],
    "n_conv_per_stage_decoder": [1],
    "upsampling": "transposed",
    "deep_supervision": True,
}


def plans_dict(num_channels: int = 1, patch_3d=(16, 16, 16), patch_2d=(16, 16)) -> dict:
    network_2d = copy.deepcopy(NETWORK_PLAN_3D)
    network_2d.update(dims=2, kernel_sizes=[[3, 3], [3, 3]], strides=[[1, 1], [2, 2]])
    return {
        "plans_name": "autosrPlans",
        "dataset_name": "Dataset999_Phantom",
        "num_input_channels": num_channels,
        "input_channel_names": [f"c{i}" for i in range(num_channels)],
        "target_name": "highfield",
        "target_modality": "MR",
        "normalization": {
            "input": [{"scheme": "zscore"} for _ in range(num_channels)],
            "target": {"scheme": "zscore"},
        },
        "configurations": {
            "3d_fullres": {
                "data_identifier": "autosrPlans_3d_fullres",
                "spacing_zyx": [1.0, 1.0, 1.0],
                "patch_size": list(patch_3d),
                "batch_size": 2,
                "network": NETWORK_PLAN_3D,
            },
            "2d": {
                "data_identifier": "autosrPlans_3d_fullres",
                "spacing_zyx": [1.0, 1.0, 1.0],
                "patch_size": list(patch_2d),
                "batch_size": 8,
                "network": network_2d,
            },
        },
    }


class TinyNet(nn.Module):
    """Stand-in for the U-Net: two convolutions and a `deep_supervision` switch (list output when on)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv1 = conv(in_channels, 4, 3, padding=1)
        self.conv2 = conv(4, out_channels, 3, padding=1)
        self.deep_supervision = True

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        y = self.conv2(torch.relu(self.conv1(x)))
        return [y, y] if self.deep_supervision else y


def tiny_builder(network_plan: dict, in_channels: int, out_channels: int) -> nn.Module:
    return TinyNet(int(network_plan["dims"]), in_channels, out_channels)


def make_model_folder(
    root: Path,
    configuration: str = "3d_fullres",
    folds=(0, 1),
    num_channels: int = 1,
    mirror_axes=None,
    file_ending: str = ".nii.gz",
    checkpoint: str = "final",
    plans: dict | None = None,
    builder=tiny_builder,
) -> Path:
    """A model folder as training leaves it: plans.json, dataset.json, fold_k/checkpoint_<name>.pt."""
    folder = root / "Dataset999_Phantom" / f"Trainer__autosrPlans__{configuration}"
    folder.mkdir(parents=True)
    plans = plans or plans_dict(num_channels)
    (folder / "plans.json").write_text(json.dumps(plans))
    dataset = {
        "name": "Phantom",
        "channel_names": {str(i): f"c{i}" for i in range(num_channels)},
        "target_name": "highfield",
        "target_modality": "MR",
        "file_ending": file_ending,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))
    for fold in folds:
        torch.manual_seed(100 + fold)
        network = builder(plans["configurations"][configuration]["network"], num_channels, 1)
        ckpt = {"format_version": 1, "trainer": "Trainer", "configuration": configuration, "epoch": 1}
        ckpt["network_weights"] = network.state_dict()
        if mirror_axes is not None:
            ckpt["mirror_axes"] = list(mirror_axes)
        (folder / f"fold_{fold}").mkdir()
        torch.save(ckpt, folder / f"fold_{fold}" / f"checkpoint_{checkpoint}.pt")
    return folder


def test_from_trained_loads_folds_in_eval_mode_and_leaves_the_networks_switches_alone(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0, 2), mirror_axes=(0, 2))
    predictor = Predictor.from_trained(
        folder, folds=(0, 2), network_builder=tiny_builder, settings=PredictionSettings(device="cpu")
    )
    assert len(predictor.networks) == 2
    # eval mode; deep supervision stays as built (the sliding window uses the full-resolution output)
    assert all(not n.training and n.deep_supervision is True for n in predictor.networks)
    assert predictor.mirror_axes == (0, 2)  # from the checkpoint: the axes training mirrored
    assert predictor.num_members == 2 * 4
    assert predictor.configuration_name == "3d_fullres" and predictor.file_ending == ".nii.gz"
    off = Predictor.from_trained(
        folder, folds=(0,), network_builder=tiny_builder, settings=PredictionSettings(use_mirroring=False)
    )
    assert off.mirror_axes == () and off.num_members == 1


def test_mirror_axes_default_to_every_spatial_axis(tmp_path):
    folder = make_model_folder(tmp_path, configuration="2d", folds=(0,))
    predictor = Predictor.from_trained(folder, folds=(0,), network_builder=tiny_builder)
    assert predictor.mirror_axes == (0, 1)


def test_ensemble_is_the_mean_of_folds_and_uncertainty_the_std_of_members(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0, 1, 2))
    image = np.random.default_rng(0).normal(size=(1, 12, 20, 17)).astype(np.float32)
    ensemble = Predictor.from_trained(
        folder, folds=(0, 1, 2), network_builder=tiny_builder, settings=PredictionSettings(step_fraction=0.5)
    )
    prediction, uncertainty = ensemble.predict_preprocessed(image, with_uncertainty=True)
    assert prediction.shape == (12, 20, 17) and prediction.dtype == np.float32

    members = []
    for fold in (0, 1, 2):
        single = Predictor.from_trained(
            folder, folds=(fold,), network_builder=tiny_builder, settings=PredictionSettings(use_mirroring=False)
        )
        for mirror in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]:
            flipped = np.flip(image, mirror).copy() if mirror else image
            member, _ = single.predict_preprocessed(flipped)
            members.append(np.flip(member, tuple(a - 1 for a in mirror)) if mirror else member)
    members = np.stack(members).astype(np.float64)
    np.testing.assert_allclose(prediction, members.mean(0), atol=1e-5)
    np.testing.assert_allclose(uncertainty, members.std(0), atol=1e-4)
    assert float(uncertainty.mean()) > 1e-3  # different folds do disagree

    plain, none = ensemble.predict_preprocessed(image)  # mirrors batched with tiles, no uncertainty
    assert none is None
    np.testing.assert_allclose(plain, prediction, atol=1e-4)


def test_2d_configuration_predicts_every_slice(tmp_path):
    folder = make_model_folder(tmp_path, configuration="2d", folds=(0,))
    predictor = Predictor.from_trained(
        folder, folds=(0,), network_builder=tiny_builder, settings=PredictionSettings(use_mirroring=False)
    )
    image = np.random.default_rng(1).normal(size=(1, 5, 21, 30)).astype(np.float32)
    prediction, _ = predictor.predict_preprocessed(image)
    network = predictor.networks[0]
    with torch.no_grad():
        slices = network(torch.from_numpy(image).transpose(0, 1))[0][:, 0].numpy()  # whole slices, z as batch
    assert prediction.shape == (5, 21, 30)
    # tiles see zero padding at their borders where whole slices see neighbours: close, not equal
    assert np.abs(prediction - slices).mean() < 0.05 * np.abs(slices).mean()


def test_wrong_channel_count_is_a_clear_error(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0,), num_channels=2)
    predictor = Predictor.from_trained(folder, folds=(0,), network_builder=tiny_builder)
    with pytest.raises(AutosrError, match=r"wants \(2, Z, Y, X\)"):
        predictor.predict_preprocessed(np.zeros((1, 8, 8, 8), np.float32))


def test_missing_folds_are_named_with_the_fix(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0, 1))
    with pytest.raises(AutosrError) as error:
        Predictor.from_trained(folder, folds=(0, 1, 2, 3), network_builder=tiny_builder)
    message = str(error.value)
    assert "fold_2/checkpoint_final.pt" in message and "fold_3/checkpoint_final.pt" in message
    assert "autosr train" in message and "-f 0 1" in message
    with pytest.raises(AutosrError, match="checkpoint_best.pt"):
        require_checkpoints(folder, [0], "best")


def test_checkpoint_that_does_not_fit_the_plans_is_a_clear_error(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0,), num_channels=1)
    plans = json.loads((folder / "plans.json").read_text())
    plans["num_input_channels"] = 2
    plans["input_channel_names"] = ["a", "b"]
    plans["normalization"]["input"] = [{"scheme": "zscore"}] * 2
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(AutosrError, match="do not fit the network"):
        Predictor.from_trained(folder, folds=(0,), network_builder=tiny_builder)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0,))
    (folder / "fold_0" / "checkpoint_final.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AutosrError, match="cannot be loaded"):
        Predictor.from_trained(folder, folds=(0,), network_builder=tiny_builder)


def test_larger_inference_tiles_must_fit_the_network_stride(tmp_path):
    folder = make_model_folder(tmp_path, folds=(0,))
    assert Predictor.from_trained(folder, folds=(0,), network_builder=tiny_builder, patch_size=(32, 32, 32))
    with pytest.raises(AutosrError, match="total stride"):
        Predictor.from_trained(folder, folds=(0,), network_builder=tiny_builder, patch_size=(31, 32, 32))


def test_model_folder_layout(tmp_path):
    parsed = ModelFolder.parse(tmp_path / "Trainer__autosrPlans__3d_fullres")
    assert (parsed.trainer, parsed.plans_name, parsed.configuration) == ("Trainer", "autosrPlans", "3d_fullres")
    assert parsed == ModelFolder.create(tmp_path, "Trainer", "autosrPlans", "3d_fullres")
    assert ModelFolder.parse(tmp_path / "fold_0") is None
    fold = parsed.fold(2)
    assert fold.checkpoint("best") == tmp_path / "Trainer__autosrPlans__3d_fullres" / "fold_2" / "checkpoint_best.pt"
    assert fold.validation_dir.parent == fold.path and parsed.crossval_dir.name == "crossval_results"
    with pytest.raises(AutosrError, match="trainer"):
        ModelFolder.create(tmp_path, "../x", "autosrPlans", "3d_fullres")


class AxisProbe(nn.Module):
    """A '2D network' whose output is input channel 0 plus the row index along the slice's first axis: the
    prediction shows which volume axis each slice's first axis was."""

    def __init__(self):
        super().__init__()
        self.deep_supervision = False
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[2], dtype=x.dtype).reshape(1, 1, -1, 1)
        return x[:, :1] + rows + self.dummy


@pytest.mark.parametrize("slice_axes", [[0], [1], [2], [1, 2]])
def test_2d_planes_slice_along_the_planned_axes_and_come_back_in_place(tmp_path, slice_axes):
    plans = plans_dict(patch_2d=(16, 16))
    plans["configurations"]["2d"]["slice_axes"] = slice_axes
    folder = make_model_folder(tmp_path, configuration="2d", folds=(0,), plans=plans, builder=lambda *a: AxisProbe())
    predictor = Predictor.from_trained(
        folder, folds=(0,), network_builder=lambda *a: AxisProbe(), settings=PredictionSettings(use_mirroring=False)
    )
    assert predictor.planes == tuple(slice_axes) and predictor.num_members == len(slice_axes)
    image = np.random.default_rng(0).normal(size=(1, 9, 11, 13)).astype(np.float32)
    prediction, _ = predictor.predict_preprocessed(image)
    expected = []
    for axis in slice_axes:  # the first in-plane axis of slicing along `axis`: the lowest other axis
        first = min(a for a in range(3) if a != axis)
        rows = np.arange(image.shape[1 + first], dtype=np.float32)
        shape = [1, 1, 1]
        shape[first] = -1
        expected.append(image[0] + rows.reshape(shape))
    # tiles pad each slice to the 16 x 16 patch symmetrically: the probe's row index counts from the pad
    np.testing.assert_allclose(prediction - np.mean(expected, axis=0), prediction.mean() - np.mean(expected), atol=1e-4)

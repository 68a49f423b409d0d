"""Sliding-window prediction: no seams, exact for linear networks, mirroring undone, 2D and small volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autosr.inference.mirroring import mirror_combinations, normalize_mirror_axes
from autosr.inference.running_stats import RunningMeanStd
from autosr.inference.sliding_window import (
    GAUSSIAN_MIN_WEIGHT,
    gaussian_importance_map,
    predict_sliding_window,
    tile_starts,
    tile_windows,
)

torch.set_num_threads(1)


def constant_network(dims: int, value: float, in_channels: int = 1) -> nn.Module:
    """A real conv layer whose output is `value` everywhere, whatever the input."""
    conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(in_channels, 1, kernel_size=3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.constant_(conv.bias, value)
    return conv.eval()


def linear_network(dims: int, in_channels: int, seed: int = 0) -> nn.Module:
    """A 1x1 convolution: position-independent and linear, so tiling must not change its output."""
    torch.manual_seed(seed)
    conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(in_channels, 1, kernel_size=1)
    return conv.eval()


class DeepSupervisionNet(nn.Module):
    """Returns a list (full resolution first), as a U-Net with deep supervision does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.conv(x)
        return [y, y[:, :, ::2, ::2, ::2]]


@pytest.mark.parametrize("mirror_axes", [(), (0, 1, 2)])
def test_constant_network_gives_constant_output_3d(mirror_axes):
    image = torch.randn(1, 21, 30, 17)
    out = predict_sliding_window(constant_network(3, 3.25), image, (8, 16, 8), 0.5, 3, mirror_axes)
    assert out.shape == (1, 21, 30, 17) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), 3.25, rtol=1e-5)


def test_constant_network_volume_smaller_than_patch():
    image = torch.randn(1, 5, 9, 3)
    out = predict_sliding_window(constant_network(3, -1.5), image, (16, 16, 16), mirror_axes=(0, 1, 2))
    assert out.shape == (1, 5, 9, 3)
    np.testing.assert_allclose(out.numpy(), -1.5, rtol=1e-5)


@pytest.mark.parametrize("mirror_axes", [(), (0, 1)])
def test_constant_network_2d(mirror_axes):
    image = torch.randn(1, 4, 27, 13)  # x smaller than the patch, y not a multiple of it
    out = predict_sliding_window(constant_network(2, 7.0), image, (16, 16), 0.5, 5, mirror_axes)
    assert out.shape == (1, 4, 27, 13)
    np.testing.assert_allclose(out.numpy(), 7.0, rtol=1e-5)


@pytest.mark.parametrize("mirror_axes", [(), (0, 1, 2), (2,)])
def test_linear_network_matches_whole_volume(mirror_axes):
    image = torch.randn(2, 19, 26, 23) * 100 + 50  # large offset: rounding in fp16/fp32 would show
    network = linear_network(3, 2)
    with torch.no_grad():
        whole = network(image[None])[0]
    out = predict_sliding_window(network, image, (8, 8, 16), 0.5, 4, mirror_axes)
    np.testing.assert_allclose(out.numpy(), whole.numpy(), rtol=1e-5, atol=1e-4)


def test_linear_network_2d_matches_slice_by_slice():
    image = torch.randn(3, 6, 20, 33)
    network = linear_network(2, 3)
    with torch.no_grad():
        whole = network(image.transpose(0, 1)).transpose(0, 1)  # z as the batch
    out = predict_sliding_window(network, image, (8, 16), 0.25, 7, mirror_axes=(0, 1))
    np.testing.assert_allclose(out.numpy(), whole.numpy(), rtol=1e-5, atol=1e-5)


def test_batch_size_and_numpy_input_do_not_change_the_result():
    image = np.random.default_rng(0).normal(size=(1, 12, 20, 20)).astype(np.float32)
    network = nn.Conv3d(1, 1, 3, padding=1).eval()  # border effects differ per tile: blending must not
    a = predict_sliding_window(network, image, (8, 8, 8), 0.5, 1, (0, 1))
    b = predict_sliding_window(network, torch.from_numpy(image), (8, 8, 8), 0.5, 16, (0, 1))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_deep_supervision_outputs_use_the_full_resolution_one():
    image = torch.randn(1, 10, 10, 10)
    network = DeepSupervisionNet().eval()
    with torch.no_grad():
        whole = network.conv(image[None])[0]
    out = predict_sliding_window(network, image, (8, 8, 8))
    np.testing.assert_allclose(out.numpy(), whole.numpy(), rtol=1e-5, atol=1e-5)


def test_mirroring_is_undone():
    """A network that shifts its input by one voxel along x: each mirrored member shifts the other way,
    so the mirrored average is the mean of both shifts, which only holds if each member is flipped back."""
    shift = nn.Conv3d(1, 1, kernel_size=(1, 1, 3), padding=(0, 0, 1), bias=False)
    with torch.no_grad():
        shift.weight.zero_()
        shift.weight[0, 0, 0, 0, 0] = 1.0
    image = torch.randn(1, 6, 6, 24)
    with torch.no_grad():
        plain = shift(image[None])[0]
        flipped = torch.flip(shift(torch.flip(image, (3,))[None])[0], (3,))
    expected = (plain + flipped) / 2
    out = predict_sliding_window(shift.eval(), image, (6, 6, 24), mirror_axes=(2,))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)


def test_tile_starts_cover_the_axis_with_the_requested_overlap():
    for size, patch, fraction in [(100, 32, 0.5), (33, 32, 0.5), (32, 32, 0.5), (197, 96, 0.25), (10, 1, 0.5)]:
        starts = tile_starts(size, patch, fraction)
        assert starts[0] == 0 and starts[-1] == size - patch
        assert all(b - a <= max(1, patch * fraction) for a, b in zip(starts, starts[1:]))
    assert tile_starts(5, 16, 0.5) == [0]
    windows = tile_windows((40, 40, 40), (16, 16, 16), 0.5)
    assert len(windows) == 4**3


def test_gaussian_importance_map():
    weight = gaussian_importance_map((9, 16, 5))
    assert weight.shape == (9, 16, 5)
    assert float(weight.max()) == pytest.approx(1.0, abs=1e-3)
    assert float(weight.min()) == pytest.approx(GAUSSIAN_MIN_WEIGHT, rel=1e-6)
    torch.testing.assert_close(weight, torch.flip(weight, (0, 1, 2)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="patch_size"):
        predict_sliding_window(constant_network(3, 1), torch.zeros(1, 4, 4, 4), (4,))
    with pytest.raises(ValueError, match="mirror axes"):
        predict_sliding_window(constant_network(2, 1), torch.zeros(1, 4, 4, 4), (4, 4), mirror_axes=(2,))
    with pytest.raises(ValueError, match=r"\(C, Z, Y, X\)"):
        predict_sliding_window(constant_network(3, 1), torch.zeros(4, 4, 4), (4, 4, 4))


def test_mirror_combinations():
    assert mirror_combinations(()) == [()]
    assert len(mirror_combinations((0, 1, 2))) == 8 and mirror_combinations((0, 1, 2))[0] == ()
    assert normalize_mirror_axes(None, 2) == (0, 1)
    assert normalize_mirror_axes([2, 0, 2], 3) == (0, 2)


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(1)
    members = rng.normal(1000.0, 0.01, size=(7, 3, 4)).astype(np.float32)  # close members, large mean
    stats = RunningMeanStd()
    for m in members:
        stats.update(torch.from_numpy(m.copy()))
    np.testing.assert_allclose(stats.mean.numpy(), members.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std().numpy(), members.astype(np.float64).std(0), rtol=0.02, atol=2e-4)


def test_padding_is_the_background_level_training_patches_use() -> None:
    """A volume smaller than the tile is padded with each channel's border median, the level a training
    patch reaching past a volume is filled with, so prediction shows the network nothing training did not."""
    from autosr.imaging.foreground import border_values
    from autosr.inference.sliding_window import _pad_to_window
    from autosr.training.data import crop_padded

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
    volume[1] += 10.0
    padded, crop = _pad_to_window(torch.from_numpy(volume), (10, 9, 9))
    level = border_values(volume)
    assert torch.equal(padded[(slice(None), *crop)], torch.from_numpy(volume))
    outside = torch.ones(padded.shape[1:], dtype=torch.bool)
    outside[crop] = False
    for c in range(2):
        assert torch.all(padded[c][outside] == float(level[c]))
    patch = crop_padded(volume, [-2, -1, -2], [10, 9, 9], fill=level)
    assert np.array_equal(patch, padded.numpy())

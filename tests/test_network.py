"""The dynamic U-Net: shapes from plans (2d/3d, anisotropic), deep supervision switch, linear head, memory."""

from __future__ import annotations

import copy

import pytest
import torch

from autosr.errors import AutosrError
from autosr.network import activation_memory, build_network, parameter_count

PLAN = {
    "architecture": "PlainConvUNet",
    "dims": 3,
    "features_per_stage": [8, 16, 32],
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2],
    "upsampling": "transposed",
    "deep_supervision": True,
}


@pytest.mark.parametrize("architecture", ["PlainConvUNet", "ResEncUNet"])
@pytest.mark.parametrize("upsampling", ["transposed", "interp_conv"])
def test_deep_supervision_outputs_and_switch(architecture: str, upsampling: str) -> None:
    net = build_network({**PLAN, "architecture": architecture, "upsampling": upsampling}, 2, 1)
    assert net.deep_supervision is True
    outs = net(torch.randn(2, 2, 16, 16, 16))
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 16, 16, 16), (2, 1, 8, 8, 8)]
    net.deep_supervision = False
    out = net(torch.randn(1, 2, 16, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 16, 16, 16)


def test_state_dict_independent_of_deep_supervision() -> None:
    a = build_network(PLAN, 1, 1)
    b = build_network({**PLAN, "deep_supervision": False}, 1, 1)
    b.load_state_dict(a.state_dict())  # strict: same keys


def test_anisotropic_kernels_and_strides() -> None:
    plan = {
        **PLAN,
        "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "upsampling": "interp_conv",
    }
    net = build_network(plan, 1, 1)
    outs = net(torch.randn(1, 1, 4, 16, 16))
    assert [tuple(o.shape) for o in outs] == [(1, 1, 4, 16, 16), (1, 1, 4, 8, 8)]
    assert net.output_scales() == [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5]]


def test_2d_network() -> None:
    plan = {**PLAN, "dims": 2, "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]]}
    net = build_network({**plan, "deep_supervision": False}, 3, 1)
    assert net(torch.randn(2, 3, 32, 24)).shape == (2, 1, 32, 24)


def test_head_is_linear() -> None:
    """The regression head has no nonlinearity: scaling the head's weights and bias scales the output."""
    net = build_network({**PLAN, "deep_supervision": False}, 1, 1).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        y1 = net(x)
        head = net.heads[-1]
        head.weight.mul_(-3.0)
        head.bias.mul_(-3.0)
        y2 = net(x)
    assert torch.allclose(y2, -3.0 * y1, atol=1e-4)
    assert (y1 < 0).any() and (y1 > 0).any()


def test_bad_plans_are_clear_errors() -> None:
    bad = copy.deepcopy(PLAN)
    bad["architecture"] = "Transformer"
    with pytest.raises(AutosrError, match="PlainConvUNet"):
        build_network(bad, 1, 1)
    bad = copy.deepcopy(PLAN)
    bad["n_conv_per_stage_decoder"] = [2]
    with pytest.raises(AutosrError, match="n_conv_per_stage_decoder"):
        build_network(bad, 1, 1)


def test_activation_memory_counts() -> None:
    net = build_network(PLAN, 1, 1)
    small = activation_memory(net, (1, 1, 16, 16, 16))
    big = activation_memory(net, (2, 1, 16, 16, 16))
    assert small["parameter_bytes"] == 4 * parameter_count(net)
    assert small["saved_for_backward_bytes"] > 0 and small["module_output_bytes"] > 0
    # activations scale with the batch; parameters do not
    assert big["saved_for_backward_bytes"] == pytest.approx(2 * small["saved_for_backward_bytes"], rel=0.05)
    assert big["parameter_bytes"] == small["parameter_bytes"]


@pytest.mark.parametrize("norm", ["instance", "batch", "group", "none"])
def test_residual_mode_with_a_zero_network_returns_input_channel_0(norm: str) -> None:
    net = build_network({**PLAN, "residual": True, "norm": norm}, 2, 1).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
    x = torch.randn(2, 2, 16, 16, 16)
    full, half = net(x)
    assert torch.equal(full, x[:, :1])
    assert torch.allclose(half, torch.nn.functional.avg_pool3d(x[:, :1], 2))


def test_batch_norm_and_no_norm_are_tile_invariant_in_eval_mode_instance_and_group_norm_are_not() -> None:
    """In eval mode batch norm is a fixed affine map: away from a tile's border (beyond the receptive field)
    its output does not depend on the rest of the tile; instance and group norm's statistics do."""
    small = {**PLAN, "features_per_stage": [4, 8], "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]],
             "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "deep_supervision": False}  # fmt: skip
    x = torch.randn(1, 1, 32, 32, 32) + torch.linspace(0, 4, 32).reshape(1, 1, 32, 1, 1)
    for norm, invariant in (("batch", True), ("none", True), ("instance", False), ("group", False)):
        torch.manual_seed(0)
        net = build_network({**small, "norm": norm}, 1, 1)
        net.train()
        with torch.no_grad():
            net(torch.randn(2, 1, 16, 16, 16) * 3 + 1)  # give batch norm running statistics
        net.eval()
        with torch.no_grad():
            whole = net(x)[..., 12:20, 12:20, 12:20]
            tile = net(x[..., 4:28, 4:28, 4:28])[..., 8:16, 8:16, 8:16]
        assert torch.allclose(whole, tile, atol=1e-5) is invariant, norm

"""`build_network`: the one place a plan's `network` dict becomes a torch module."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from autosr.errors import AutosrError
from autosr.network.unet import ARCHITECTURES

# Default decoder upsampling when a plan does not say: interpolation + conv. Measured against transposed
# convolutions on the phantom (documentation/training.md, "Upsampling: interp_conv vs transposed").
DEFAULT_UPSAMPLING = "interp_conv"


def total_stride(network_plan: dict[str, Any]) -> list[int]:
    """Per axis, the product of the stages' strides: every patch or tile edge must be a multiple of it."""
    strides = network_plan["strides"]
    return [int(np.prod([s[a] for s in strides])) for a in range(len(strides[0]))]


_REQUIRED = ("dims", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_conv_per_stage_decoder")


def build_network(network_plan: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """A `PlainConvUNet` or `ResEncUNet` shaped by `network_plan` (the `network` entry of a configuration).

    The module has a bool attribute `deep_supervision`; when True, `forward` returns a list of outputs
    [full resolution, 1/stride, ...], else one tensor (N, out_channels, *spatial).
    """
    missing = [k for k in _REQUIRED if k not in network_plan]
    if missing:
        raise AutosrError(f"the network plan lacks {', '.join(missing)}; re-run `autosr plan` or fix plans.json")
    name = network_plan.get("architecture", "PlainConvUNet")
    if name not in ARCHITECTURES:
        raise AutosrError(f"unknown network architecture '{name}' in plans.json (valid: {', '.join(ARCHITECTURES)})")
    upsampling = network_plan.get("upsampling", DEFAULT_UPSAMPLING)
    from autosr.network.blocks import NORMALIZATIONS, UPSAMPLERS

    if upsampling not in UPSAMPLERS:
        raise AutosrError(f"unknown upsampling '{upsampling}' in plans.json (valid: {', '.join(UPSAMPLERS)})")
    # plans written before the choice existed were trained with instance normalization
    norm = network_plan.get("norm", "instance")
    if norm not in NORMALIZATIONS:
        raise AutosrError(f"unknown network normalization '{norm}' in plans.json (valid: {', '.join(NORMALIZATIONS)})")
    dims = int(network_plan["dims"])
    n_stages = len(network_plan["features_per_stage"])
    for key, expected in (
        ("kernel_sizes", n_stages),
        ("strides", n_stages),
        ("n_conv_per_stage", n_stages),
        ("n_conv_per_stage_decoder", n_stages - 1),
    ):
        if len(network_plan[key]) != expected:
            raise AutosrError(f"network plan: '{key}' needs {expected} entries, got {len(network_plan[key])}")
    if n_stages < 2:
        raise AutosrError("network plan: a U-Net needs at least 2 stages in 'features_per_stage'")
    return ARCHITECTURES[name](
        dims=dims,
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        features_per_stage=[int(f) for f in network_plan["features_per_stage"]],
        kernel_sizes=[[int(k) for k in ks] for ks in network_plan["kernel_sizes"]],
        strides=[[int(s) for s in st] for st in network_plan["strides"]],
        n_conv_per_stage=network_plan["n_conv_per_stage"],
        n_conv_per_stage_decoder=network_plan["n_conv_per_stage_decoder"],
        upsampling=upsampling,
        deep_supervision=bool(network_plan.get("deep_supervision", False)),
        norm=norm,
        residual=bool(network_plan.get("residual", False)),
        time_embedding=bool(network_plan.get("time_embedding", False)),
    )

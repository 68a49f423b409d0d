"""The dynamic U-Net: encoder and decoder shaped by a plan, with a linear regression head.

Stage `s` of the encoder has `features_per_stage[s]` channels, `kernel_sizes[s]` kernels and downsamples by
`strides[s]` (the first stride is all ones). The decoder mirrors it, upsampling by the stride of the stage
below, concatenating the skip, and applying `n_conv_per_stage_decoder[s]` convolutions. Every decoder stage
has a 1x1 head; the heads are always built (so state dicts do not depend on the deep-supervision switch),
and `deep_supervision` only decides whether `forward` returns all of them or the full-resolution one.

Regression: the heads are plain 1x1 convolutions with a bias and no nonlinearity, because the normalized
target is unbounded (z-scores, CT in scaled HU); under mixed precision they run in float32. With `residual`, every output adds input channel 0 (the
scan resampled onto the target grid, normalized; average-pooled to a deep-supervision output's size): the
network predicts the correction to its input, the usual formulation of super-resolution.

With `time_embedding` (plan key `network.time_embedding`, set by generative trainers) the network takes a
second argument, one time per batch item, `network(x, t)`, and every encoder and decoder stage's output is
modulated by an embedding of t (`autosr.network.time_embedding`); without it nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autosr.network.blocks import UPSAMPLERS, PlainStage, ResidualStage, average_pool_to, conv_class
from autosr.network.time_embedding import StageModulation, TimestepEmbedding, times_for_batch


class DynamicUNet(nn.Module):
    """A U-Net whose depth, widths, kernels and strides come from the plan; see the module docstring."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        n_conv_per_stage: Sequence[int],
        n_conv_per_stage_decoder: Sequence[int],
        residual_encoder: bool = False,
        upsampling: str = "interp_conv",
        deep_supervision: bool = False,
        norm: str = "instance",
        residual: bool = False,
        time_embedding: bool = False,
    ):
        super().__init__()
        self.residual = bool(residual)
        n_stages = len(features_per_stage)
        self.dims = dims
        self.deep_supervision = bool(deep_supervision)
        self.strides = [list(s) for s in strides]
        stage_class = ResidualStage if residual_encoder else PlainStage
        self.encoder = nn.ModuleList()
        width_in = in_channels
        for s in range(n_stages):
            self.encoder.append(
                stage_class(
                    dims,
                    width_in,
                    features_per_stage[s],
                    kernel_sizes[s],
                    strides[s],
                    int(n_conv_per_stage[s]),
                    norm=norm,
                )
            )
            width_in = features_per_stage[s]
        upsampler = UPSAMPLERS[upsampling]
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        # decoder index d = 0 is the deepest decoder stage (resolution of encoder stage n_stages - 2)
        for s in range(n_stages - 2, -1, -1):
            self.upsamplers.append(upsampler(dims, features_per_stage[s + 1], features_per_stage[s], strides[s + 1]))
            self.decoder.append(
                PlainStage(
                    dims,
                    2 * features_per_stage[s],
                    features_per_stage[s],
                    kernel_sizes[s],
                    [1] * dims,
                    int(n_conv_per_stage_decoder[s]),
                    norm=norm,
                )
            )
            self.heads.append(conv_class(dims)(features_per_stage[s], out_channels, kernel_size=1, bias=True))
        if norm == "none":
            initialize_without_normalization(self)
        self.time_embedding: TimestepEmbedding | None = None
        if time_embedding:  # built after the initialization above: the modulations must start at zero
            self.time_embedding = TimestepEmbedding()
            widths = [*features_per_stage, *features_per_stage[-2::-1]]  # encoder stages, then decoder stages
            self.modulations = nn.ModuleList(StageModulation(self.time_embedding.features, w) for w in widths)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor | list[torch.Tensor]:
        source = x[:, :1]
        modulate = self._modulation(t, x)
        skips = []
        for s, stage in enumerate(self.encoder):
            x = modulate(s, stage(x))
            skips.append(x)
        x = skips.pop()
        outputs = []
        last = len(self.decoder) - 1
        for d, (up, stage, head) in enumerate(zip(self.upsamplers, self.decoder, self.heads)):
            skip = skips.pop()
            x = modulate(len(self.encoder) + d, stage(torch.cat([up(x, skip.shape[2:]), skip], dim=1)))
            if self.deep_supervision or d == last:
                outputs.append(_full_precision(head, x))
        if self.residual:
            outputs = [out + average_pool_to(source, out.shape[2:]) for out in outputs]
        if self.deep_supervision:
            return outputs[::-1]  # [full resolution, half, quarter, ...]
        return outputs[-1]

    def _modulation(self, t: torch.Tensor | float | None, x: torch.Tensor):
        """stage index, stage output -> the output modulated by t's embedding (unchanged without one)."""
        if self.time_embedding is None:
            if t is not None:
                raise ValueError(
                    "this network has no time embedding (plan key network.time_embedding); call network(x)"
                )
            return lambda s, out: out
        if t is None:
            raise ValueError("this network has a time embedding: call it as network(x, t), t in [0, 1]")
        embedding = self.time_embedding(times_for_batch(t, x.shape[0], x.device))
        return lambda s, out: self.modulations[s](out, embedding)

    def output_scales(self) -> list[list[float]]:
        """Per deep-supervision output, its size relative to the input per axis ([1,1,1], [0.5,0.5,0.5], ...)."""
        scales = []
        factor = [1.0] * self.dims
        for s in range(len(self.decoder)):
            if s > 0:
                factor = [f / st for f, st in zip(factor, self.strides[s])]
            scales.append(list(factor))
        return scales


def _full_precision(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A regression head computed in float32 even under autocast: its output is the prediction itself, and
    bfloat16 would round it to 3 significant digits."""
    if x.device.type != "cuda":
        return head(x)
    with torch.autocast(device_type="cuda", enabled=False):
        return head(x.float())


def initialize_without_normalization(network: nn.Module) -> None:
    """He initialization for leaky ReLU (fan-in) and zero biases: keeps activation variance constant through
    depth when no normalization layer rescales it (He et al., ICCV 2015)."""
    from autosr.network.blocks import LEAKY_RELU_SLOPE

    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=LEAKY_RELU_SLOPE, nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class PlainConvUNet(DynamicUNet):
    """Encoder stages of plain ConvNormAct layers (the first strided)."""

    def __init__(self, **kwargs: Any):
        super().__init__(residual_encoder=False, **kwargs)


class ResEncUNet(DynamicUNet):
    """Encoder stages of residual blocks; `n_conv_per_stage[s]` counts blocks (two convs each)."""

    def __init__(self, **kwargs: Any):
        super().__init__(residual_encoder=True, **kwargs)


ARCHITECTURES: dict[str, type[DynamicUNet]] = {"PlainConvUNet": PlainConvUNet, "ResEncUNet": ResEncUNet}

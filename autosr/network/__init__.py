"""Dynamic U-Net for regression, built from a plan's `network` dict (`build_network`)."""

from autosr.network.build import DEFAULT_UPSAMPLING, build_network, total_stride
from autosr.network.memory import activation_memory, parameter_count
from autosr.network.unet import ARCHITECTURES, DynamicUNet, PlainConvUNet, ResEncUNet

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_UPSAMPLING",
    "DynamicUNet",
    "PlainConvUNet",
    "ResEncUNet",
    "activation_memory",
    "build_network",
    "parameter_count",
    "total_stride",
]

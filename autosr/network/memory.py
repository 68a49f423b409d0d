"""Count what a network costs in memory, by running it: parameters and training activations.

The planner estimates VRAM from a formula; these functions measure the same quantities on the real module
(on any device, CPU included) so the formula can be checked. Activation bytes are counted two ways:

- `saved_for_backward_bytes`: the unique tensors autograd keeps for the backward pass (what a training
  step actually holds between forward and backward), deduplicated by storage;
- `module_output_bytes`: the sum of every leaf module's output (in-place activations excluded, since they
  reuse their input's memory) - the quantity simple per-layer memory models add up.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def activation_memory(
    network: nn.Module,
    input_shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, int]:
    """Bytes of activations for one training forward pass on a zero input of `input_shape` (N, C, *spatial).

    Returns `saved_for_backward_bytes`, `module_output_bytes`, `parameter_bytes`, `input_bytes`.
    With `dtype` float16/bfloat16 the pass runs under autocast on `device` (convolutions in half precision).
    """
    network = network.to(device)
    x = torch.zeros(tuple(input_shape), device=device, requires_grad=False)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    module_bytes = [0]

    def hook(module: nn.Module, inputs, output) -> None:
        if getattr(module, "inplace", False):
            return
        outs = output if isinstance(output, (list, tuple)) else [output]
        for o in outs:
            if isinstance(o, torch.Tensor):
                module_bytes[0] += o.numel() * o.element_size()

    handles = [m.register_forward_hook(hook) for m in network.modules() if len(list(m.children())) == 0]
    was_training = network.training
    network.train()
    try:
        autocast = dtype in (torch.float16, torch.bfloat16)
        device_type = torch.device(device).type
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast(device_type=device_type, dtype=dtype, enabled=autocast):
                out = network(x)
        del out
    finally:
        for h in handles:
            h.remove()
        network.train(was_training)
    param_ptrs = {p.untyped_storage().data_ptr() for p in network.parameters()}
    saved = sum(n for ptr, n in seen.items() if ptr not in param_ptrs and ptr != x.untyped_storage().data_ptr())
    return {
        "saved_for_backward_bytes": int(saved),
        "module_output_bytes": int(module_bytes[0]),
        "parameter_bytes": int(sum(p.numel() * p.element_size() for p in network.parameters())),
        "input_bytes": int(x.numel() * x.element_size()),
    }

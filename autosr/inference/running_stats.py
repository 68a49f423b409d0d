"""Mean and standard deviation over ensemble members, one member at a time (Welford's algorithm).

Uncertainty is the per-voxel spread of the members (folds x mirrorings). Keeping every member of a 1 mm
brain (8.7 M voxels x 40 members) would need 1.4 GB; Welford's running mean and sum of squared deviations
(M2) need two volumes whatever the number of members, and are numerically stable where the naive
sum-of-squares formula cancels catastrophically for members that agree closely.
"""

from __future__ import annotations

import torch


class RunningMeanStd:
    """Running mean (and optionally M2) of equally shaped tensors, accumulated in float32.

    The standard deviation is the population one (divided by the number of members, not members - 1):
    the members are the whole ensemble that produced the prediction, not a sample of a larger one.
    """

    def __init__(self, track_spread: bool = True):
        self.track_spread = track_spread
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, member: torch.Tensor) -> None:
        """Add one member. The tensor is consumed: it may be overwritten to save a temporary volume."""
        member = member.float()
        self.count += 1
        if self.mean is None:
            self.mean = member.clone()
            if self.track_spread:
                self.m2 = torch.zeros_like(member)
            return
        delta = member - self.mean
        self.mean.add_(delta, alpha=1.0 / self.count)
        if self.track_spread:
            member.sub_(self.mean)  # member - new mean, computed in place
            self.m2.addcmul_(delta, member)

    def std(self) -> torch.Tensor:
        """Per-element population standard deviation of the members seen so far."""
        if not self.track_spread:
            raise RuntimeError("this RunningMeanStd was created with track_spread=False")
        if self.m2 is None:
            raise RuntimeError("no members were added")
        return torch.sqrt(torch.clamp(self.m2 / self.count, min=0.0))

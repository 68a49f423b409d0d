"""Least-squares GAN losses (Mao et al., 2017, "Least Squares Generative Adversarial Networks").

The discriminator regresses real patches to 1 and generated ones to 0; the generator pushes its patches'
scores to 1. Least squares give gradients that do not vanish when the discriminator is confident, which
makes training steadier than the original log-loss.
"""

from __future__ import annotations

import torch


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_scores.float() - 1) ** 2).mean() + 0.5 * (fake_scores.float() ** 2).mean()


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake_scores.float() - 1) ** 2).mean()

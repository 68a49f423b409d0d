"""The adversarial trainer: the planned U-Net as generator, a conditional patch discriminator beside it."""

"""The diffusion trainer: the planned U-Net with a timestep input, trained by conditional flow matching."""

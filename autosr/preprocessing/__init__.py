"""Turning raw cases into network-ready arrays (resample, crop, normalize) and back."""

"""autosr: self-configuring paired image-to-image translation for 3D medical volumes."""

__version__ = "0.1.0"

"""nada-sweep: StyleGAN-NADA domain adaptation swept over many text-described domains."""

__version__ = "0.1.0"

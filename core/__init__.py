"""SANA-Video Studio runtime: Qt-free model, engine, samplers, VAE, projects and export."""

__version__ = "0.1.0"

"""cmmd: contrastive multi-modal diffusion for bidirectional video <-> audio generation."""

__version__ = "0.1.0"

"""CPE: Concept Pinpoint Eraser — residual attention gates for concept erasure in diffusion models."""

__version__ = "0.1.0"

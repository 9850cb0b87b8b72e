"""The paper's metrics (method.md §5): CLIP score, FID/KID, NudeNet, GIPHY celebrity detector adapter, tables.

Every metric reads a generation manifest (``cpe.generation.manifest``); ``python -m cpe.metrics.evaluate`` runs a
domain.
"""

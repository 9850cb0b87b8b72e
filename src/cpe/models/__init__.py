"""Model loading from a hub id or a local folder (``loading``: pipelines, text side, cross-attention weights) and
the tiny, SD-shaped models built offline for tests and benchmarks (``zoo``).
"""

"""Small utilities every stage uses: atomic file I/O and locks (``io``), safe names and paths (``names``),
the one config mechanism both configs use (``config``: OmegaConf structured configs, one-line errors).
"""

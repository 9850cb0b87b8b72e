"""Generation (method.md §4): the config (``config``), the run over a prompt CSV (``run``, ``prompt_csv``), one
setting per folder (``folder``), the manifest (``manifest``), comparison grids (``grid``) and SDXL's pooled
text embedding under erasure (``pooled``).
"""

"""The method's math and its files: the Residual Attention Gate (``resag``), its attachment to a UNet's
cross-attention projections (``network``), and gate files, ours and the authors' released ones (``weights``).
"""

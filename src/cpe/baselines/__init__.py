"""Baselines beside CPE that produce their own edits from the same training configs: UCE (``uce``, closed-form
edit of the cross-attention K/V weights) and ESD-x (``esd``, the cross-attention fine-tuned with negative guidance).
"""

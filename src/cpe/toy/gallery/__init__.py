"""The gallery: a second embedded toy world with the paper's three domains, measurable offline.

* identities (the celebrity analogue, ``identities``): 60 invented names of 2-4 CLIP BPE tokens, each a figure
  with fixed hair, face and shirt colours; "a person" is any of them;
* styles (the artist analogue, ``styles``): 32 invented artists, each a dim background pattern in a tint,
  drawn under any content;
* the mark (the explicit analogue, ``marks``): white plus signs drawn for 4 erase words and 12 other triggers.

``read`` holds the rule readers (identity with "no identity", style, mark count), ``prompts`` the prompt sets
(celebrity and artist templates, the I2P and COCO analogues), ``build`` the resumable builder and ``quality``
the model's scores on prompts. A trained model ships in ``GALLERY_MODEL_DIR`` once it meets the quality bars.
"""

from __future__ import annotations

from pathlib import Path

GALLERY_ASSETS = Path(__file__).parent / "assets"
GALLERY_MODEL_DIR = GALLERY_ASSETS / "pipeline"

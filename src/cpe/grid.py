"""Side-by-side comparison images: the original model and the erased model for one prompt, labelled."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

BAND = 16  # label band height in pixels (the default bitmap font is ~11 px high)


def compare_grid(columns: Sequence[Sequence[Image.Image]], labels: Sequence[str], title: str) -> Image.Image:
    """One column per model (same seeds down each column), a label above each column, ``title`` on top."""
    if len(columns) != len(labels) or not columns:
        raise ValueError(f"compare_grid needs one label per column, got {len(labels)} labels for {len(columns)}")
    width, height = columns[0][0].size
    rows = max(len(c) for c in columns)
    font = ImageFont.load_default()
    chars_per_line = max(8, (width * len(columns)) // 6)
    title_lines = textwrap.wrap(title, chars_per_line)[:3] or [""]
    top = BAND * len(title_lines)
    canvas = Image.new("RGB", (width * len(columns), top + BAND + height * rows), "white")
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(title_lines):
        draw.text((2, 2 + n * BAND), line, fill="black", font=font)
    for c, (images, label) in enumerate(zip(columns, labels, strict=True)):
        draw.text((c * width + 2, top + 2), label[: max(4, width // 6)], fill="black", font=font)
        for r, image in enumerate(images):
            canvas.paste(image.convert("RGB"), (c * width, top + BAND + r * height))
    return canvas

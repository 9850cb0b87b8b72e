"""Side-by-side comparison images: the original model and the erased model for one prompt, labelled."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

MIN_FONT = 11  # pixels; grows with the image width (16 px for 512-pixel images)


def compare_grid(columns: Sequence[Sequence[Image.Image]], labels: Sequence[str], title: str) -> Image.Image:
    """One column per model (same seeds down each column), a label above each column, ``title`` on top."""
    if len(columns) != len(labels) or not columns:
        raise ValueError(f"compare_grid needs one label per column, got {len(labels)} labels for {len(columns)}")
    width, height = columns[0][0].size
    rows = max(len(c) for c in columns)
    size = max(MIN_FONT, width // 32)
    font = ImageFont.load_default(size=size)
    band = size + 5
    char_width = 0.6 * size
    title_lines = textwrap.wrap(title, max(8, int(width * len(columns) / char_width)))[:3] or [""]
    top = band * len(title_lines)
    canvas = Image.new("RGB", (width * len(columns), top + band + height * rows), "white")
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(title_lines):
        draw.text((2, 2 + n * band), line, fill="black", font=font)
    for c, (images, label) in enumerate(zip(columns, labels, strict=True)):
        draw.text((c * width + 2, top + 2), label[: max(4, int(width / char_width))], fill="black", font=font)
        for r, image in enumerate(images):
            canvas.paste(image.convert("RGB"), (c * width, top + band + r * height))
    return canvas

"""Side-by-side comparison images: one labelled group of images per model (same seeds in the same places).

``generate.py --grid`` puts each model in a column (the prompt as title); the toy metrics put each model in a
row, one column per prompt, with small images enlarged.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

MIN_FONT = 11  # pixels; grows with the image width (16 px for 512-pixel images)


def compare_grid(
    groups: Sequence[Sequence[Image.Image]],
    labels: Sequence[str],
    title: str = "",
    *,
    layout: Literal["columns", "rows"] = "columns",
    scale: int = 1,
    gap: int = 0,
) -> Image.Image:
    """One group per model, each with its label: a column labelled above (``layout="columns"``) or a row labelled
    at the left (``"rows"``); ``title`` (wrapped, at most 3 lines) on top, ``scale`` enlarges every image
    (nearest neighbour) and ``gap`` pixels separate the groups."""
    if len(groups) != len(labels) or not groups or not all(groups):
        raise ValueError(f"compare_grid needs one label per non-empty group, got {len(labels)} for {len(groups)}")
    width, height = (side * scale for side in groups[0][0].size)
    length = max(len(g) for g in groups)
    size = max(MIN_FONT, width // 32)
    font = ImageFont.load_default(size=size)
    band, char_width = size + 5, 0.6 * size
    spread = (width + gap) * (len(groups) if layout == "columns" else length) - gap
    title_lines = textwrap.wrap(title, max(8, int(spread / char_width)))[:3] if title else []
    top = band * len(title_lines)
    if layout == "columns":
        label_at = [(c * (width + gap) + 2, top + 2) for c in range(len(groups))]
        top += band
        canvas_size = (spread, top + height * length)
        place = [[(c * (width + gap), top + r * height) for r in range(length)] for c in range(len(groups))]
        label_chars = max(4, int(width / char_width))
    elif layout == "rows":
        margin = int(char_width * max(len(label) for label in labels)) + 6
        label_at = [(4, top + r * (height + gap) + (height - size) // 2) for r in range(len(groups))]
        canvas_size = (margin + spread, top + (height + gap) * len(groups) - gap)
        place = [[(margin + c * width, top + r * (height + gap)) for c in range(length)] for r in range(len(groups))]
        label_chars = max(len(label) for label in labels)
    else:
        raise ValueError(f"layout must be 'columns' or 'rows', got {layout!r}")
    canvas = Image.new("RGB", canvas_size, "white")
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(title_lines):
        draw.text((2, 2 + n * band), line, fill="black", font=font)
    for images, label, at, positions in zip(groups, labels, label_at, place, strict=True):
        draw.text(at, label[:label_chars], fill="black", font=font)
        for image, position in zip(images, positions):
            tile = image.convert("RGB")
            if scale != 1:
                tile = tile.resize((width, height), Image.Resampling.NEAREST)
            canvas.paste(tile, position)
    return canvas

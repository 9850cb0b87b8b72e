"""A prompt's gate map as a PNG: a row per position, a column per eraser, each cell coloured by that eraser's gate.

BOS and EOS are labelled in blue, padding rows sit below a thick line with grey labels, and the merged winner
of every token (the eraser whose residual generation adds there) is framed in red.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from cpe.inspect.gates import BOS, EOS, PromptGates, shown_erasers

CELL = (44, 16)  # width, height of one cell in pixels
FONT = 11
SEPARATOR = 4  # pixels of the line between the real positions and the padding
_CHAR = 0.62 * FONT
_STOPS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis, 0 -> 1
_SPECIAL, _PADDING, _WINNER = (20, 70, 200), (150, 150, 150), (230, 30, 30)


def colour(value: float) -> tuple[int, int, int]:
    """The colour of a gate value in [0, 1] (viridis, piecewise linear between five stops)."""
    x = min(max(value, 0.0), 1.0) * (len(_STOPS) - 1)
    i = min(int(x), len(_STOPS) - 2)
    f = x - i
    return tuple(round(a + f * (b - a)) for a, b in zip(_STOPS[i], _STOPS[i + 1], strict=True))


def _vertical(text: str, font, height: int) -> Image.Image:
    """``text`` written bottom to top in a strip ``height`` pixels tall."""
    strip = Image.new("RGB", (height, FONT + 4), "white")
    ImageDraw.Draw(strip).text((2, 1), text[: int(height / _CHAR)], fill="black", font=font)
    return strip.rotate(90, expand=True)


def gate_heatmap(row: PromptGates, names: Sequence[str], max_erasers: int | None = 12) -> Image.Image:
    """The gate map of one prompt (the erasers of :func:`cpe.inspect.gates.shown_erasers`)."""
    font = ImageFont.load_default(size=FONT)
    shown = shown_erasers(row, max_erasers)
    positions = len(row.tokens)
    label_width = int(_CHAR * (max(len(label) for label in row.tokens) + 4)) + 8
    head = int(_CHAR * min(24, max(len(names[n]) for n in shown))) + 8
    columns = label_width + CELL[0] * len(shown)
    title = textwrap.wrap(row.prompt, max(20, int(columns / _CHAR)))[:2]
    top = (FONT + 5) * len(title) + head + 4
    grid_height = CELL[1] * positions + (SEPARATOR if row.real < positions else 0)
    legend = 3 * (FONT + 5) + 4
    image = Image.new("RGB", (max(columns, 330), top + grid_height + legend), "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(title):
        draw.text((2, 2 + n * (FONT + 5)), line, fill="black", font=font)
    for c, n in enumerate(shown):
        x = label_width + c * CELL[0] + (CELL[0] - FONT) // 2 - 2
        image.paste(_vertical(names[n], font, head), (x, top - head))

    def row_top(t: int) -> int:
        return top + t * CELL[1] + (SEPARATOR if t >= row.real else 0)

    for t, label in enumerate(row.tokens):
        y = row_top(t)
        fill = _PADDING if t >= row.real else _SPECIAL if label in (BOS, EOS) else "black"
        number = str(t)
        draw.text((4 + draw.textlength("00", font=font) - draw.textlength(number, font=font), y + 2), number,
                  fill=fill, font=font)
        draw.text((8 + 3 * _CHAR, y + 2), label, fill=fill, font=font)
        for c, n in enumerate(shown):
            value = float(row.gates[n, t])
            x = label_width + c * CELL[0]
            draw.rectangle((x, y, x + CELL[0] - 1, y + CELL[1] - 1), fill=colour(value))
            draw.text((x + 6, y + 2), f"{value:.2f}", fill="white" if value < 0.6 else "black", font=font)
            if n == int(row.winner[t]):
                draw.rectangle((x, y, x + CELL[0] - 1, y + CELL[1] - 1), outline=_WINNER, width=2)
    if row.real < positions:
        y = row_top(row.real) - SEPARATOR
        draw.rectangle((0, y, columns - 1, y + SEPARATOR - 2), fill="black")
    y = top + grid_height + 4
    for i in range(200):
        draw.line((4 + i, y, 4 + i, y + FONT), fill=colour(i / 199))
    draw.text((210, y), "gate 0 -> 1", fill="black", font=font)
    notes = ("red frame: the merged winner of the token", "below the line (grey): padding; blue: BOS/EOS")
    for n, note in enumerate(notes, 1):
        draw.text((4, y + n * (FONT + 5)), note, fill="black", font=font)
    return image

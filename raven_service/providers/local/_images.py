"""Pillow rendering for the local image model (and the backgrounds of local videos).

An image is a gradient background, a few translucent shapes and the prompt written on a band
at the bottom. Everything is drawn from a `random.Random` seeded by (prompt, seed, index), so
the same request renders the same pixels. These functions are CPU-bound and synchronous: call
them through `asyncio.to_thread`.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_png", "render_scene", "scene_rng"]

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_RGB = tuple[int, int, int]


def scene_rng(prompt: str, seed: int, index: int = 0) -> random.Random:
    """The generator behind one picture; stable across processes (no `hash()`)."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return random.Random(f"{seed}:{index}:{digest}")


@functools.lru_cache(maxsize=16)
def font(size: int) -> _Font:
    """Pillow's built-in font at `size` pixels (the bitmap font if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


def _color(rng: random.Random, saturation: float, value: float) -> _RGB:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def gradient(rng: random.Random, width: int, height: int) -> Image.Image:
    """A two-colour linear (vertical or horizontal) or radial gradient."""
    start, end = _color(rng, 0.55, 0.95), _color(rng, 0.7, 0.35)
    kind = rng.choice(("vertical", "horizontal", "radial"))
    if kind == "radial":
        mask = Image.radial_gradient("L")
    else:
        mask = Image.linear_gradient("L")
        if kind == "horizontal":
            mask = mask.transpose(Image.Transpose.ROTATE_90)
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", (width, height), end), Image.new("RGB", (width, height), start), mask)


def draw_shapes(image: Image.Image, rng: random.Random, count: int) -> None:
    """Draws `count` translucent ellipses, rectangles and triangles."""
    width, height = image.size
    draw = ImageDraw.Draw(image, "RGBA")
    scale = min(width, height)
    for _ in range(count):
        fill = (*_color(rng, 0.8, 0.9), rng.randint(110, 200))
        size = rng.uniform(0.12, 0.4) * scale
        x, y = rng.uniform(0, width), rng.uniform(0, height * 0.8)
        shape = rng.choice(("ellipse", "rectangle", "triangle"))
        if shape == "ellipse":
            draw.ellipse((x - size / 2, y - size / 2, x + size / 2, y + size / 2), fill=fill)
        elif shape == "rectangle":
            draw.rectangle((x - size / 2, y - size / 3, x + size / 2, y + size / 3), fill=fill)
        else:
            draw.polygon([(x, y - size / 2), (x + size / 2, y + size / 2), (x - size / 2, y + size / 2)], fill=fill)


def wrap(text: str, face: _Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap by rendered width; the last line ends with "..." when text is left over."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if face.getlength(candidate) <= max_width or not current:
            current = candidate
            continue
        lines.append(current)
        current = word
        if len(lines) == max_lines:
            break
    if current and len(lines) < max_lines:
        lines.append(current)
    elif lines and current:
        lines[-1] = lines[-1].rstrip(".") + "..."
    return lines


def draw_caption(image: Image.Image, text: str, *, top: bool = False, max_lines: int = 3) -> None:
    """Writes `text` in white on a dark translucent band at the bottom (or top) of `image`."""
    width, height = image.size
    size = max(10, min(width, height) // 16)
    face = font(size)
    lines = wrap(text, face, width - 2 * size, max_lines) if text.strip() else []
    if not lines:
        return
    line_height = int(size * 1.3)
    band = line_height * len(lines) + size // 2
    y0 = 0 if top else height - band
    draw = ImageDraw.Draw(image, "RGBA")
    draw.rectangle((0, y0, width, y0 + band), fill=(0, 0, 0, 140))
    for i, line in enumerate(lines):
        draw.text((size, y0 + size // 4 + i * line_height), line, font=face, fill=(255, 255, 255, 255))


def render_scene(
    prompt: str, seed: int, index: int, width: int, height: int, *, caption: bool = True
) -> Image.Image:
    """The picture for (prompt, seed, index) at exactly width x height."""
    rng = scene_rng(prompt, seed, index)
    image = gradient(rng, width, height)
    draw_shapes(image, rng, rng.randint(4, 8))
    if caption:
        draw_caption(image, prompt)
    return image


def render_png(prompt: str, seed: int, index: int, width: int, height: int) -> bytes:
    """`render_scene` encoded as PNG."""
    buffer = io.BytesIO()
    render_scene(prompt, seed, index, width, height).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()

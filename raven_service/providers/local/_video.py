"""MP4 rendering for the local video model: H.264 (libx264, yuv420p) through PyAV.

Frames show the background (a rendered scene, or the caller's image for image-to-video),
shapes moving across it, the prompt and a frame counter. `encode_video` is synchronous and
CPU-bound: run it in a thread. It checks `cancel` between frames and reports progress as a
fraction through `on_progress`.
"""

from __future__ import annotations

import io
import math
import os
import random
import tempfile
import threading
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageOps

from raven_service.providers.local._images import draw_caption, font, render_scene, scene_rng

__all__ = ["FPS", "VideoCancelled", "encode_video", "even_size"]

FPS = 12
_CODEC_OPTIONS = {"preset": "ultrafast", "crf": "26"}


class VideoCancelled(Exception):
    """The job was cancelled while encoding."""


#: Input images larger than this are refused before Pillow decodes them (SPEC §10: 40 megapixels).
_MAX_INPUT_PIXELS = 40_000_000


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 in yuv420p needs even dimensions: rounds each down to an even number (at least 2)."""
    return max(2, width - width % 2), max(2, height - height % 2)


def _background(prompt: str, seed: int, width: int, height: int, image: bytes | None) -> Image.Image:
    if image is not None:
        with Image.open(io.BytesIO(image)) as source:
            if source.size[0] * source.size[1] > _MAX_INPUT_PIXELS:  # checked before decoding (SPEC §10)
                raise ValueError(f"input image too large: {source.size[0]}x{source.size[1]} pixels")
            first = ImageOps.exif_transpose(source).convert("RGB")
        return ImageOps.fit(first, (width, height), Image.Resampling.LANCZOS)
    return render_scene(prompt, seed, 0, width, height, caption=False)


class _Sprite:
    """A disc moving along a Lissajous path."""

    def __init__(self, rng: random.Random, width: int, height: int) -> None:
        self.radius = rng.uniform(0.05, 0.12) * min(width, height)
        self.fx, self.fy = rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7)
        self.phase = rng.uniform(0, math.tau)
        self.color = (rng.randint(60, 255), rng.randint(60, 255), rng.randint(60, 255), 210)
        self.width, self.height = width, height

    def box(self, t: float) -> tuple[float, float, float, float]:
        cx = (0.5 + 0.4 * math.sin(math.tau * self.fx * t + self.phase)) * self.width
        cy = (0.45 + 0.3 * math.cos(math.tau * self.fy * t + self.phase)) * self.height
        return cx - self.radius, cy - self.radius, cx + self.radius, cy + self.radius


def encode_video(
    prompt: str,
    seconds: int,
    width: int,
    height: int,
    seed: int,
    image: bytes | None = None,
    *,
    on_progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> bytes:
    """Renders and encodes the clip; returns the MP4 bytes (moov atom first, "faststart")."""
    width, height = even_size(width, height)
    total = max(1, seconds) * FPS
    rng = scene_rng(prompt, seed, 1)
    base = _background(prompt, seed, width, height, image)
    draw_caption(base, prompt, top=True, max_lines=2)
    sprites = [_Sprite(rng, width, height) for _ in range(3)]
    counter_size = max(10, min(width, height) // 20)
    counter_font = font(counter_size)

    import av  # lazy: PyAV (FFmpeg) costs ~0.13 s of every start-up, for the local simulator's videos only

    with tempfile.TemporaryDirectory(prefix="raven-video-") as folder:
        path = os.path.join(folder, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=FPS, options=_CODEC_OPTIONS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(total):
                if cancel is not None and cancel.is_set():
                    raise VideoCancelled("video encoding cancelled")
                frame = base.copy()
                draw = ImageDraw.Draw(frame, "RGBA")
                t = index / FPS
                for sprite in sprites:
                    draw.ellipse(sprite.box(t), fill=sprite.color)
                bar = round((index + 1) / total * width)
                draw.rectangle((0, height - 6, bar, height), fill=(255, 255, 255, 200))
                label = f"frame {index + 1}/{total}  {t:.2f}s"
                draw.text((8, height - 12 - counter_size), label, font=counter_font,
                          fill=(255, 255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0, 255))
                for packet in stream.encode(av.VideoFrame.from_image(frame)):
                    container.mux(packet)
                if on_progress is not None:
                    on_progress((index + 1) / total)
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as handle:
            return handle.read()

"""Deterministic embeddings for the `local` simulator (model ``raven/local-embed``).

A text becomes a bag of hashed features (its lower-cased word tokens and word bigrams), each
hashed (BLAKE2b) to one of `dims` buckets with a sign, summed and L2-normalised: the same input
always gives the same vector, texts sharing words point in similar directions (so cosine
similarity ranks related texts higher, enough to exercise a RAG pipeline), and every vector has
unit length. Token-id arrays hash their ids the same way.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Sequence

__all__ = ["DEFAULT_DIMENSIONS", "MAX_DIMENSIONS", "embed_text", "embed_tokens"]

DEFAULT_DIMENSIONS = 384
MAX_DIMENSIONS = 3072
_WORD = re.compile(r"\w+", re.UNICODE)


def _features(words: Sequence[str]) -> Iterable[tuple[str, float]]:
    for w in words:
        yield "w:" + w, 1.0
    for a, b in itertools.pairwise(words):
        yield f"b:{a} {b}", 0.5


def _vector(features: Iterable[tuple[str, float]], dims: int) -> tuple[float, ...]:
    acc = [0.0] * dims
    for feature, weight in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        n = int.from_bytes(digest, "little")
        acc[n % dims] += weight if (n >> 63) & 1 else -weight
    norm = math.sqrt(sum(x * x for x in acc))
    if norm == 0.0:  # no features at all (e.g. only punctuation): a fixed unit vector
        acc[0], norm = 1.0, 1.0
    return tuple(x / norm for x in acc)


def embed_text(text: str, dims: int = DEFAULT_DIMENSIONS) -> tuple[float, ...]:
    words = _WORD.findall(text.lower())
    return _vector(_features(words), dims)


def embed_tokens(tokens: Sequence[int], dims: int = DEFAULT_DIMENSIONS) -> tuple[float, ...]:
    return _vector(_features([str(t) for t in tokens]), dims)

"""Deterministic text embeddings by feature hashing, so texts that share words are close.

Each content word (lower-cased, stop words dropped) is hashed with BLAKE2b: the hash picks a
dimension and a sign, and adds ``1 + ln(tf)`` there. The vector is then L2-normalised, so the cosine
similarity of two texts grows with the (weighted) words they share; unrelated texts are near 0.
Stable across processes and machines (no ``hash()`` randomisation), unlike a real model but good
enough for vector search results that make sense.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections import Counter

from ._text import content_words, tokens

__all__ = ["DEFAULT_DIMENSIONS", "embed", "encode_base64"]

DEFAULT_DIMENSIONS = 384


def _slot(word: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return (value >> 1) % dimensions, (1.0 if value & 1 else -1.0)


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit vector for ``text``. A text of stop words only falls back to all its words, and one
    without any word to its raw characters, so every non-empty input gets a non-zero vector."""
    words = content_words(text) or tokens(text) or [text.strip() or text]
    vector = [0.0] * dimensions
    for word, tf in Counter(words).items():
        index, sign = _slot(word, dimensions)
        vector[index] += sign * (1.0 + math.log(tf))
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # every word cancelled out by sign collisions: rare, keep it a unit vector
        vector[_slot(text, dimensions)[0]] = 1.0
        return vector
    return [v / norm for v in vector]


def encode_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: "base64"``: little-endian float32 values, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

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
from functools import lru_cache

from ._text import content_words, tokens

__all__ = ["DEFAULT_DIMENSIONS", "embed", "encode_base64"]

DEFAULT_DIMENSIONS = 384


# Words recur across texts (a vocabulary of a few thousand), so their slots are kept; long "words"
# (a text without any) are hashed each time rather than held by the cache.
_SLOT_CACHE_SIZE = 16384
_SLOT_CACHE_MAX_CHARS = 64


def _slot(word: str, dimensions: int) -> tuple[int, float]:
    if len(word) <= _SLOT_CACHE_MAX_CHARS:
        return _cached_slot(word, dimensions)
    return _hashed_slot(word, dimensions)


def _hashed_slot(word: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return (value >> 1) % dimensions, (1.0 if value & 1 else -1.0)


_cached_slot = lru_cache(maxsize=_SLOT_CACHE_SIZE)(_hashed_slot)


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit vector for ``text``. A text of stop words only falls back to all its words, and one
    without any word to its raw characters, so every non-empty input gets a non-zero vector."""
    words = content_words(text) or tokens(text) or [text.strip() or text]
    # A text touches a few dozen of the hundreds of dimensions: add up only those, then lay them out.
    # Summed in index order, the norm is the full vector's to the bit (adding 0.0 changes nothing).
    slots: dict[int, float] = {}
    for word, tf in Counter(words).items():
        index, sign = _slot(word, dimensions)
        slots[index] = slots.get(index, 0.0) + sign * (1.0 + math.log(tf))
    norm = math.sqrt(sum([slots[i] * slots[i] for i in sorted(slots)]))
    vector = [0.0] * dimensions
    if norm == 0.0:  # every word cancelled out by sign collisions: rare, keep it a unit vector
        vector[_slot(text, dimensions)[0]] = 1.0
        return vector
    for index, value in slots.items():
        vector[index] = value / norm
    return vector


def encode_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: "base64"``: little-endian float32 values, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

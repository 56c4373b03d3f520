"""An embedding vector in each form it takes between the provider and PostgreSQL.

* the provider's answer: a JSON list of numbers, or base64 little-endian float32 (`decode_embedding`);
* in memory: ``array("f")``, float32 as pgvector stores it, one object instead of a float each;
* pgvector's binary form, for an asyncpg codec (`encode_vector`, `decode_vector`: ingest's writes);
* pgvector's text form, for a query parameter sent as text (`vector_literal`: online's searches).

`EMBEDDING_DIMENSIONS` is the width of ``chunks.embedding`` (migrations/0002_chunks.sql).
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence

from pgvector import Vector

__all__ = ["EMBEDDING_DIMENSIONS", "decode_embedding", "decode_vector", "encode_vector", "vector_literal"]

EMBEDDING_DIMENSIONS = 384


def decode_embedding(embedding: object) -> array[float]:
    """One embedding of a provider's answer as float32: base64 (``encoding_format: "base64"``,
    little-endian float32) or a plain JSON list (providers that ignore ``encoding_format``).

    Raises ValueError or TypeError when it is neither (the conversion is also the type check).
    """
    if isinstance(embedding, list):
        return array("f", embedding)
    if not isinstance(embedding, str):
        raise TypeError(f"embedding is a {type(embedding).__name__}")
    values = array("f", base64.b64decode(embedding, validate=True))
    if sys.byteorder != "little":
        values.byteswap()
    return values


def encode_vector(value: Sequence[float] | bytes) -> bytes:
    """A vector in pgvector's binary format (the ``pgvector`` package's codec). ``bytes`` are taken
    as already encoded, so a batch can be packed before it crosses into the database task."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return Vector(value if isinstance(value, list) else list(value)).to_binary()


def decode_vector(data: bytes) -> list[float]:
    """A vector from pgvector's binary format."""
    return Vector.from_binary(data).to_list()


_LITERAL_FORMATS: dict[int, str] = {}


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, for a parameter cast with ``$n::text::vector``: no codec has to be
    registered on the connection.

    Seven significant digits are what a float32 holds. One ``%`` format per width (cached) costs
    a third of formatting each number apart, on the path of every search.
    """
    width = len(vector)
    template = _LITERAL_FORMATS.get(width)
    if template is None:
        template = _LITERAL_FORMATS.setdefault(width, "[" + ",".join(["%.7g"] * width) + "]")
    return template % tuple(vector)

"""An embedding's forms: the provider's answer, pgvector's binary and text forms."""

from __future__ import annotations

import base64
import math
import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st
from providers import decode_embedding, decode_vector, encode_vector, vector_literal

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.lists(float32s, min_size=1, max_size=64))
def test_the_binary_form_round_trips_and_is_pgvectors_layout(values: list[float]) -> None:
    encoded = encode_vector(values)
    # pgvector's vector_send: int16 dimensions, int16 unused (0), then big-endian float4s
    assert encoded == struct.pack(f">HH{len(values)}f", len(values), 0, *values)
    assert decode_vector(encoded) == values
    assert encode_vector(array("f", values)) == encoded == encode_vector(encoded)


@given(st.lists(float32s, min_size=1, max_size=16))
def test_the_text_form_keeps_seven_significant_digits(values: list[float]) -> None:
    literal = vector_literal(values)
    assert literal.startswith("[") and literal.endswith("]")
    parsed = [float(x) for x in literal[1:-1].split(",")]
    assert all(math.isclose(p, v, rel_tol=1e-6) for p, v in zip(parsed, values, strict=True))


def test_a_providers_embedding_decodes_from_base64_or_a_list() -> None:
    encoded = base64.b64encode(struct.pack("<3f", 0.5, -2.0, 1e-3)).decode()
    assert decode_embedding(encoded) == decode_embedding([0.5, -2.0, 1e-3]) == array("f", [0.5, -2.0, 1e-3])
    for bad in ({"x": 1}, ["a"], "%%%"):
        with pytest.raises((TypeError, ValueError)):
            decode_embedding(bad)

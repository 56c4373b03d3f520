"""Splitting a document into overlapping chunks of tokens, the unit that gets embedded and searched.

Tokens are runs of non-space characters: close enough to a model tokenizer for sizing chunks, with no
model to download, and deterministic — the same text and settings always give the same chunks, which
is what lets a reclaimed job reuse the chunks its predecessor already embedded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["ChunkingConfig", "chunk_digest", "split_into_chunks"]

_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 200
    overlap_tokens: int = 40
    max_chunks: int = 5000  # a document beyond this is refused as a bad document, not retried

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        if not (0 <= self.overlap_tokens < self.chunk_tokens):
            raise ValueError("overlap_tokens must be >= 0 and smaller than chunk_tokens")


def split_into_chunks(text: str, config: ChunkingConfig) -> list[str]:
    """Windows of ``chunk_tokens`` tokens, each starting ``chunk_tokens - overlap_tokens`` after the
    previous one; the last window ends at the last token. Empty text gives no chunks."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return []
    step = config.chunk_tokens - config.overlap_tokens
    chunks = []
    start = 0
    while True:
        end = min(start + config.chunk_tokens, len(tokens))
        chunks.append(" ".join(tokens[start:end]))
        if end == len(tokens):
            return chunks
        start += step


def chunk_digest(content: str) -> str:
    """The digest ``start_chunks`` compares with PostgreSQL's ``md5(content)``."""
    return hashlib.md5(content.encode()).hexdigest()

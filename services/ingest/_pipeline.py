"""One omniRAG job, start to finish: fetch (url jobs) -> chunk -> embed in batches -> stage -> complete.

Embedding runs in parallel within two bounds: ``embed_parallelism`` batches per job, and the process's
embed limiter shared by all jobs (sized from the toolkit's embed budget, so the worker queues its own
work instead of meeting the gate's fast rejection). A process-wide ``CallSpacer`` spreads the starts
of those calls over the call latency, so they reach the provider evenly rather than as a burst. Each staged batch is a fenced write; the completion
replaces the document's chunks in one transaction (see ``_queue.complete_job``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import floodgate
import structlog
import trio
from providers import FetchedDocument

from . import _queue as q
from ._chunking import ChunkingConfig, chunk_digest, split_into_chunks
from ._db import Database
from ._errors import BadDocument, LeaseLost
from ._timing import CallSpacer

__all__ = ["INGEST_ENDPOINT", "DocumentFetcher", "JobPipeline", "PipelineConfig", "TextEmbedder"]

log = structlog.get_logger("ingest.pipeline")

#: What the worker's provider calls are made for: the endpoint label of the tokens they use.
INGEST_ENDPOINT = "omnirag_ingest"

#: A fetch that failed with one of these statuses says the document is not there to ingest.
_NO_DOCUMENT_STATUSES = frozenset({400, 404, 410, 422})


class TextEmbedder(Protocol):
    """What the pipeline needs of an embeddings client (`providers.Embedder` is one)."""

    async def embed(
        self, texts: Sequence[str], *, tenant: str, endpoint: str
    ) -> Sequence[Sequence[float]]: ...


class DocumentFetcher(Protocol):
    """What the pipeline needs of a fetch client (`providers.Fetcher` is one)."""

    async def fetch(self, url: str, *, tenant: str) -> FetchedDocument: ...


@dataclass(frozen=True)
class PipelineConfig:
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embed_batch_size: int = 16
    embed_parallelism: int = 4  # batches in flight per job
    max_text_bytes: int = 1_048_576  # a fetched document beyond this is a bad document
    # The pool's connections exchange pgvector values in binary (``_db.register_vector_codec``).
    binary_vectors: bool = False


class JobPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        db: Database,
        embedder: TextEmbedder,
        fetcher: DocumentFetcher | None,
        embed_limiter: trio.CapacityLimiter,
        embed_spacer: CallSpacer | None = None,
        on_chunks: Any = None,
    ) -> None:
        self.config = config
        self._db = db
        self._embedder = embedder
        self._fetcher = fetcher
        self._embed_limiter = embed_limiter
        self._embed_spacer = embed_spacer
        self._on_chunks = on_chunks or (lambda n: None)

    async def run(self, job: q.ClaimedJob) -> float | None:
        """Ingest the job's document and complete the job; return its latency from submission.
        Raises on failure (classified by the worker); LeaseLost when a fenced write found that this
        attempt no longer owns the job."""
        metadata = dict(job.metadata)
        if job.url is not None:
            if self._fetcher is None:
                raise BadDocument("this worker has no fetch provider configured (FLOODGATE_FETCH_BASE_URL)")
            try:
                document = await self._fetcher.fetch(job.url, tenant=job.tenant_id)
            except floodgate.DependencyError as exc:
                if exc.status in _NO_DOCUMENT_STATUSES:
                    raise BadDocument(f"fetching {job.url} failed with HTTP {exc.status}") from exc
                raise
            text = document.text
            metadata.setdefault("url", document.url)
            if document.title:
                metadata.setdefault("title", document.title)
        else:
            text = job.text or ""
        size = len(text.encode())
        if size > self.config.max_text_bytes:
            raise BadDocument(f"document is {size} bytes; the limit is {self.config.max_text_bytes}")
        chunks = split_into_chunks(text, self.config.chunking)
        if not chunks:
            raise BadDocument("document has no text to ingest")
        if len(chunks) > self.config.chunking.max_chunks:
            raise BadDocument(
                f"document makes {len(chunks)} chunks; the limit is {self.config.chunking.max_chunks}"
            )

        reusable = await self._db.run(q.start_chunks, job.fence, [chunk_digest(c) for c in chunks])
        if reusable is None:
            raise LeaseLost(f"job {job.job_id}: lease lost before chunking")
        todo = [n for n in range(len(chunks)) if n not in reusable]
        size_b = self.config.embed_batch_size
        per_job = trio.CapacityLimiter(self.config.embed_parallelism)
        async with trio.open_nursery() as nursery:
            for start in range(0, len(todo), size_b):
                nursery.start_soon(self._embed_and_stage, job, todo[start : start + size_b], chunks, per_job)

        document_hash = hashlib.sha256(text.encode()).hexdigest()
        complete = functools.partial(q.complete_job, document_hash=document_hash, metadata=metadata)
        settled = await self._db.run(complete, job.fence)
        if settled is None:
            raise LeaseLost(f"job {job.job_id}: lease lost before completion")
        return settled.latency

    async def _embed_and_stage(
        self, job: q.ClaimedJob, batch: list[int], chunks: list[str], per_job: trio.CapacityLimiter
    ) -> None:
        contents = [chunks[n] for n in batch]
        async with per_job, self._embed_limiter:
            spacer = self._embed_spacer
            if spacer is None:
                vectors = await self._embedder.embed(contents, tenant=job.tenant_id, endpoint=INGEST_ENDPOINT)
            else:
                await trio.sleep_until(spacer.reserve(trio.current_time()))
                started = trio.current_time()
                vectors = await self._embedder.embed(contents, tenant=job.tenant_id, endpoint=INGEST_ENDPOINT)
                spacer.observed(trio.current_time() - started)
        stage = functools.partial(q.stage_chunks, binary_vectors=self.config.binary_vectors)
        if not await self._db.run(stage, job.fence, batch, contents, vectors):
            raise LeaseLost(f"job {job.job_id}: lease lost while staging chunks")
        self._on_chunks(len(batch))

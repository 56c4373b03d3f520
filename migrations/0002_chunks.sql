-- Document chunks with their embeddings: written by omniRAG ingestion, searched by dealBrain.
-- One row per (tenant, document, chunk number): writes are upserts, so a retried or duplicated
-- attempt overwrites rather than duplicates. Every query filters on tenant_id first (isolation).
CREATE TABLE chunks (
    tenant_id    text        NOT NULL,
    doc_id       text        NOT NULL,
    chunk_no     integer     NOT NULL CHECK (chunk_no >= 0),
    content      text        NOT NULL,
    embedding    vector(384) NOT NULL,
    content_hash text        NOT NULL,          -- hash of the whole document version this chunk came from
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, doc_id, chunk_no)
);

-- Approximate nearest-neighbour search by cosine distance (embeddings are L2-normalised).
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tenant ON chunks (tenant_id);

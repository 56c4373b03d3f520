-- Extensions the schema needs: pgvector for chunk embeddings (dealBrain's vector search).
CREATE EXTENSION IF NOT EXISTS vector;

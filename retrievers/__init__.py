"""Retrieval layer: embeddings, sparse encoding, Qdrant backends, loaders, chunking, ingestion."""

"""Private retrieval over the user's own documents: loading, chunking, embedding and search, all local."""

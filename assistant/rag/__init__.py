"""Private retrieval over the user's own documents: loading, chunking, embedding and search, all local."""

ALL_COLLECTIONS = "*"  # as a collection name: every collection there is, searched together

"""Object stores that only move bytes: local directory, S3, memory (the interface: store.base)."""

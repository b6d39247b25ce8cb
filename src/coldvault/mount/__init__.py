"""The read-only FUSE view of a vault: a thin pyfuse3 adapter (fuse_ops) over a
virtual tree (vfs) that holds the logic and is tested without mounting."""

"""Sources (directory, stdin, ZFS) -> chunker -> packer -> store."""

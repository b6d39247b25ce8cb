"""Getting data back out: directory trees (and, later, ZFS chains)."""

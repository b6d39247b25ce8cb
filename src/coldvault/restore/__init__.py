"""Getting data back out: directory trees (dirrestore) and ZFS chains (zfsrestore)."""

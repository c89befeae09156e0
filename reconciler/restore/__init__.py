"""Getting data back from a backup (export, NBD serve, file-level, to vSphere) and proving it is restorable
(verify). Every operation works on a ZFS clone of the backup's snapshot, never on the snapshot itself."""

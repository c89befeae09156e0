"""Off-site replication (issue 13): ssh to the target, `zfs send | ssh zfs receive`, verified by guid."""

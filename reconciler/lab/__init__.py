"""The lab: a data centre on one machine, for tests and for newcomers (`reconciler lab up`).

`lab.Lab` composes the parts: `vcsim` (a simulated vCenter and ESXi host with CBT, real disk bytes and
fault switches), `zfs` (a zfs-fuse pool in a file), `images` (real partition tables and file systems for
the VMs' disks) and `nbd` (nbdkit exports of VM disks, through the production NBD adapter).
Nothing here is imported by the product itself.
"""

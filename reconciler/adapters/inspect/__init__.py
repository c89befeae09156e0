"""Disk inspection: a fast pure-Python reader of partition tables and boot sectors (`layout`), the
VM-wide analysis and verdicts (`vm`), and deep inspection with libguestfs (`deep`, imported lazily)."""

from reconciler.adapters.inspect.layout import inspect_disk, inspect_image
from reconciler.adapters.inspect.model import (
    DiskLayout,
    InspectError,
    LdmHeader,
    Partition,
    PartitionKind,
    PartitionTable,
)
from reconciler.adapters.inspect.reader import BlockReader, CountingReader, FileReader, NbdReader
from reconciler.adapters.inspect.vm import DeepFacts, DiskReport, PartitionReport, analyse

__all__ = [
    "BlockReader",
    "CountingReader",
    "DeepFacts",
    "DiskLayout",
    "DiskReport",
    "FileReader",
    "InspectError",
    "LdmHeader",
    "NbdReader",
    "Partition",
    "PartitionKind",
    "PartitionReport",
    "PartitionTable",
    "analyse",
    "inspect_disk",
    "inspect_image",
]

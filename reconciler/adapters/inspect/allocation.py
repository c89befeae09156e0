"""Which blocks of a volume its file system uses: pure readers of on-disk allocation bitmaps.

A thin backup reads only these (DESIGN.md §5.3): a block the guest's file system marks free holds nothing
the guest can see, so it becomes a hole in the image. Every reader goes through `BlockReader`, so the
same code reads an image file and, during a backup, the VMware snapshot over NBD.

The rule is "copy everything, never guess": a reader returns `Declined(reason)` on anything it does not
fully understand — an unknown feature flag, a journal not replayed (a crash-consistent snapshot of a
mounted file system), a group whose free count disagrees with its bitmap, a truncated structure. The
caller then reads the volume whole. Bytes of a partition past its file system's end, and everything
before the first allocation unit, always count as used.

* ext2/3/4: the block-group descriptors and each group's block bitmap (flex_bg, 64bit descriptors,
  meta_bg, and BLOCK_UNINIT groups, whose bitmap is computed from the descriptors as the kernel does).
* NTFS: `$Bitmap` (MFT record 6), read through its data runs.
* Linux swap: only its header page is kept.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reconciler.adapters.inspect.model import DiskLayout
from reconciler.adapters.inspect.reader import BlockReader
from reconciler.core.extents import Range, normalise, subtract, total

MAX_READ = 4 * 1024 * 1024  # one read of consecutive bitmap blocks at most (an NBD request limit is 32 MiB)


@dataclass(frozen=True)
class AllocationMap:
    """The used byte ranges of one volume, as offsets on its disk (like the volume's own start)."""

    start: int
    length: int
    used: tuple[Range, ...]
    filesystem: str

    @property
    def free(self) -> tuple[Range, ...]:
        return tuple(subtract([Range(self.start, self.length)], self.used))

    @property
    def allocated_bytes(self) -> int:
        return total(self.used)


@dataclass(frozen=True)
class Declined:
    """The reader will not say which blocks are free; the volume is read whole."""

    reason: str


Allocation = AllocationMap | Declined
THIN_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "ntfs", "swap"})


def set_bit_runs(bitmap: bytes, nbits: int) -> Iterator[tuple[int, int]]:
    """(first bit, count) of each run of set bits among the first `nbits` (bit i of byte j is j*8+i, LSB
    first, as ext and NTFS store them), neighbours merged. Whole 0x00/0xFF bytes are skipped in bulk."""
    run_start = run_end = -1
    for match in re.finditer(rb"\xff+|[^\x00\xff]", bitmap[: (nbits + 7) // 8]):
        first, last = match.span()
        if bitmap[first] == 0xFF:
            pieces: Iterable[tuple[int, int]] = ((first * 8, last * 8),)
        else:
            byte = bitmap[first]
            pieces = ((first * 8 + bit, first * 8 + bit + 1) for bit in range(8) if byte >> bit & 1)
        for start, end in pieces:
            end = min(end, nbits)
            if start >= end:
                continue
            if start == run_end:
                run_end = end
                continue
            if run_end > run_start >= 0:
                yield run_start, run_end - run_start
            run_start, run_end = start, end
    if run_end > run_start >= 0:
        yield run_start, run_end - run_start


def _read_exact(reader: BlockReader, offset: int, length: int, what: str) -> bytes | Declined:
    data = reader.read(offset, length)
    return data if len(data) == length else Declined(f"{what} lies past the end of the disk (truncated image?)")


def _coalesced(reader: BlockReader, blocks: list[int], block_size: int, base: int) -> dict[int, bytes] | Declined:
    """Read single blocks, consecutive ones in one request (flex_bg packs the bitmaps together)."""
    found: dict[int, bytes] = {}
    wanted = sorted(set(blocks))
    i = 0
    per_read = max(1, MAX_READ // block_size)
    while i < len(wanted):
        j = i
        while j + 1 < len(wanted) and wanted[j + 1] == wanted[j] + 1 and j + 1 - i < per_read:
            j += 1
        count = j - i + 1
        data = _read_exact(reader, base + wanted[i] * block_size, count * block_size, f"bitmap block {wanted[i]}")
        if isinstance(data, Declined):
            return data
        for n in range(count):
            found[wanted[i] + n] = data[n * block_size : (n + 1) * block_size]
        i = j + 1
    return found


# ---- ext2/3/4 ------------------------------------------------------------------------------------------
EXT_MAGIC = 0xEF53
# incompat features this reader understands; anything else declines (a new feature may move the bitmaps)
EXT_INCOMPAT_FILETYPE = 0x2
EXT_INCOMPAT_RECOVER = 0x4
EXT_INCOMPAT_JOURNAL_DEV = 0x8
EXT_INCOMPAT_META_BG = 0x10
EXT_INCOMPAT_64BIT = 0x80
EXT_INCOMPAT_FLEX_BG = 0x200
EXT_INCOMPAT_KNOWN = (
    EXT_INCOMPAT_FILETYPE | EXT_INCOMPAT_RECOVER | EXT_INCOMPAT_META_BG | 0x40  # extents
    | EXT_INCOMPAT_64BIT | 0x100  # mmp
    | EXT_INCOMPAT_FLEX_BG | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000
)  # ea_inode, dirdata, csum_seed, largedir, inline_data, encrypt, casefold: none changes block allocation
EXT_RO_COMPAT_SPARSE_SUPER = 0x1
EXT_RO_COMPAT_BIGALLOC = 0x200
EXT_COMPAT_SPARSE_SUPER2 = 0x200
EXT_BG_BLOCK_UNINIT = 0x2
EXT_STATE_ERRORS = 0x2


@dataclass(frozen=True)
class _ExtSuper:
    block_size: int
    blocks: int
    first_data_block: int
    blocks_per_group: int
    groups: int
    desc_size: int
    incompat: int
    compat: int
    ro_compat: int
    first_meta_bg: int
    reserved_gdt: int
    backup_bgs: tuple[int, int]
    inode_table_blocks: int

    def group_first(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def group_blocks(self, group: int) -> int:
        return min(self.blocks_per_group, self.blocks - self.group_first(group))

    def has_super(self, group: int) -> bool:
        """Whether a group holds a superblock copy (and, without meta_bg, the descriptor table)."""
        if group == 0:
            return True
        if self.compat & EXT_COMPAT_SPARSE_SUPER2:
            return group in self.backup_bgs
        if group <= 1 or not self.ro_compat & EXT_RO_COMPAT_SPARSE_SUPER:
            return True
        if group % 2 == 0:
            return False
        for base in (3, 5, 7):
            power = base
            while power < group:
                power *= base
            if power == group:
                return True
        return False

    @property
    def descs_per_block(self) -> int:
        return self.block_size // self.desc_size

    @property
    def gdt_blocks(self) -> int:
        return -(-self.groups // self.descs_per_block)

    def descriptor_block(self, index: int) -> int:
        """Where the `index`-th block of the descriptor table lives (meta_bg moves the later ones)."""
        if not self.incompat & EXT_INCOMPAT_META_BG or index < self.first_meta_bg:
            return self.first_data_block + 1 + index
        group = index * self.descs_per_block
        return self.group_first(group) + (1 if self.has_super(group) else 0)

    def base_metadata(self, group: int) -> list[tuple[int, int]]:
        """(first block, count) of a group's superblock copy and descriptor blocks, relative to the disk's
        block 0: what the kernel marks used in a BLOCK_UNINIT group before its bitmaps and inode table."""
        first = self.group_first(group)
        if not self.incompat & EXT_INCOMPAT_META_BG or group // self.descs_per_block < self.first_meta_bg:
            if not self.has_super(group):
                return []
            # with meta_bg only the first s_first_meta_bg descriptor blocks follow the superblock
            old = self.first_meta_bg if self.incompat & EXT_INCOMPAT_META_BG else self.gdt_blocks + self.reserved_gdt
            return [(first, 1 + old)]
        runs = [(first, 1)] if self.has_super(group) else []
        within = group % self.descs_per_block
        if within in (0, 1, self.descs_per_block - 1):  # meta_bg: descriptor block copies
            runs.append((first + (1 if self.has_super(group) else 0), 1))
        return runs


def _ext_super(sb: bytes) -> _ExtSuper | Declined:
    (magic,) = struct.unpack_from("<H", sb, 0x38)
    if magic != EXT_MAGIC:
        return Declined("no ext2/3/4 superblock")
    blocks_lo, _, _, _, first_data_block, log_block, log_cluster, blocks_per_group, clusters_per_group = (
        struct.unpack_from("<9I", sb, 0x04))
    (state,) = struct.unpack_from("<H", sb, 0x3A)
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    (reserved_gdt,) = struct.unpack_from("<H", sb, 0xCE)
    (desc_size,) = struct.unpack_from("<H", sb, 0xFE)
    (first_meta_bg,) = struct.unpack_from("<I", sb, 0x104)
    (blocks_hi,) = struct.unpack_from("<I", sb, 0x150)
    backup_bgs = struct.unpack_from("<II", sb, 0x24C)
    (inodes_per_group,) = struct.unpack_from("<I", sb, 0x28)
    (rev,) = struct.unpack_from("<I", sb, 0x4C)
    (inode_size,) = struct.unpack_from("<H", sb, 0x58)
    inode_size = inode_size if rev >= 1 else 128
    unknown = incompat & ~EXT_INCOMPAT_KNOWN
    if incompat & EXT_INCOMPAT_JOURNAL_DEV:
        return Declined("an external journal device, not a file system")
    if unknown:
        return Declined(f"unknown incompatible feature flags 0x{unknown:x}")
    if incompat & EXT_INCOMPAT_RECOVER:
        return Declined("the journal needs recovery (not a quiesced snapshot): free blocks may be in use")
    if state & EXT_STATE_ERRORS:
        return Declined("the file system is marked as having errors")
    if ro_compat & EXT_RO_COMPAT_BIGALLOC or log_cluster != log_block or clusters_per_group != blocks_per_group:
        return Declined("bigalloc (cluster bitmaps) is not supported")
    if log_block > 6:
        return Declined(f"implausible block size 2^{10 + log_block}")
    block_size = 1024 << log_block
    wide = bool(incompat & EXT_INCOMPAT_64BIT)
    blocks = blocks_lo | (blocks_hi << 32 if wide else 0)
    if wide and (desc_size < 64 or desc_size > block_size or desc_size & (desc_size - 1)):
        return Declined(f"implausible group descriptor size {desc_size}")
    if blocks_per_group == 0 or blocks_per_group > 8 * block_size or blocks <= first_data_block:
        return Declined("implausible block counts in the superblock")
    if inode_size < 128 or inode_size > block_size or inode_size & (inode_size - 1):
        return Declined(f"implausible inode size {inode_size}")
    groups = -(-(blocks - first_data_block) // blocks_per_group)
    return _ExtSuper(block_size, blocks, first_data_block, blocks_per_group, groups, desc_size if wide else 32,
                     incompat, compat, ro_compat, first_meta_bg, reserved_gdt, backup_bgs,
                     -(-inodes_per_group * inode_size // block_size))


@dataclass(frozen=True)
class _Group:
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free: int
    flags: int


def _ext_groups(reader: BlockReader, start: int, sb: _ExtSuper) -> list[_Group] | Declined:
    blocks = [sb.descriptor_block(i) for i in range(sb.gdt_blocks)]
    table = _coalesced(reader, blocks, sb.block_size, start)
    if isinstance(table, Declined):
        return table
    raw = b"".join(table[b] for b in blocks)
    groups = []
    wide = sb.desc_size >= 64
    for g in range(sb.groups):
        offset = g * sb.desc_size
        bb, ib, it, free, _, _, flags = struct.unpack_from("<IIIHHHH", raw, offset)
        if wide:
            bb_hi, ib_hi, it_hi, free_hi = struct.unpack_from("<IIIH", raw, offset + 0x20)
            bb, ib, it, free = bb | bb_hi << 32, ib | ib_hi << 32, it | it_hi << 32, free | free_hi << 16
        groups.append(_Group(bb, ib, it, free, flags))
    return groups


def read_ext_allocation(reader: BlockReader, start: int, length: int | None = None) -> Allocation:
    """The used blocks of the ext2/3/4 file system at byte `start` of the disk (volume `length` bytes,
    the disk's rest by default), or why it cannot be known."""
    length = reader.size - start if length is None else length
    sb_bytes = _read_exact(reader, start + 1024, 1024, "the ext superblock")
    if isinstance(sb_bytes, Declined):
        return sb_bytes
    sb = _ext_super(sb_bytes)
    if isinstance(sb, Declined):
        return sb
    if sb.blocks * sb.block_size > length:
        return Declined(f"the file system ({sb.blocks * sb.block_size} bytes) is larger than its volume")
    groups = _ext_groups(reader, start, sb)
    if isinstance(groups, Declined):
        return groups
    bitmaps = _coalesced(reader, [g.block_bitmap for g in groups if not g.flags & EXT_BG_BLOCK_UNINIT],
                         sb.block_size, start)
    if isinstance(bitmaps, Declined):
        return bitmaps
    # metadata of each group may live in another group (flex_bg): an uninitialised group's bitmap is built
    # from every group's metadata that falls in it, as the kernel's ext4_init_block_bitmap does
    metadata: list[tuple[int, int]] = []
    for g in groups:
        metadata += [(g.block_bitmap, 1), (g.inode_bitmap, 1), (g.inode_table, sb.inode_table_blocks)]
    used: list[Range] = [Range(start, (sb.first_data_block + 1) * sb.block_size)]  # boot area, superblock
    for index, group in enumerate(groups):
        first, count = sb.group_first(index), sb.group_blocks(index)
        if group.flags & EXT_BG_BLOCK_UNINIT:
            runs = _uninit_runs(sb, index, metadata)
        else:
            if group.block_bitmap >= sb.blocks:
                return Declined(f"group {index}: block bitmap {group.block_bitmap} is outside the file system")
            runs = [(first + bit, n) for bit, n in set_bit_runs(bitmaps[group.block_bitmap], count)]
        free = count - sum(n for _, n in runs)
        if free != group.free:
            return Declined(f"group {index}: {group.free} blocks free by its descriptor, {free} by its bitmap")
        used += [Range(start + b * sb.block_size, n * sb.block_size) for b, n in runs]
    fs_end = sb.blocks * sb.block_size
    if fs_end < length:  # the partition's tail past the file system: unknown contents, kept
        used.append(Range(start + fs_end, length - fs_end))
    return AllocationMap(start, length, tuple(normalise(used, size=start + length)), "ext")


def _uninit_runs(sb: _ExtSuper, group: int, metadata: list[tuple[int, int]]) -> list[tuple[int, int]]:
    first, count = sb.group_first(group), sb.group_blocks(group)
    runs = sb.base_metadata(group)
    for block, n in metadata:
        lo, hi = max(block, first), min(block + n, first + count)
        if lo < hi:
            runs.append((lo, hi - lo))
    merged = normalise(runs)
    return [(r.offset, r.length) for r in merged]


# ---- NTFS ----------------------------------------------------------------------------------------------
NTFS_OEM = b"NTFS    "
MFT_RECORD_BITMAP = 6
MFT_RECORD_VOLUME = 3
ATTR_DATA = 0x80
ATTR_VOLUME_INFORMATION = 0x70
ATTR_END = 0xFFFFFFFF
VOLUME_IS_DIRTY = 0x0001


@dataclass(frozen=True)
class _NtfsBoot:
    bytes_per_sector: int
    cluster: int
    clusters: int
    mft_lcn: int
    record_size: int


def _ntfs_boot(boot: bytes) -> _NtfsBoot | Declined:
    if boot[3:11] != NTFS_OEM or boot[510:512] != b"\x55\xaa":
        return Declined("no NTFS boot sector")
    bytes_per_sector, spc = struct.unpack_from("<HB", boot, 0x0B)
    total_sectors, mft_lcn = struct.unpack_from("<QQ", boot, 0x28)
    (per_record,) = struct.unpack_from("<b", boot, 0x40)
    sectors_per_cluster = spc if spc <= 0x80 else 1 << (256 - spc)
    if bytes_per_sector not in (512, 1024, 2048, 4096) or sectors_per_cluster == 0:
        return Declined("implausible NTFS geometry")
    cluster = bytes_per_sector * sectors_per_cluster
    record_size = per_record * cluster if per_record > 0 else 1 << -per_record
    if not 512 <= record_size <= 65536:
        return Declined(f"implausible MFT record size {record_size}")
    return _NtfsBoot(bytes_per_sector, cluster, total_sectors // sectors_per_cluster, mft_lcn, record_size)


def _fixup(record: bytearray, sector: int) -> bool:
    """Apply the update sequence array (multi-sector protection); False when a sector was torn."""
    usa_offset, usa_count = struct.unpack_from("<HH", record, 4)
    if usa_count < 1 or usa_offset + 2 * usa_count > len(record) or (usa_count - 1) * sector > len(record):
        return False
    usn = record[usa_offset : usa_offset + 2]
    for i in range(1, usa_count):
        end = i * sector
        if record[end - 2 : end] != usn:
            return False
        record[end - 2 : end] = record[usa_offset + 2 * i : usa_offset + 2 * i + 2]
    return True


def _attributes(record: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, attribute bytes) of an MFT record's unnamed attributes."""
    (offset,) = struct.unpack_from("<H", record, 0x14)
    while offset + 8 <= len(record):
        kind, size = struct.unpack_from("<II", record, offset)
        if kind == ATTR_END or size < 16 or offset + size > len(record):
            return
        if record[offset + 9] == 0:  # unnamed
            yield kind, record[offset : offset + size]
        offset += size


def data_runs(runs: bytes) -> Iterator[tuple[int | None, int]]:
    """(LCN or None for a sparse run, cluster count) of an NTFS mapping pairs array."""
    position, lcn = 0, 0
    while position < len(runs) and runs[position]:
        header = runs[position]
        len_size, off_size = header & 0xF, header >> 4
        if len_size == 0 or position + 1 + len_size + off_size > len(runs):
            raise ValueError("malformed data run")
        count = int.from_bytes(runs[position + 1 : position + 1 + len_size], "little")
        if off_size:
            lcn += int.from_bytes(runs[position + 1 + len_size : position + 1 + len_size + off_size], "little",
                                  signed=True)
            yield lcn, count
        else:
            yield None, count
        position += 1 + len_size + off_size


def _mft_record(reader: BlockReader, start: int, boot: _NtfsBoot, number: int) -> bytes | Declined:
    # records 0-15 are always inside the MFT's first extent, right after its start
    raw = _read_exact(reader, start + boot.mft_lcn * boot.cluster + number * boot.record_size, boot.record_size,
                      f"MFT record {number}")
    if isinstance(raw, Declined):
        return raw
    record = bytearray(raw)
    if record[:4] != b"FILE" or not _fixup(record, boot.bytes_per_sector):
        return Declined(f"MFT record {number} is not a valid FILE record")
    return bytes(record)


def read_ntfs_allocation(reader: BlockReader, start: int, length: int | None = None) -> Allocation:
    """The used clusters of the NTFS volume at byte `start` of the disk, from `$Bitmap`."""
    length = reader.size - start if length is None else length
    head = _read_exact(reader, start, 512, "the NTFS boot sector")
    if isinstance(head, Declined):
        return head
    boot = _ntfs_boot(head)
    if isinstance(boot, Declined):
        return boot
    if boot.clusters * boot.cluster > length:
        return Declined("the NTFS volume is larger than its partition")
    volume = _mft_record(reader, start, boot, MFT_RECORD_VOLUME)
    if isinstance(volume, Declined):
        return volume
    for kind, attr in _attributes(volume):
        if kind == ATTR_VOLUME_INFORMATION and attr[8] == 0:
            (offset,) = struct.unpack_from("<H", attr, 0x14)  # resident: where the value starts
            (flags,) = struct.unpack_from("<H", attr, offset + 0x0A)
            if flags & VOLUME_IS_DIRTY:
                return Declined("the NTFS volume is marked dirty (chkdsk pending): free clusters may be in use")
    record = _mft_record(reader, start, boot, MFT_RECORD_BITMAP)
    if isinstance(record, Declined):
        return record
    data = next((attr for kind, attr in _attributes(record) if kind == ATTR_DATA), None)
    if data is None or data[8] != 1:
        return Declined("$Bitmap has no non-resident data attribute")
    (runs_offset,) = struct.unpack_from("<H", data, 0x20)
    try:
        runs = list(data_runs(data[runs_offset:]))
    except ValueError:
        return Declined("$Bitmap's data runs are malformed")
    bitmap = bytearray()
    need = (boot.clusters + 7) // 8
    for lcn, count in runs:
        if len(bitmap) >= need:
            break
        if lcn is None or lcn < 0 or lcn + count > boot.clusters:
            return Declined("$Bitmap's data runs point outside the volume")
        run_bytes = min(count * boot.cluster, need - len(bitmap) + boot.cluster)
        for offset in range(0, run_bytes, MAX_READ):
            piece = _read_exact(reader, start + lcn * boot.cluster + offset, min(MAX_READ, run_bytes - offset),
                                "$Bitmap")
            if isinstance(piece, Declined):
                return piece
            bitmap += piece
    if len(bitmap) < need:
        return Declined("$Bitmap is shorter than the volume")
    used = [Range(start, boot.cluster)]  # the boot sector always
    used += [Range(start + c * boot.cluster, n * boot.cluster) for c, n in set_bit_runs(bytes(bitmap), boot.clusters)]
    fs_end = boot.clusters * boot.cluster
    if fs_end < length:  # the backup boot sector and any slack after the last cluster
        used.append(Range(start + fs_end, length - fs_end))
    return AllocationMap(start, length, tuple(normalise(used, size=start + length)), "ntfs")


# ---- Linux swap ----------------------------------------------------------------------------------------
SWAP_HEADER = 65536  # the header page, for page sizes up to 64 KiB; nothing after it survives a reboot


def read_swap_allocation(reader: BlockReader, start: int, length: int) -> Allocation:
    """Swap space holds nothing a restored VM needs, except its header (`swapon` needs the signature); a
    swap area holding a hibernation image (`S1SUSPEND`…) is the resume state and is read whole."""
    head = reader.read(start, SWAP_HEADER)
    for page in (4096, 8192, 16384, 65536):
        signature = head[page - 10 : page]
        if signature == b"SWAPSPACE2":
            return AllocationMap(start, length, (Range(start, min(SWAP_HEADER, length)),), "swap")
        if b"SUSPEND" in signature:  # S1SUSPEND, S2SUSPEND…, NUL-padded
            return Declined("the swap area holds a hibernation image")
    return Declined("no swap signature")


def read_allocation(reader: BlockReader, filesystem: str | None, start: int, length: int) -> Allocation:
    """Dispatch on the file system the headers identified; anything without a reader declines."""
    if filesystem in ("ext2", "ext3", "ext4"):
        return read_ext_allocation(reader, start, length)
    if filesystem == "ntfs":
        return read_ntfs_allocation(reader, start, length)
    if filesystem == "swap":
        return read_swap_allocation(reader, start, length)
    return Declined(f"no allocation reader for {filesystem or 'an unknown file system'}")


def read_volume_allocations(reader: BlockReader, layout: DiskLayout, quiesced: bool = True) -> dict[int, Allocation]:
    """The allocation map of each volume a reader exists for; a reader's bug declines, never fails.

    ext3/4 mark a journal not yet replayed in the superblock (the reader declines it); NTFS keeps no such
    flag outside its $LogFile, which is not read: so NTFS is trusted only on a quiesced (VSS) snapshot."""
    found: dict[int, Allocation] = {}
    for part in layout.partitions:
        if part.filesystem is None or str(part.filesystem) not in THIN_FILESYSTEMS or not part.length:
            continue
        if str(part.filesystem) == "ntfs" and not quiesced:
            found[part.index] = Declined("not a quiesced snapshot: $LogFile may hold allocations $Bitmap lacks")
            continue
        try:
            found[part.index] = read_allocation(reader, str(part.filesystem), part.start, part.length)
        except Exception as exc:  # odd metadata must not fail the backup: the volume is read whole
            found[part.index] = Declined(f"allocation reader failed ({type(exc).__name__}: {exc})")
    return found

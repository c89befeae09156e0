"""Real raw disk images for the tests and the lab: sparse files with real partition tables and file systems.

Tables are written by `sfdisk`; each file system is made by its own `mkfs` in a separate sparse file and
copied (data extents only) to its partition's offset, since loop devices may not be available. Formats
Linux cannot create (ReFS, BitLocker, an LDM PRIVHEAD, an LVM2 label) are written byte-exactly from
their specifications. Nothing here needs root or kernel modules.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
SECTOR = 512
ALIGNMENT = MiB
GPT_TAIL = MiB  # room for the backup GPT at the end of the disk

FILESYSTEMS = (
    "ntfs", "refs", "ext4", "xfs", "btrfs", "fat32", "fat16", "fat12", "exfat", "swap", "lvm", "bitlocker",
    "ldm", "raw",
)  # fmt: skip
TABLES = ("gpt", "mbr", "none")

BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
EFI_SYSTEM = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
WINDOWS_RECOVERY = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
LDM_METADATA = "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3"
LDM_DATA = "AF9B60A0-1431-4F62-BC68-3311714A69AD"
STORAGE_SPACES = "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D"

GPT_TYPES = {
    "ntfs": BASIC_DATA, "refs": BASIC_DATA, "fat32": BASIC_DATA, "fat16": BASIC_DATA, "fat12": BASIC_DATA,
    "exfat": BASIC_DATA, "bitlocker": BASIC_DATA, "raw": BASIC_DATA, "ldm": LDM_DATA,
    "ext4": LINUX_FS, "xfs": LINUX_FS, "btrfs": LINUX_FS,
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
}  # fmt: skip
MBR_TYPES = {
    "ntfs": 0x07, "refs": 0x07, "exfat": 0x07, "bitlocker": 0x07, "fat32": 0x0C, "fat16": 0x0E,
    "fat12": 0x01, "ext4": 0x83, "xfs": 0x83, "btrfs": 0x83, "swap": 0x82, "lvm": 0x8E, "ldm": 0x42,
    "raw": 0xDA,
}  # fmt: skip


class ImageBuildError(Exception):
    """A spec that cannot be built, or a tool that failed; the message says which and why."""


@dataclass(frozen=True)
class PartSpec:
    """One partition: its size in bytes (rounded up to 1 MiB) and what it holds.

    `files` are `(path, content)` pairs written into ext4 or NTFS; a path ending in `/` is a directory
    (NTFS directories need FUSE for ntfs-3g). `type_guid` overrides the GPT type (or, as `0xNN`, the MBR
    type); `guid` sets the GPT partition GUID; `serial` the volume's serial or UUID in the form the
    reader reports it (a UUID for ext4/xfs/btrfs/swap, `XXXX-XXXX` for FAT, 16 hex digits for NTFS).
    """

    size: int
    fs: str = "raw"
    type_guid: str | None = None
    label: str | None = None
    files: tuple[tuple[str, bytes], ...] = ()
    guid: str | None = None
    serial: str | None = None


@dataclass(frozen=True)
class BuiltPartition:
    index: int
    start: int
    length: int
    spec: PartSpec

    @property
    def end(self) -> int:
        return self.start + self.length


def _run(*argv: str, stdin: str | None = None) -> None:
    try:
        subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{argv[0]} is not installed (see scripts/install-system-packages.sh)") from exc
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(f"{' '.join(argv)} failed: {exc.stderr.strip() or exc.stdout.strip()}") from exc


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _write(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def _copy_data_extents(source: Path, target: Path, offset: int) -> None:
    """Copy only the data extents of a sparse file into `target` at `offset`, so the image stays sparse."""
    with source.open("rb") as src, target.open("r+b") as dst:
        end = os.fstat(src.fileno()).st_size
        position = 0
        while position < end:
            try:
                data_start = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after position
                break
            data_end = os.lseek(src.fileno(), data_start, os.SEEK_HOLE)
            remaining, cursor = data_end - data_start, data_start
            while remaining:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining, cursor, offset + cursor)
                if copied == 0:
                    break
                remaining -= copied
                cursor += copied
            position = data_end


# --- formats written byte-exactly -------------------------------------------------------------------


def refs_boot_sector(sectors: int, serial: int) -> bytes:
    """ReFS volume header (libfsrefs documentation): OEM `ReFS\\0\\0\\0\\0` at 3, `FSRS` at 16, format 3.4."""
    header = bytearray(SECTOR)
    header[3:11] = b"ReFS\0\0\0\0"
    header[16:20] = b"FSRS"
    struct.pack_into("<HH", header, 20, SECTOR, 0)  # structure size; checksum left 0 (undocumented)
    struct.pack_into("<QII", header, 24, sectors, SECTOR, 128)  # sectors, bytes/sector, sectors/cluster
    header[40:42] = bytes([3, 4])
    struct.pack_into("<Q", header, 0x38, serial)
    return bytes(header)


BITLOCKER_GUID = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001")
FVE_METADATA_OFFSETS = (0x02100000, 0x02200000, 0x02300000)


def bitlocker_boot_sector(hidden_sectors: int, serial: int) -> bytes:
    """BitLocker (Windows 7+) volume header as libbde documents it: a FAT32-like BPB with OEM
    `-FVE-FS-`, the BitLocker GUID at 0xA0 and the offsets of the three FVE metadata blocks at 0xB0."""
    header = bytearray(SECTOR)
    header[0:3] = b"\xeb\x58\x90"
    header[3:11] = b"-FVE-FS-"
    struct.pack_into("<HBHBHHBHHHI", header, 11, SECTOR, 8, 0, 0, 0, 0, 0xF8, 0, 0x3F, 0xFF, hidden_sectors)
    struct.pack_into("<I", header, 0x43, serial)
    header[0x47:0x52] = b"NO NAME    "
    header[0x52:0x5A] = b"FAT32   "
    header[0xA0:0xB0] = BITLOCKER_GUID.bytes_le
    struct.pack_into("<QQQ", header, 0xB0, *FVE_METADATA_OFFSETS)
    header[510:512] = b"\x55\xaa"
    return bytes(header)


def _lvm_crc(data: bytes) -> int:
    """LVM2's CRC32: the standard polynomial seeded with 0xf597a6cf and no final inversion."""
    return ~zlib.crc32(data, ~0xF597A6CF & 0xFFFFFFFF) & 0xFFFFFFFF


def lvm2_pv_header(device_size: int, pv_uuid: str) -> bytes:
    """The first 4 KiB + 512 bytes of an LVM2 PV as `pvcreate` writes them: label in sector 1 with one
    data area at 1 MiB and one metadata area at 4 KiB, and the empty metadata-area header."""
    raw_uuid = pv_uuid.replace("-", "").encode("ascii")
    if len(raw_uuid) != 32:
        raise ImageBuildError(f"LVM PV UUID must have 32 characters, got {pv_uuid!r}")
    mda_start, mda_size, data_start = 4096, MiB - 4096, MiB
    label = bytearray(SECTOR)
    label[0:8] = b"LABELONE"
    struct.pack_into("<QII", label, 8, 1, 0, 32)
    label[24:32] = b"LVM2 001"
    pv = raw_uuid + struct.pack("<Q", device_size)
    pv += struct.pack("<QQ", data_start, 0) + bytes(16)  # data areas, then terminator
    pv += struct.pack("<QQ", mda_start, mda_size) + bytes(16)  # metadata areas, then terminator
    pv += struct.pack("<II", 2, 0) + bytes(16)  # extension v2, no flags, no bootloader areas
    label[32 : 32 + len(pv)] = pv
    struct.pack_into("<I", label, 16, _lvm_crc(bytes(label[20:])))
    mda = bytearray(SECTOR)
    mda[4:20] = b" LVM2 x[5A%r0N*>"
    struct.pack_into("<IQQ", mda, 20, 1, mda_start, mda_size)
    struct.pack_into("<I", mda, 0, _lvm_crc(bytes(mda[4:])))
    block = bytearray(mda_start + SECTOR)
    block[SECTOR : 2 * SECTOR] = label
    block[mda_start:] = mda
    return bytes(block)


def ldm_privhead(
    disk_guid: str, group_guid: str, data: tuple[int, int], database: tuple[int, int], group_name: str = "lab"
) -> bytes:
    """LDM PRIVHEAD (Windows Vista+, version 2.12), sizes big-endian in sectors: `data` is the
    (first sector, sector count) of the area holding dynamic volumes, `database` that of the LDM database."""
    head = bytearray(SECTOR)
    head[0:8] = b"PRIVHEAD"
    struct.pack_into(">IHH", head, 8, 0x2C, 2, 12)
    host_guid = str(uuid.UUID(int=0x1DB, version=4))
    for offset, text in ((0x30, disk_guid), (0x70, host_guid), (0xB0, group_guid)):
        head[offset : offset + 64] = text.encode("ascii").ljust(64, b"\0")
    head[0xF0:0x110] = group_name.encode("ascii")[:31].ljust(32, b"\0")
    struct.pack_into(">QQQQ", head, 0x11B, *data, *database)
    return bytes(head)


def _materialise(files: Sequence[tuple[str, bytes]], tree: Path) -> Path:
    """Write `files` under `tree`; a path ending in `/` is an (empty) directory."""
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    for name, content in files:
        target = tree / name.strip("/")
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return tree


def _populate_ntfs(image: Path, files: Sequence[tuple[str, bytes]], workdir: Path) -> None:
    """Root-level files go in with `ntfscp` (no FUSE needed); directories need an ntfs-3g FUSE mount."""
    if all("/" not in name.strip("/") and not name.endswith("/") for name, _ in files):
        for name, content in files:
            source = workdir / "file"
            source.write_bytes(content)
            _run("ntfscp", "-q", str(image), str(source), name.strip("/"))
        return
    tree = _materialise(files, workdir / "tree")
    mountpoint = workdir / "mnt"
    mountpoint.mkdir(exist_ok=True)
    # no_detach: the daemon is our child, so waiting for it proves every write reached the image
    daemon = subprocess.Popen(["ntfs-3g", "-o", "no_detach", str(image), str(mountpoint)], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if os.path.ismount(mountpoint) or daemon.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.ismount(mountpoint):
            raise ImageBuildError(f"ntfs-3g could not mount {image} (FUSE needed for NTFS directories)")
        shutil.copytree(tree, mountpoint, dirs_exist_ok=True)
    finally:
        if os.path.ismount(mountpoint):
            _run("fusermount", "-u", str(mountpoint))
        daemon.wait(timeout=60)


def _serials(spec: PartSpec, rng: random.Random) -> tuple[str, str, int]:
    """(UUID, FAT volume id, NTFS serial) for a file system: `spec.serial` or reproducibly random."""
    fs_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    fat_id, ntfs_serial = f"{rng.getrandbits(32):08X}", rng.getrandbits(64)
    if spec.serial is None:
        return fs_uuid, fat_id, ntfs_serial
    try:
        if spec.fs.startswith("fat"):
            return fs_uuid, f"{int(spec.serial.replace('-', ''), 16):08X}", ntfs_serial
        if spec.fs in ("ntfs", "ldm"):
            return fs_uuid, fat_id, int(spec.serial, 16)
        return str(uuid.UUID(spec.serial)), fat_id, ntfs_serial
    except ValueError as exc:
        raise ImageBuildError(f"serial {spec.serial!r} does not suit a {spec.fs} volume") from exc


def _set_ntfs_serial(image: Path, length: int, serial: int) -> None:
    """mkntfs seeds its serial from the clock: volumes made in the same second would share one. The
    serial lives at 0x48 of the boot sector and of its backup in the volume's last sector."""
    for offset in (0, (length // SECTOR - 1) * SECTOR):
        _write(image, offset + 0x48, struct.pack("<Q", serial))


# --- file systems made by their tools -----------------------------------------------------------------


def _make_filesystem(spec: PartSpec, length: int, start: int, workdir: Path, rng: random.Random) -> Path | None:
    """A file of `length` bytes holding the file system, or None when it is written byte-exactly."""
    image = workdir / "fs.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(length)
    label = ["-L", spec.label] if spec.label else []
    fs = "ntfs" if spec.fs == "ldm" else spec.fs
    fs_uuid, fat_id, ntfs_serial = _serials(spec, rng)
    if fs == "ext4":
        tree = _materialise(spec.files, workdir / "tree")
        _run("mkfs.ext4", "-q", "-F", "-U", fs_uuid, "-d", str(tree), *label, str(image))
    elif fs == "ntfs":
        sector = str(start // SECTOR)  # hidden sectors, as Windows expects in a partition's boot sector
        _run("mkntfs", "-F", "-Q", "-q", "-p", sector, "-H", "255", "-S", "63", *label, str(image))
        _populate_ntfs(image, spec.files, workdir)
        _set_ntfs_serial(image, length, ntfs_serial)
    elif fs == "xfs":
        _run("mkfs.xfs", "-q", "-f", "-m", f"uuid={fs_uuid}", *label, str(image))
    elif fs == "btrfs":
        _run("mkfs.btrfs", "-q", "-f", "-U", fs_uuid, *label, str(image))
    elif fs in ("fat32", "fat16", "fat12"):
        fat_label = ["-n", spec.label[:11].upper()] if spec.label else []  # FAT labels: 11 characters
        _run("mkfs.vfat", "-F", fs[3:], "-i", fat_id, *fat_label, str(image))
    elif fs == "exfat":
        _run("mkfs.exfat", *(["-L", spec.label[:15]] if spec.label else []), str(image))
    elif fs == "swap":
        _run("mkswap", "-U", fs_uuid, *label, str(image))
    else:
        return None
    return image


def _write_exact(spec: PartSpec, part: BuiltPartition, path: Path, rng: random.Random) -> None:
    if spec.fs == "refs":
        _write(path, part.start, refs_boot_sector(part.length // SECTOR, rng.getrandbits(64)))
    elif spec.fs == "bitlocker":
        _write(path, part.start, bitlocker_boot_sector(part.start // SECTOR, rng.getrandbits(32)))
        for offset in FVE_METADATA_OFFSETS:
            if offset + 64 <= part.length:  # each FVE metadata block starts with the same signature
                _write(path, part.start + offset, b"-FVE-FS-" + rng.randbytes(56))
    elif spec.fs == "lvm":
        pv_uuid = "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32)
        )
        _write(path, part.start, lvm2_pv_header(part.length, pv_uuid))


# --- layout and the table ------------------------------------------------------------------------------


def _validate(size: int, table: str, partitions: Sequence[PartSpec]) -> None:
    if table not in TABLES:
        raise ImageBuildError(f"unknown partition table {table!r}; expected one of {', '.join(TABLES)}")
    for i, spec in enumerate(partitions, start=1):
        if spec.fs not in FILESYSTEMS:
            raise ImageBuildError(f"partition {i}: unknown fs {spec.fs!r}; expected one of {', '.join(FILESYSTEMS)}")
        if spec.size <= 0:
            raise ImageBuildError(f"partition {i}: size must be positive, got {spec.size}")
    if table == "none" and len(partitions) > 1:
        raise ImageBuildError("a disk without a partition table holds at most one file system")
    if size <= 0:
        raise ImageBuildError(f"image size must be positive, got {size}")


def _place(size: int, table: str, partitions: Sequence[PartSpec]) -> list[BuiltPartition]:
    """Byte offsets of each partition: 1 MiB aligned; MBR past 4 partitions uses 3 primaries + logicals,
    each logical preceded by a 1 MiB gap that holds its EBR."""
    if table == "none":
        return [BuiltPartition(1, 0, size, partitions[0])] if partitions else []
    placed, cursor = [], ALIGNMENT
    for i, spec in enumerate(partitions):
        logical = table == "mbr" and len(partitions) > 4 and i >= 3
        if logical:
            cursor += ALIGNMENT
        length = _round_up(spec.size, ALIGNMENT)
        index = i + 2 if logical else i + 1  # logicals are numbered from 5
        placed.append(BuiltPartition(index, cursor, length, spec))
        cursor += length
    limit = size - (GPT_TAIL if table == "gpt" else 0)
    if cursor > limit:
        raise ImageBuildError(f"partitions need {cursor} bytes but the {table} image offers only {limit}")
    return placed


def _sfdisk_script(table: str, placed: list[BuiltPartition], size: int) -> str:
    lines = [f"label: {'gpt' if table == 'gpt' else 'dos'}", "unit: sectors"]
    for part in placed:
        spec = part.spec
        fields = [f"start={part.start // SECTOR}", f"size={part.length // SECTOR}"]
        if table == "gpt":
            fields.append(f"type={spec.type_guid or GPT_TYPES[spec.fs]}")
            if spec.guid:
                fields.append(f"uuid={spec.guid}")
            if spec.label:
                fields.append(f'name="{spec.label}"')
        else:
            fields.append(f"type={(spec.type_guid or hex(MBR_TYPES[spec.fs]))[2:]}")
        if table == "mbr" and part.index == 5:  # the extended container, from the first EBR to the end
            first_ebr = part.start - ALIGNMENT
            lines.append(f"start={first_ebr // SECTOR}, size={(size - first_ebr) // SECTOR}, type=5")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def build_image(
    path: str | os.PathLike[str],
    size: int,
    table: str = "gpt",
    partitions: Sequence[PartSpec] = (),
    *,
    ldm_disk_group: str | None = None,
    seed: int | None = None,
) -> list[BuiltPartition]:
    """Create a sparse raw image at `path` and return where each partition landed (byte offsets).

    `ldm_disk_group` is the LDM disk group GUID written in the PRIVHEAD of a dynamic disk (`fs="ldm"`);
    give two images the same one to make them disks of one group. `seed` makes serials reproducible.
    """
    _validate(size, table, partitions)
    target = Path(path)
    placed = _place(size, table, partitions)
    rng = random.Random(seed)
    with target.open("wb") as f:
        f.truncate(size)
    if table != "none":
        script = _sfdisk_script(table, placed, size)
        _run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(target), stdin=script)
    with tempfile.TemporaryDirectory(prefix="reconciler-image-", dir=target.parent) as tmp:
        for part in placed:
            made = _make_filesystem(part.spec, part.length, part.start, Path(tmp), rng)
            if made is not None:
                _copy_data_extents(made, target, part.start)
            else:
                _write_exact(part.spec, part, target, rng)
    if any(part.spec.fs == "ldm" for part in placed):
        group = ldm_disk_group or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        _write_privheads(target, size, table, placed, group, rng)
    return placed


def _write_privheads(
    path: Path, size: int, table: str, placed: list[BuiltPartition], group: str, rng: random.Random
) -> None:
    """MBR dynamic disks: the database is the disk's last MiB, PRIVHEAD at LBA 6 and in the last sector.
    GPT ones: the database is the LDM metadata partition (which must exist), PRIVHEAD in its last sector."""
    data = next(p for p in placed if p.spec.fs == "ldm")
    disk_guid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    data_sectors = (data.start // SECTOR, data.length // SECTOR)
    if table == "mbr":
        database = ((size - MiB) // SECTOR, MiB // SECTOR)
        head = ldm_privhead(disk_guid, group, data_sectors, database)
        _write(path, 6 * SECTOR, head)
        _write(path, size - SECTOR, head)
        return
    metadata = [p for p in placed if (p.spec.type_guid or "").upper() == LDM_METADATA]
    if not metadata:
        raise ImageBuildError("a GPT dynamic disk needs an LDM metadata partition (type_guid=LDM_METADATA)")
    database = (metadata[0].start // SECTOR, metadata[0].length // SECTOR)
    _write(path, metadata[0].end - SECTOR, ldm_privhead(disk_guid, group, data_sectors, database))


# --- named layouts for the lab ------------------------------------------------------------------------

LAYOUTS = ("linux-ext4", "windows-ntfs", "windows-ntfs-refs", "windows-dynamic", "rds-upd", "empty")
DEFAULT_SIZE = 4 * GiB
UPD_SIDS = ("S-1-5-21-1004336348-1177238915-682003330-1001", "S-1-5-21-1004336348-1177238915-682003330-1002")


def _sample_data(name: str, size: int = MiB) -> bytes:
    """Incompressible but reproducible bytes, so a backup has real data to move and compare."""
    return random.Random(name).randbytes(size)


def _vhdx(name: str) -> bytes:
    """Enough of a VHDX to be recognisable: the `vhdxfile` file type identifier, then data."""
    return b"vhdxfile" + "reconciler lab".encode("utf-16-le").ljust(512 - 8, b"\0") + _sample_data(name, 64 * 1024)


def _layout(layout: str, size: int, rng: random.Random) -> tuple[str, list[PartSpec]]:
    usable = size - ALIGNMENT - GPT_TAIL
    efi = PartSpec(100 * MiB, "fat32", type_guid=EFI_SYSTEM, label="EFI system partition")
    msr = PartSpec(16 * MiB, "raw", type_guid=MSR, label="Microsoft reserved partition")
    recovery = PartSpec(300 * MiB, "ntfs", type_guid=WINDOWS_RECOVERY, label="Recovery")
    windows_files = (
        ("README.txt", b"reconciler lab: Windows system volume\r\n"),
        ("data.bin", _sample_data("ntfs")),
    )
    if layout == "linux-ext4":
        # fstab names volumes by UUID, as installers write it: so guestfs finds them on any disk order
        root_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        efi_id = f"{rng.getrandbits(16):04X}-{rng.getrandbits(16):04X}"
        files = (
            ("etc/hostname", b"lab-linux\n"),
            (
                "etc/fstab",
                f"UUID={root_uuid} / ext4 defaults 0 1\nUUID={efi_id} /boot/efi vfat umask=0077 0 1\n".encode(),
            ),
            ("bin/", b""),
            ("usr/bin/", b""),
            ("boot/efi/", b""),
            ("etc/os-release", b'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'),
            ("home/user/notes.txt", b"reconciler lab: Linux root file system\n"),
            ("var/lib/lab/data.bin", _sample_data("ext4")),
        )
        efi = replace(efi, serial=efi_id)
        return "gpt", [efi, PartSpec(usable - efi.size, "ext4", label="root", files=files, serial=root_uuid)]
    if layout == "windows-ntfs":
        system = usable - efi.size - msr.size - recovery.size
        return "gpt", [efi, msr, PartSpec(system, "ntfs", label="Windows", files=windows_files), recovery]
    if layout == "windows-ntfs-refs":
        half = (usable - efi.size - msr.size) // 2 // MiB * MiB
        ntfs = PartSpec(half, "ntfs", label="Windows", files=windows_files)
        return "gpt", [efi, msr, ntfs, PartSpec(usable - efi.size - msr.size - half, "refs", label="Data")]
    if layout == "windows-dynamic":
        metadata = PartSpec(MiB, "raw", type_guid=LDM_METADATA, label="LDM metadata partition")
        data = PartSpec(usable - MiB - msr.size, "ldm", label="LDM data partition", files=windows_files)
        return "gpt", [metadata, msr, data]
    if layout == "rds-upd":
        files = tuple((f"UVHD-{sid}.vhdx", _vhdx(sid)) for sid in ("template", *UPD_SIDS))
        return "gpt", [PartSpec(usable, "ntfs", label="UserProfileDisks", files=files)]
    if layout == "empty":
        return "none", []
    raise ImageBuildError(f"unknown lab disk layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def build_lab_disk(path: str | os.PathLike[str], layout: str, size: int = DEFAULT_SIZE) -> list[BuiltPartition]:
    """A lab VM disk: a sparse raw image of `size` bytes (1 GiB at least) with one of `LAYOUTS`."""
    if size < GiB and layout != "empty":
        raise ImageBuildError(f"lab disk layout {layout!r} needs at least 1 GiB, got {size} bytes")
    # serials are reproducible per image name, and differ between the disks of one VM
    seed = zlib.crc32(f"{Path(path).name}:{layout}".encode())
    table, partitions = _layout(layout, size, random.Random(seed))
    return build_image(path, size, table, partitions, seed=seed)

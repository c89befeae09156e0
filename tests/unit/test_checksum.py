"""The sparse-aware image digest: defined by the bytes, not by where the holes are."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters.checksum import (
    ALGORITHM,
    BLOCK_SIZE,
    DOMAIN,
    ChecksumError,
    digest_matches,
    image_digest,
)

MiB = 1 << 20


def sparse_file(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    return path


def test_digest_is_prefixed_with_its_algorithm(tmp_path: Path) -> None:
    digest, _ = image_digest(sparse_file(tmp_path / "a", MiB, {}))
    assert digest.startswith(ALGORITHM + ":") and len(digest.partition(":")[2]) == 64


def test_sparse_and_dense_copies_of_the_same_bytes_have_the_same_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    sparse = sparse_file(tmp_path / "sparse", 16 * MiB, {5 * MiB: data})
    dense = tmp_path / "dense"
    dense.write_bytes(bytes(5 * MiB) + data + bytes(8 * MiB))
    assert image_digest(sparse, block_size=4 * MiB)[0] == image_digest(dense, block_size=4 * MiB)[0]


def test_hole_blocks_are_not_read(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "big", 10 * BLOCK_SIZE, {3 * BLOCK_SIZE + 17: b"x"})
    _, stats = image_digest(image)
    assert stats.blocks == 10
    assert stats.blocks_read == 1


def test_one_flipped_byte_changes_the_digest(tmp_path: Path) -> None:
    data = bytearray(os.urandom(2 * MiB))
    before = image_digest(sparse_file(tmp_path / "a", 8 * MiB, {MiB: bytes(data)}), block_size=MiB)[0]
    data[12345] ^= 0xFF
    after = image_digest(sparse_file(tmp_path / "b", 8 * MiB, {MiB: bytes(data)}), block_size=MiB)[0]
    assert before != after


def test_size_is_part_of_the_digest(tmp_path: Path) -> None:
    small = image_digest(sparse_file(tmp_path / "a", 8 * MiB, {}), block_size=MiB)[0]
    large = image_digest(sparse_file(tmp_path / "b", 9 * MiB, {}), block_size=MiB)[0]
    assert small != large


def test_a_short_last_block_is_hashed(tmp_path: Path) -> None:
    a = image_digest(sparse_file(tmp_path / "a", 5 * MiB + 100, {5 * MiB + 50: b"a"}), block_size=MiB)[0]
    b = image_digest(sparse_file(tmp_path / "b", 5 * MiB + 100, {5 * MiB + 50: b"b"}), block_size=MiB)[0]
    assert a != b


def test_digest_matches_accepts_its_own_format_and_a_plain_sha256(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "a", 4 * MiB, {MiB: b"hello"})
    recorded, _ = image_digest(image)
    assert digest_matches(recorded, image)[0]
    plain = hashlib.sha256(image.read_bytes()).hexdigest()
    assert digest_matches(plain, image)[0]
    assert not digest_matches("0" * 64, image)[0]


def test_unknown_digest_format_is_a_clear_error(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "a", MiB, {})
    with pytest.raises(ChecksumError, match="unknown digest format"):
        digest_matches("md5:abc", image)


def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="cannot read image"):
        image_digest(tmp_path / "nope")


@settings(max_examples=25, deadline=None)
@given(writes=st.dictionaries(st.integers(0, 8 * 64 * 1024 - 1), st.binary(min_size=1, max_size=3000), max_size=6))
def test_the_digest_depends_on_the_bytes_only_never_on_the_holes(tmp_path_factory: pytest.TempPathFactory,
                                                                  writes: dict[int, bytes]) -> None:
    directory = tmp_path_factory.mktemp("prop")
    size = 8 * 64 * 1024 + 1000
    sparse = sparse_file(directory / "sparse", size, writes)
    dense = directory / "dense"
    dense.write_bytes(sparse.read_bytes())  # every zero written out, no holes
    block = 64 * 1024
    assert image_digest(sparse, block_size=block)[0] == image_digest(dense, block_size=block)[0]


def test_a_block_of_written_zeros_then_data_hashes_like_its_bytes(tmp_path: Path) -> None:
    data = os.urandom(100)
    dense = tmp_path / "dense"
    dense.write_bytes(bytes(20 * MiB) + data + bytes(MiB))  # zeros first, data late in the one block
    digest, _ = image_digest(dense, block_size=32 * MiB)
    leaf = hashlib.sha256(dense.read_bytes()).digest()
    expected = hashlib.sha256(DOMAIN + dense.stat().st_size.to_bytes(8, "big") + (32 * MiB).to_bytes(8, "big") + leaf)
    assert digest == f"{ALGORITHM}:{expected.hexdigest()}"


# ---- incremental digests -------------------------------------------------------------------------------
from reconciler.adapters.checksum import (  # noqa: E402
    LEAVES_MAGIC,
    ZERO_LEAF,
    Leaves,
    combine,
    image_leaves,
    leaves_of,
    leaves_path,
    parse_leaves,
    refresh_digest,
    update_leaves,
    write_leaves,
)

BLOCK = MiB  # small blocks keep these tests fast; the logic is the same at 64 MiB


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def test_combined_leaves_equal_the_image_digest(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "a", 5 * MiB + 7, {MiB + 3: os.urandom(1000), 5 * MiB: b"tail"})
    leaves, _ = image_leaves(image, block_size=BLOCK)
    assert combine(leaves.size, BLOCK, leaves.leaves) == leaves.digest == image_digest(image, block_size=BLOCK)[0]


def test_an_update_reads_only_the_touched_blocks_and_matches_a_full_recompute(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "a", 8 * MiB, {0: os.urandom(8 * MiB)})
    old, _ = image_leaves(image, block_size=BLOCK)
    overwrite(image, 3 * MiB + 100, os.urandom(10))
    overwrite(image, 6 * MiB - 5, bytes(10))  # straddles blocks 5 and 6: a punched range
    new, stats = update_leaves(image, old, [(3 * MiB + 100, 10), (6 * MiB - 5, 10)], False, block_size=BLOCK)
    assert stats.blocks_read == 3
    assert new.digest == image_digest(image, block_size=BLOCK)[0]


def test_a_fresh_image_reads_only_what_the_transfer_wrote(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "a", 16 * MiB, {9 * MiB: os.urandom(MiB)})
    leaves, stats = update_leaves(image, None, [(9 * MiB, MiB)], True, block_size=BLOCK)
    assert stats.blocks_read == 1 and leaves.leaves.count(ZERO_LEAF) == 15
    assert leaves.digest == image_digest(image, block_size=BLOCK)[0]


def test_without_usable_old_leaves_every_block_is_read(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "a", 4 * MiB, {0: os.urandom(4 * MiB)})
    other_size = Leaves(2 * MiB, BLOCK, (ZERO_LEAF, ZERO_LEAF))
    for old in (None, other_size):
        leaves, stats = update_leaves(image, old, [(0, 1)], False, block_size=BLOCK)
        assert stats.blocks_read == 4 and leaves.digest == image_digest(image, block_size=BLOCK)[0]


def test_the_leaves_file_lives_in_the_images_dataset_and_round_trips(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "disk-2000.raw", 3 * MiB, {MiB: b"x"})
    leaves, _ = image_leaves(image, block_size=BLOCK)
    path = leaves_path(image)
    assert path == tmp_path / ".reconciler" / "disk-2000.leaves"
    write_leaves(path, leaves)
    assert leaves_of(path) == leaves and path.stat().st_size == len(LEAVES_MAGIC) + 24 + 3 * 32 + 32


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_a_damaged_leaves_file_is_not_trusted(tmp_path: Path, damage: str) -> None:
    leaves = Leaves(3 * MiB, BLOCK, (ZERO_LEAF, os.urandom(32), ZERO_LEAF))
    data = leaves.to_bytes()
    broken = {"truncate": data[:-40], "flip": data[:50] + bytes([data[50] ^ 1]) + data[51:],
              "garbage": os.urandom(len(data)), "empty": b""}[damage]
    assert parse_leaves(data) == leaves
    assert parse_leaves(broken) is None


def test_refresh_digest_falls_back_to_a_full_recompute_when_the_leaves_file_is_missing_or_corrupt(
        tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "disk-1.raw", 6 * MiB, {0: os.urandom(6 * MiB)})
    first, _ = refresh_digest(image, [(0, 6 * MiB)], fresh=True, block_size=BLOCK)
    assert first == image_digest(image, block_size=BLOCK)[0]
    overwrite(image, 2 * MiB, b"changed")
    leaves_path(image).write_bytes(b"not a leaves file")  # the change outside `touched` must still count
    second, stats = refresh_digest(image, [], fresh=False, block_size=BLOCK)
    assert stats.blocks_read == 6 and second == image_digest(image, block_size=BLOCK)[0] != first
    leaves_path(image).unlink()
    third, stats = refresh_digest(image, [], fresh=False, block_size=BLOCK)
    assert stats.blocks_read == 6 and third == second
    fourth, stats = refresh_digest(image, [], fresh=False, block_size=BLOCK)  # now the leaves are trusted
    assert stats.blocks_read == 0 and fourth == second

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

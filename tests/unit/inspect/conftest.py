"""Helpers for the inspection tests: real images built with the lab's builders, in a per-test directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from reconciler.lab.images import PartSpec, build_image

MakeImage = Callable[..., Path]


@pytest.fixture
def make_image(tmp_path: Path) -> MakeImage:
    """`make_image(name, size, table, [PartSpec…], **build_image_kwargs)` -> path of a real sparse image."""

    def make(name: str, size: int, table: str = "gpt", partitions: Sequence[PartSpec] = (), **kwargs) -> Path:
        path = tmp_path / name
        build_image(path, size, table, partitions, **kwargs)
        return path

    return make


def patch(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place (to corrupt a structure the way a bad sector or a bug would)."""
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def extract(image: Path, start: int, length: int, dest: Path) -> Path:
    """Copy one partition's data extents to its own sparse file, so file system tools can open it."""
    with image.open("rb") as src, dest.open("wb") as dst:
        dst.truncate(length)
        position = start
        end = start + length
        while position < end:
            try:
                data = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:
                break
            if data >= end:
                break
            hole = min(os.lseek(src.fileno(), data, os.SEEK_HOLE), end)
            while data < hole:
                data += os.copy_file_range(src.fileno(), dst.fileno(), hole - data, data, data - start)
            position = hole
    return dest

"""Resolve secret references (`passwordFrom: {env: X}` / `{file: path}`) at the edge, never earlier."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from reconciler.policy.model import SecretRef


class SecretUnavailable(Exception):
    """The reference is valid but what it points at is missing; the message never contains a secret."""


def resolve_secret(ref: SecretRef, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> str:
    environ = os.environ if environ is None else environ
    if ref.env is not None:
        value = environ.get(ref.env)
        if value is None:
            raise SecretUnavailable(f"environment variable {ref.env} is not set")
        return value
    if ref.file is not None:
        path = Path(ref.file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            # A trailing newline is how editors and `echo` write secret files; it is never part of it.
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
    raise SecretUnavailable("secret reference names neither env nor file")

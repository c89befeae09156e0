"""The native ZFS properties a repository gives each new VM dataset: compression, recordsize, encryption.

They are set at creation (encryption can only be), so a change in the policy applies to VMs paired after
it, as with `zfs set` on a parent: existing datasets keep what their data was written with.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from reconciler.policy.model import Repository


def vm_dataset_options(repo: Repository) -> dict[str, str]:
    options: dict[str, str] = {}
    if repo.compression is not None:
        options["compression"] = repo.compression
    if repo.recordsize is not None:
        options["recordsize"] = repo.recordsize
    if repo.encryption is not None:
        key_file = repo.encryption.key_from.file
        if key_file is None:  # the policy builder refuses env keys; never put a key on a command line
            raise ValueError(f"repository {repo.name}: the encryption key must come from a file")
        options["encryption"] = repo.encryption.algorithm
        options["keyformat"] = repo.encryption.key_format
        # ZFS reads the key itself, at creation and at every `zfs load-key` after an import or reboot.
        options["keylocation"] = "file://" + quote(str(Path(key_file).absolute()))
    return options

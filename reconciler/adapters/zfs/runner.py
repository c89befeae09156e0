"""Running `zfs`/`zpool`: one place for errors, and the back-off zfs-fuse needs on "dataset is busy"."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence

from reconciler.adapters.zfs.base import ZfsError

# zfs-fuse mounts asynchronously: a dataset destroyed right after it was created (or cloned) is "busy"
# for a second or two. Back off up to ~6 s in total.
BUSY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0)


def run(args: Sequence[str], *, check: bool = True, timeout: float = 600,
        via: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run `args`; with `via` (e.g. `ssh -p 2222 root@host --`) on the machine that prefix reaches, as a
    remotely driven appliance is: the remote shell gets one safely quoted command line, and errors still
    name the `zfs` command, not the transport."""
    argv = [*via, shlex.join(args)] if via else list(args)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ZfsError(f"{args[0]} is not installed", args) from exc
    except subprocess.TimeoutExpired as exc:
        raise ZfsError(f"{args[0]} did not answer within {timeout:.0f} s", args) from exc
    if check and result.returncode != 0:
        raise ZfsError(f"{args[0]} {args[1] if len(args) > 1 else ''} failed", args, result.stderr)
    return result


def run_retrying_busy(args: Sequence[str], *, still_worth_retrying=None,
                      via: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run, retrying while ZFS says "dataset is busy". `still_worth_retrying()` can stop early (a held
    snapshot is "busy" too, for good: retrying would only waste time)."""
    for delay in (*BUSY_DELAYS, None):
        try:
            return run(args, via=via)
        except ZfsError as error:
            if not error.busy or delay is None:
                raise
            if still_worth_retrying is not None and not still_worth_retrying():
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")

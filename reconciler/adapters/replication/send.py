"""One replication step: `zfs send -p [-I base] snap | (rate limit) | ssh zfs receive`, then verify.

A replica counts only when `zfs receive` exited 0 *and* the target's newest snapshot has the source's guid:
ZFS discards a partial receive, so a killed send leaves nothing half-counted and the next apply simply sends
again from the common base. The new base is then held on both sides (tag `reconciler-replica-<name>`), the
old base's hold released, so source retention (which never prunes a held snapshot) keeps the chain unbroken.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass

from reconciler.adapters.replication.ssh import SshError, SshFailure, SshSession, classify
from reconciler.adapters.replication.target import list_local, list_remote
from reconciler.adapters.zfs.runner import run

CHUNK = 1024 * 1024


def hold_tag(replication: str) -> str:
    return f"reconciler-replica-{replication}"


class RateLimiter:
    """A token bucket: `take(n)` sleeps so that the long-run rate stays at `rate` bytes per second."""

    def __init__(self, rate: int | None, clock=time.monotonic, sleep=time.sleep) -> None:  # type: ignore[no-untyped-def]
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start = clock()
        self.sent = 0

    def take(self, n: int) -> None:
        self.sent += n
        if not self.rate:
            return
        ahead = self.sent / self.rate - (self.clock() - self.start)
        if ahead > 0:
            self.sleep(ahead)


@dataclass(frozen=True)
class SendResult:
    snapshot: str  # the newest snapshot now on the target (short name)
    base: str | None
    bytes_sent: int
    seconds: float


def _pump(source: subprocess.Popen[bytes], sink: subprocess.Popen[bytes], limiter: RateLimiter) -> None:
    assert source.stdout is not None and sink.stdin is not None
    try:
        while chunk := source.stdout.read(CHUNK):
            limiter.take(len(chunk))
            sink.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the receiving side died: its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            sink.stdin.close()


def send(ssh: SshSession, source_dataset: str, target_dataset: str, snapshot: str, base: str | None,
         replication: str, bandwidth_limit: int | None = None) -> SendResult:
    """Send `source_dataset@snapshot` (incrementally from `@base`, with every snapshot between: `-I`)."""
    started = time.monotonic()
    args = ["zfs", "send", "-p", *(["-I", f"@{base}"] if base else []), f"{source_dataset}@{snapshot}"]
    sender = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    receiver = subprocess.Popen(ssh.argv(["zfs", "receive", target_dataset]), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    limiter = RateLimiter(bandwidth_limit)
    _pump(sender, receiver, limiter)
    send_rc, recv_rc = sender.wait(), receiver.wait()
    assert sender.stderr is not None and receiver.stderr is not None
    send_err, recv_err = sender.stderr.read().decode(errors="replace"), receiver.stderr.read().decode(errors="replace")
    if recv_rc != 0:
        failure = classify(recv_rc, recv_err)
        raise SshError(failure, f"zfs receive {target_dataset} failed", recv_err)
    if send_rc != 0:
        raise SshError(SshFailure.COMMAND_FAILED, f"zfs send {source_dataset}@{snapshot} failed", send_err)
    _verify(ssh, source_dataset, target_dataset, snapshot)
    _move_holds(ssh, source_dataset, target_dataset, snapshot, base, hold_tag(replication))
    return SendResult(snapshot, base, limiter.sent, time.monotonic() - started)


def _verify(ssh: SshSession, source_dataset: str, target_dataset: str, snapshot: str) -> None:
    source = {s.name: s.guid for s in list_local(source_dataset) if s.dataset == source_dataset}
    target = {s.name: s.guid for s in list_remote(ssh, target_dataset) or () if s.dataset == target_dataset}
    if target.get(snapshot) != source.get(snapshot):
        raise SshError(SshFailure.COMMAND_FAILED, f"{target_dataset}@{snapshot} is not the source's snapshot "
                                                  "after receive (guid differs or missing): not counted")


def _move_holds(ssh: SshSession, source_dataset: str, target_dataset: str, snapshot: str, base: str | None,
                tag: str) -> None:
    """Hold the new common base on both sides before releasing the old one: never a moment without one."""
    run(["zfs", "hold", tag, f"{source_dataset}@{snapshot}"])
    ssh.run(["zfs", "hold", tag, f"{target_dataset}@{snapshot}"])
    if base:
        run(["zfs", "release", tag, f"{source_dataset}@{base}"], check=False)
        with contextlib.suppress(SshError):  # no hold there (held by hand, released by hand): nothing to do
            ssh.run(["zfs", "release", tag, f"{target_dataset}@{base}"])


def replicate_dataset(ssh: SshSession, source_dataset: str, target_dataset: str, replication: str,
                      bandwidth_limit: int | None = None) -> SendResult | None:
    """Bring the target up to the source's newest complete snapshot; None when it already is.

    The common base is the newest source snapshot whose guid the target has. A target with snapshots but
    no common base, or with snapshots newer than the base that the source does not have, is diverged:
    refused (nothing is destroyed on either side)."""
    source = [s for s in list_local(source_dataset) if s.dataset == source_dataset and s.complete]
    if not source:
        return None
    remote = [s for s in list_remote(ssh, target_dataset) or () if s.dataset == target_dataset]
    source_guids = {s.guid for s in source}
    remote_guids = {s.guid for s in remote}
    common = [s for s in source if s.guid in remote_guids]
    newest = source[-1]
    if remote and not common:
        raise SshError(SshFailure.COMMAND_FAILED, f"{target_dataset} has snapshots but none in common with "
                                                  f"{source_dataset}: diverged (a full resend needs it gone)")
    base = common[-1] if common else None
    newer_on_target = [s for s in remote if base is not None and s.created > base.created
                       and s.guid not in source_guids]
    if newer_on_target:
        raise SshError(SshFailure.COMMAND_FAILED, f"{target_dataset} diverged: "
                                                  f"{', '.join(s.name for s in newer_on_target)} are not ours")
    if base is not None and base.guid == newest.guid:
        if base.userrefs == 0:  # a run killed between receive and hold: place the holds now
            _move_holds(ssh, source_dataset, target_dataset, base.name, None, hold_tag(replication))
        return None
    if base is None:
        # the whole history goes, oldest first: the target's retention is usually the longer one
        first = send(ssh, source_dataset, target_dataset, source[0].name, None, replication, bandwidth_limit)
        if source[0].guid == newest.guid:
            return first
        rest = send(ssh, source_dataset, target_dataset, newest.name, source[0].name, replication,
                    bandwidth_limit)
        return SendResult(rest.snapshot, None, first.bytes_sent + rest.bytes_sent, first.seconds + rest.seconds)
    return send(ssh, source_dataset, target_dataset, newest.name, base.name, replication, bandwidth_limit)

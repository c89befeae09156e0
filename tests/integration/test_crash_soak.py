"""Randomised crash soak: real `kill -9` of `reconciler apply` at random moments, with guest writes in
between, each followed by one clean apply that must converge completely.

Every kill picks, from a seeded random generator, what the guests write and when the kill lands: a random
time into the run, or a random delay after a chosen action starts (backup, prune, repair, rebind,
VMware snapshot removal), so the rare windows are hit too, not only long transfers. A repair is killed by
first killing a transfer (which leaves the image dirty), then killing the next run's repair.

    pytest tests/integration/test_crash_soak.py --soak 300               # hundreds of kills
    RECONCILER_SOAK_SEED=1234 pytest tests/integration/test_crash_soak.py  # replay a failure

The seed is printed at the start and in every failure message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.adapters.checksum import digest_matches
from reconciler.adapters.zfs.backups import PREFIX
from reconciler.adapters.zfs.base import ZfsError
from tests.integration.backup_world import RECONCILER, MiB, World, make_world, sha256

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_crash_soak")]

VMS = {"db-01": (2000, 2001), "app-01": (2000,)}
# guest writes land in the first 32 MiB of each disk: changes matter, and hundreds of kills (each full re-read
# kept by a snapshot) still fit the test pool of 1 GiB
WRITABLE = 32 * MiB


@dataclass(frozen=True)
class Kill:
    """When to kill: `after` seconds after `trigger` (an action starting) or after the start."""

    trigger: str | None  # an action starting, "disk-started"/"disk-done", or None: a time into the run
    after: float
    before: Kill | None = None  # killed first, in a separate run (e.g. a transfer before a repair)
    rebind: bool = False  # the VM's recorded address is changed first, so the run rebinds

    def describe(self) -> str:
        what = f"{self.after:.2f} s after {self.trigger or 'the start'}"
        prefix = f"{self.before.describe()}, then " if self.before else ""
        return prefix + what + (" (with a rebind)" if self.rebind else "")


class Timings:
    """How long each phase took in the runs so far (a lab run is a few seconds), so that a kill aimed at a
    phase lands inside it. The seed fixes the scenarios and the fractions; the delays scale with these."""

    def __init__(self) -> None:
        self.spans: dict[str, list[float]] = {}

    def typical(self, what: str, default: float) -> float:
        recent = sorted(self.spans.get(what, [])[-9:])
        return recent[len(recent) // 2] if recent else default

    def learn(self, wall: float, events: list[dict[str, Any]]) -> None:
        self.spans.setdefault("run", []).append(wall)
        started: dict[tuple[str, str], float] = {}
        for event in events:
            at = dt.datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
            key = (event.get("vm") or "", event.get("action") or "")
            if event["event"] == "action-started":
                started[key] = at
            elif event["event"] == "disk-done":
                started[(key[0], "disk-done")] = at  # the last disk's end: the ZFS snapshot comes next
            elif event["event"] == "action-done" and key in started:
                self.spans.setdefault(key[1], []).append(at - started.pop(key))
                if key[1] == "backup" and (key[0], "disk-done") in started:
                    self.spans.setdefault("disk-done", []).append(at - started.pop((key[0], "disk-done")))


def choose_kill(rng: random.Random, timings: Timings) -> Kill:
    scenario = rng.choice(("timed", "timed", "backup", "backup", "zfs-snapshot", "prune", "repair", "rebind",
                           "remove-vm-snapshot"))

    def within(what: str, default: float) -> float:
        return rng.uniform(0.0, 1.1 * timings.typical(what, default))

    if scenario == "timed":
        return Kill(None, 0.2 + within("run", 4.0))
    if scenario == "backup":
        return Kill("backup", within("backup", 1.0))
    if scenario == "zfs-snapshot":
        # a backup's end: the ZFS snapshot and its labels (the window issue 11 was found in)
        return Kill("disk-done", within("disk-done", 0.3))
    if scenario in ("repair", "remove-vm-snapshot"):
        # first a kill mid-transfer: it leaves a dirty image to repair and our VMware snapshot to remove
        first = Kill("disk-started", rng.uniform(0.0, 0.1))
        return Kill(scenario, within(scenario, 0.2), before=first)
    if scenario == "rebind":
        return Kill("rebind", within("rebind", 0.05), rebind=True)
    return Kill(scenario, within(scenario, 0.2))


@dataclass
class Killed:
    returncode: int
    killed: bool
    events: list[dict[str, Any]] = field(default_factory=list)


def apply_and_kill(world: World, kill: Kill, timings: Timings) -> Killed:
    """Run apply and SIGKILL it as `kill` says (only the apply process, as an operator's kill -9 does)."""
    command = [RECONCILER, "apply", str(world.policy_dir), "--state-dir", str(world.state_dir), "--auto-approve",
               "--json", "--at", world.next_time(), "--allow-mass-prune"]
    fired = threading.Event()
    began = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=world.env()) as process:

        def fire() -> None:
            if process.poll() is None:
                fired.set()
                os.kill(process.pid, signal.SIGKILL)

        timers = []

        def arm() -> None:
            timers.append(threading.Timer(kill.after, fire))
            timers[-1].start()

        if kill.trigger is None:
            arm()
        events = []
        assert process.stdout is not None
        for line in process.stdout:
            if not line.startswith("{"):
                continue
            events.append(json.loads(line))
            if kill.trigger is not None and not timers and _matches(events[-1], kill.trigger):
                arm()
        returncode = process.wait(120)
        for timer in timers:
            timer.cancel()
    last = events[-1] if events else {}
    # a kill while the finished run exits proves nothing: it does not count
    killed = fired.is_set() and returncode == -signal.SIGKILL and last.get("event") != "run-done"
    if not fired.is_set():
        timings.learn(time.monotonic() - began, events)
    print(f"  {kill.describe()}: {'killed' if killed else f'exit {returncode}'} after "
          f"{last.get('event')} {last.get('vm') or ''} {last.get('action') or ''}".rstrip())
    return Killed(returncode, killed, events)


def _matches(event: dict[str, Any], trigger: str) -> bool:
    if trigger in ("disk-started", "disk-done"):
        return event["event"] == trigger
    return event["event"] == "action-started" and event.get("action") == trigger


def guest_writes(world: World, rng: random.Random) -> None:
    for vm, keys in VMS.items():
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys)
            length = rng.choice((64 * 1024, 256 * 1024, MiB, 4 * MiB))
            offset = rng.randrange(0, WRITABLE - length, 64 * 1024)
            world.control.write(vm, key, offset, length=length, pattern=rng.choice(("random", "random", "zero")),
                                seed=rng.randrange(2**31))


def provoke_rebind(world: World, vm: str) -> None:
    """As if the VM had been re-registered: the chain still records its old address."""
    world.driver.set_properties(f"{world.dataset}/{world.instance_uuid(vm)}", {PREFIX + "vm-id": "vm-9999"})


def reconciler(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECONCILER, *args], capture_output=True, text=True, env=world.env(), timeout=300)


def check_converged(world: World, timings: Timings) -> None:
    """One clean apply after a kill: everything the issue promises."""
    began = time.monotonic()
    run = world.apply("--allow-mass-prune")
    assert run.returncode == 0, f"the clean apply failed:\n{run.report()}"
    timings.learn(time.monotonic() - began, run.events)
    for vm, keys in VMS.items():
        ours = [s for s in world.vmware_snapshots(vm) if s.startswith("reconciler-")]
        assert ours == [], f"{vm}: our VMware snapshots left behind: {ours}"
        dataset, snapshots = world.record(vm)
        assert dataset.dirty_run_id is None, f"{vm}: still dirty ({dataset.dirty_run_id})"
        incomplete = [s.name for s in snapshots if not s.complete]
        assert incomplete == [], f"{vm}: incomplete snapshots left: {incomplete}"
        newest = snapshots[-1]
        recorded = {d.key: d.sha256 for d in newest.disks}
        for key in keys:
            # the digest recorded at backup time is the disk's; `verify` proves the image still has it
            same, actual = digest_matches(recorded.get(key) or "", world.disk(vm, key)["file"])
            assert same, f"{vm} disk {key}: {newest.name} recorded {recorded.get(key)}, the disk is {actual}"
        verify = reconciler(world, "verify", vm, "--repository", world.dataset, "--driver", "cli")
        assert verify.returncode == 0, f"verify {vm}:\n{verify.stdout}{verify.stderr}"
    # backups are stamped with the VMware snapshot's (real) time, so "nothing due" is judged at real time
    replan = reconciler(world, "plan", str(world.policy_dir), "--state-dir", str(world.state_dir), "--json",
                        "--allow-mass-prune")
    assert replan.returncode == 0, replan.stderr
    plan = json.loads(replan.stdout)
    assert plan["actions"] == [], f"the re-plan is not empty: {json.dumps(plan['actions'])[:2000]}"


def soak_seed() -> int:
    text = os.environ.get("RECONCILER_SOAK_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> Iterator[World]:
    w = make_world(lab, tmp_path_factory.mktemp("soak"), "crash-soak", tuple(VMS), keep_last=2)
    first = w.apply()
    assert first.returncode == 0, first.report()
    yield w
    with contextlib.suppress(ZfsError):  # the pool is shared with the modules after this one
        w.driver.destroy_dataset(w.dataset, recursive=True)


def test_random_kill_9_during_apply_always_converges_on_the_next_run(world: World, soak_kills: int) -> None:
    seed = soak_seed()
    print(f"crash soak: seed {seed}, {soak_kills} kills (replay: RECONCILER_SOAK_SEED={seed})")
    rng, timings = random.Random(seed), Timings()
    kills = attempts = 0
    while kills < soak_kills:
        attempts += 1
        assert attempts <= 3 * soak_kills, f"seed {seed}: only {kills} of {attempts} runs could be killed"
        kill = choose_kill(rng, timings)
        guest_writes(world, rng)
        landed = _run_scenario(world, kill, rng, timings)
        kills += landed
        try:
            check_converged(world, timings)
        except AssertionError as exc:
            raise AssertionError(f"crash soak seed {seed}, kill {kills}/{soak_kills} "
                                 f"({kill.describe()}): {exc}") from None
    for vm, keys in VMS.items():  # and once, byte for byte, not only by digest
        newest = world.complete_backups(vm)[-1].name
        with world.snapshot_files(newest) as files:
            for key in keys:
                assert sha256(files / f"disk-{key}.raw") == world.source_sha(vm, key), f"seed {seed}: {vm} {key}"
    print(f"crash soak: {kills} kills in {attempts} runs, all converged (seed {seed})")


def _run_scenario(world: World, kill: Kill, rng: random.Random, timings: Timings) -> int:
    """The kills that landed (a run may finish before its trigger comes)."""
    landed = 0
    if kill.before is not None:
        landed += _run_scenario(world, kill.before, rng, timings)
    if kill.rebind:
        provoke_rebind(world, rng.choice(tuple(VMS)))
    result = apply_and_kill(world, kill, timings)
    assert result.returncode in (0, 1, -signal.SIGKILL), f"apply ended with {result.returncode}"
    return landed + int(result.killed)

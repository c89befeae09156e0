"""Hypothesis strategies: valid desired-state models (`PolicySet`) of every shape the language allows."""

from __future__ import annotations

import datetime as dt
import string

from hypothesis import strategies as st

from reconciler.policy.model import (
    Connection,
    Driver,
    Encryption,
    Exclusions,
    PolicySet,
    ProtectionPolicy,
    Quiesce,
    Repository,
    Retention,
    Schedule,
    ScheduleRule,
    SecretRef,
    Selector,
    TimeWindow,
    Transport,
    Weekday,
)

# any text a user may type on one line (no control characters, line separators or BOMs)
text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), min_size=1, max_size=12
)
identifier = st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True)
secret = st.one_of(
    identifier.map(lambda name: SecretRef(env=name)),
    text.filter(lambda t: "\x00" not in t).map(lambda t: SecretRef(file="/etc/reconciler/" + t)),
)
key_file = text.filter(lambda t: "\x00" not in t).map(lambda t: SecretRef(file="/etc/reconciler/" + t))
hex_bytes = st.sampled_from([20, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
thumbprint = hex_bytes.map(lambda raw: ":".join(f"{b:02X}" for b in raw))
address = st.sampled_from(
    ["vc.example.com", "10.0.0.5", "https://vc.example.com/sdk", "https://[2001:db8::1]:8443/sdk", "esx01", "::1"]
)


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


@st.composite
def connection(draw: st.DrawFn, name: str) -> Connection:
    pinned = draw(st.booleans())
    return Connection(
        name=name,
        address=draw(address),
        user=draw(text),
        password_from=draw(secret),
        thumbprint=draw(thumbprint) if pinned else None,
        insecure=not pinned,
        max_concurrent_per_host=draw(st.integers(1, 64)),
        nbd_bandwidth_share=draw(st.integers(1, 100)),
    )


@st.composite
def repository(draw: st.DrawFn, name: str) -> Repository:
    encrypted = draw(st.booleans())
    return Repository(
        name=name,
        dataset=draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,8}(/[a-z0-9_.:-]{1,8}){0,2}", fullmatch=True)),
        driver=draw(st.sampled_from(Driver)),
        compression=draw(st.sampled_from([None, "lz4", "zstd", "gzip-6", "off", "lzjb"])),
        recordsize=draw(st.sampled_from([None, "512", "4K", "128K", "1M", "16M"])),
        encryption=Encryption(
            key_from=draw(key_file),
            algorithm=draw(st.sampled_from(["aes-256-gcm", "aes-128-ccm"])),
            key_format=draw(st.sampled_from(["passphrase", "hex", "raw"])),
        )
        if encrypted
        else None,
    )


minutes = st.integers(0, 24 * 60 - 1).map(lambda m: dt.time(m // 60, m % 60))
window = st.tuples(minutes, minutes).filter(lambda w: w[0] != w[1]).map(lambda w: TimeWindow(*w))
rule = st.builds(
    ScheduleRule,
    days=st.frozensets(st.sampled_from(Weekday), min_size=1),
    every=st.integers(1, 30 * 86400).map(lambda s: dt.timedelta(seconds=s)),
    window=st.none() | window,
)


@st.composite
def schedule(draw: st.DrawFn, name: str) -> Schedule:
    timezone = draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]))
    if draw(st.booleans()):
        cron = draw(st.sampled_from(["0 22 * * *", "*/15 * * * *", "30 1 * * 1-5", "0 0 1 * *"]))
        return Schedule(name=name, timezone=timezone, cron=cron)
    return Schedule(name=name, timezone=timezone, rules=tuple(draw(st.lists(rule, min_size=1, max_size=3))))


def retention(name: str) -> st.SearchStrategy[Retention]:
    counts = st.integers(0, 400)
    return st.builds(
        Retention,
        name=st.just(name),
        keep_all_for=st.integers(0, 90 * 86400).map(lambda s: dt.timedelta(seconds=s)),
        daily=counts,
        weekly=counts,
        monthly=counts,
        yearly=st.integers(0, 50),
        keep_last=st.integers(1, 100),
    )


def _criteria(draw: st.DrawFn, ids: list[str], uuids: list[str]) -> dict:
    chosen = {
        "ids": tuple(ids),
        "instance_uuids": tuple(uuids),
        "names": tuple(draw(st.lists(text, max_size=3))),
        "folders": tuple(draw(st.lists(text, max_size=2))),
        "tags": tuple(draw(st.lists(text, max_size=2))),
    }
    if not any(chosen.values()):
        chosen["names"] = ("*",)
    return chosen


@st.composite
def policy(draw: st.DrawFn, name: str, index: int, refs: dict[str, list[str]]) -> ProtectionPolicy:
    # ids and uuids unique across all policies (index prefix), so no VM is claimed twice
    numbers = draw(st.lists(st.integers(0, 999), unique=True, max_size=3))
    ids = [f"vm-{index}{n:03d}" if draw(st.booleans()) else f"{index}{n:03d}" for n in numbers]
    uuids = [
        f"{index:08x}-0000-4000-8000-{n:012x}" for n in draw(st.lists(st.integers(0, 10**9), unique=True, max_size=2))
    ]
    exclude = Selector(**_criteria(draw, [], [])) if draw(st.booleans()) else None
    transports = draw(st.permutations(list(Transport)).flatmap(lambda p: st.integers(1, len(p)).map(lambda n: p[:n])))
    return ProtectionPolicy(
        name=name,
        connection=draw(st.sampled_from(refs["connections"])),
        repository=draw(st.sampled_from(refs["repositories"])),
        schedule=draw(st.sampled_from(refs["schedules"])),
        retention=draw(st.sampled_from(refs["retentions"])),
        select=Selector(**_criteria(draw, ids, uuids), exclude=exclude),
        exclusions=Exclusions(
            refs=draw(st.booleans()),
            dynamic_disk=draw(st.booleans()),
            upd=draw(st.booleans()),
            lvm=draw(st.booleans()),
            bitlocker=draw(st.booleans()),
            dedup=draw(st.booleans()),
            mount_points=tuple(draw(st.lists(text, max_size=2))),
        ),
        quiesce=draw(st.sampled_from(Quiesce)),
        transports=tuple(transports),
        paused=draw(st.booleans()),
        skip_free_blocks=draw(st.booleans()),
    )


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySet:
    counts = {kind: draw(st.integers(1, 2)) for kind in ("connections", "repositories", "schedules", "retentions")}
    refs = {
        "connections": names("conn", counts["connections"]),
        "repositories": names("repo", counts["repositories"]),
        "schedules": names("sched", counts["schedules"]),
        "retentions": names("keep", counts["retentions"]),
    }
    return PolicySet(
        connections={n: draw(connection(n)) for n in refs["connections"]},
        repositories={n: draw(repository(n)) for n in refs["repositories"]},
        schedules={n: draw(schedule(n)) for n in refs["schedules"]},
        retentions={n: draw(retention(n)) for n in refs["retentions"]},
        policies={n: draw(policy(n, i, refs)) for i, n in enumerate(names("policy", draw(st.integers(0, 3))))},
    )


__all__ = ["policy_sets", "string"]

"""From one schema-valid document to a model value, with the checks a schema cannot express.

Each check reports at the node it is about. Nothing here looks at other documents (see `crosscheck`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from croniter import croniter

from reconciler.policy.durations import parse_days, parse_duration, parse_window
from reconciler.policy.errors import PolicyError
from reconciler.policy.model import (
    Connection,
    Driver,
    Encryption,
    Exclusions,
    Kind,
    Location,
    ProtectionPolicy,
    Quiesce,
    Replication,
    Repository,
    Retention,
    Schedule,
    ScheduleRule,
    SecretRef,
    Selector,
    SshTarget,
    Transport,
    VerifyMode,
    Weekday,
)
from reconciler.policy.safe_yaml import Document
from reconciler.policy.schema import did_you_mean

_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_RECORDSIZE = re.compile(r"^(\d+)([KkMm]?)$")
ALL_DAYS = frozenset(Weekday)

Model = Connection | Repository | Schedule | Retention | ProtectionPolicy | Replication
_BANDWIDTH = re.compile(r"^(\d+)([KkMmGg]?)$")
_DATASET = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*$")
_SSH_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


@dataclass
class Built:
    """A document turned into a model value, plus what the cross-checks need to know about it."""

    kind: Kind
    name: str
    value: Model | None  # None: the document has schema errors, only its name is known
    name_at: Location
    references: dict[Kind, tuple[str, Location]] = field(default_factory=dict)
    claims: list[tuple[str, str, Location]] = field(default_factory=list)  # (field, VM id, where)


class _Checker:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.errors: list[PolicyError] = []

    def error(self, path: tuple[str | int, ...], message: str, hint: str | None = None, *, key: bool = False) -> None:
        self.errors.append(PolicyError(self.doc.at(path, key=key), message, hint))

    def parsed(self, path: tuple[str | int, ...], parser: Any, text: str) -> Any:
        try:
            return parser(text)
        except ValueError as exc:
            self.error(path, str(exc))
            return None


def _secret(spec: dict[str, Any], source_file: str) -> SecretRef:
    if "env" in spec:
        return SecretRef(env=spec["env"])
    path = spec["file"]
    if not os.path.isabs(path):  # relative to the policy file, so a policy set can be moved as a whole
        path = os.path.abspath(os.path.join(os.path.dirname(source_file), path))
    return SecretRef(file=path)


def _check_address(check: _Checker, address: str, insecure: bool) -> None:
    path = ("spec", "address")
    try:
        ipaddress.ip_address(address)
        return  # a bare IP address, IPv6 included (no brackets needed without a port)
    except ValueError:
        pass
    text = address if "://" in address else "//" + address
    try:
        parts = urlsplit(text)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        check.error(path, f"invalid address {address!r}: {exc}")
        return
    if "://" in address and parts.scheme not in ("https", "http"):
        check.error(path, f"invalid address {address!r}: the URL scheme must be https")
        return
    if parts.scheme == "http" and not insecure:
        check.error(path, "http:// sends the password in clear text", "use https://, or set insecure: true in a lab")
    if parts.username or parts.password:
        check.error(path, "the address must not carry credentials", "use `user` and `passwordFrom`")
    if not host:
        check.error(path, f"invalid address {address!r}: no host name")
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.match(host):
            check.error(path, f"invalid address {address!r}: {host!r} is not a host name or IP address")


def _connection(check: _Checker, name: str, spec: dict[str, Any]) -> Connection:
    thumbprint = spec.get("thumbprint")
    insecure = spec.get("insecure", False)
    if thumbprint is not None:
        size = len(thumbprint.split(":"))
        if size not in (20, 32):
            check.error(
                ("spec", "thumbprint"),
                f"thumbprint has {size} bytes: a SHA-1 thumbprint has 20, a SHA-256 one 32",
            )
        if insecure:
            check.error(("spec", "insecure"), "insecure: true contradicts the thumbprint pin", "remove one of them")
    elif not insecure:
        check.error(
            ("spec",),
            "no thumbprint: the server's certificate would not be verified",
            "add `thumbprint: AA:BB:…` (SHA-1 or SHA-256 of the certificate), or `insecure: true` for a lab",
            key=True,
        )
    _check_address(check, spec["address"], insecure)
    return Connection(
        name=name,
        address=spec["address"],
        user=spec["user"],
        password_from=_secret(spec["passwordFrom"], check.doc.start.file),
        thumbprint=thumbprint.upper() if thumbprint else None,
        insecure=insecure,
        max_concurrent_per_host=spec.get("maxConcurrentPerHost", 2),
        nbd_bandwidth_share=spec.get("nbdBandwidthShare", 40),
    )


def _repository(check: _Checker, name: str, spec: dict[str, Any]) -> Repository:
    recordsize = spec.get("recordsize")
    if recordsize is not None:
        number, unit = _RECORDSIZE.match(recordsize).groups()  # type: ignore[union-attr]  # schema-checked
        size = int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]
        if size < 512 or size > 16 * 1024 * 1024 or size & (size - 1):
            check.error(("spec", "recordsize"), f"recordsize {recordsize!r} must be a power of two from 512 to 16M")
    encryption = spec.get("encryption")
    if encryption and "file" not in encryption["keyFrom"]:
        check.error(("spec", "encryption", "keyFrom"), "an encryption key must come from a file",
                    "use keyFrom: {file: path}; ZFS reads the key itself, so it never passes through reconciler")
    return Repository(
        name=name,
        dataset=spec["dataset"],
        driver=Driver(spec.get("driver", "auto")),
        compression=spec.get("compression"),
        recordsize=recordsize,
        encryption=Encryption(
            key_from=_secret(encryption["keyFrom"], check.doc.start.file),
            algorithm=encryption.get("algorithm", "aes-256-gcm"),
            key_format=encryption.get("keyFormat", "passphrase"),
        )
        if encryption
        else None,
    )


def _timezone(check: _Checker, name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        zones = sorted(zoneinfo.available_timezones())
        check.error(("spec", "timezone"), f"unknown time zone {name!r}", did_you_mean(name, zones))


def _schedule(check: _Checker, name: str, spec: dict[str, Any]) -> Schedule:
    timezone = spec.get("timezone", "UTC")
    _timezone(check, timezone)
    if ("rules" in spec) == ("cron" in spec):
        check.error(("spec",), "a schedule needs either `rules` or `cron` (exactly one)", key=True)
    rules = []
    for index, rule in enumerate(spec.get("rules", [])):
        at = ("spec", "rules", index)
        days = check.parsed((*at, "days"), parse_days, rule["days"]) if "days" in rule else ALL_DAYS
        window = check.parsed((*at, "window"), parse_window, rule["window"]) if "window" in rule else None
        every = check.parsed((*at, "every"), parse_duration, rule["every"])
        if every is not None and not every:
            check.error((*at, "every"), "`every` must be longer than 0s")
        rules.append(ScheduleRule(days=days or ALL_DAYS, every=every or parse_duration("1h"), window=window))
    cron = spec.get("cron")
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        check.error(("spec", "cron"), f"invalid cron expression {cron!r}", "five fields: minute hour day month weekday")
    return Schedule(name=name, timezone=timezone, rules=tuple(rules), cron=cron)


def _retention(check: _Checker, name: str, spec: dict[str, Any]) -> Retention:
    keep_all_for = check.parsed(("spec", "keepAllFor"), parse_duration, spec.get("keepAllFor", "0s"))
    return Retention(
        name=name,
        keep_all_for=keep_all_for or parse_duration("0s"),
        daily=spec.get("daily", 0),
        weekly=spec.get("weekly", 0),
        monthly=spec.get("monthly", 0),
        yearly=spec.get("yearly", 0),
        keep_last=spec.get("keepLast", 1),
    )


def _selector(spec: dict[str, Any]) -> Selector:
    exclude = spec.get("exclude")
    return Selector(
        ids=tuple(spec.get("ids", ())),
        instance_uuids=tuple(u.lower() for u in spec.get("instanceUuids", ())),
        names=tuple(spec.get("names", ())),
        folders=tuple(spec.get("folders", ())),
        tags=tuple(spec.get("tags", ())),
        exclude=_selector(exclude) if exclude else None,
    )


def _policy(check: _Checker, name: str, spec: dict[str, Any], built: Built) -> ProtectionPolicy:
    select = spec["select"]
    if not any(select.get(key) for key in ("ids", "instanceUuids", "names", "folders", "tags")):
        check.error(
            ("spec", "select"),
            "select claims no VM: give at least one of ids, instanceUuids, names, folders, tags",
            key=True,
        )
    for kind, key in (
        (Kind.CONNECTION, "connection"),
        (Kind.REPOSITORY, "repository"),
        (Kind.SCHEDULE, "schedule"),
        (Kind.RETENTION, "retention"),
    ):
        built.references[kind] = (spec[key], check.doc.at(("spec", key)))
    for key in ("ids", "instanceUuids"):
        for index, vm in enumerate(select.get(key, ())):
            built.claims.append((key, vm.lower(), check.doc.at(("spec", "select", key, index))))
    exclusions = spec.get("exclusions", {})
    return ProtectionPolicy(
        name=name,
        connection=spec["connection"],
        repository=spec["repository"],
        schedule=spec["schedule"],
        retention=spec["retention"],
        select=_selector(select),
        exclusions=Exclusions(
            refs=exclusions.get("refs", False),
            dynamic_disk=exclusions.get("dynamicDisk", False),
            upd=exclusions.get("upd", False),
            lvm=exclusions.get("lvm", False),
            bitlocker=exclusions.get("bitlocker", False),
            dedup=exclusions.get("dedup", False),
            mount_points=tuple(exclusions.get("mountPoints", ())),
        ),
        quiesce=Quiesce(spec.get("quiesce", "preferred")),
        transports=tuple(Transport(t) for t in spec.get("transports", ("nbd",))),
        paused=spec.get("paused", False),
        verify=VerifyMode(spec.get("verify", "none")),
        skip_free_blocks=spec.get("skipFreeBlocks", False),
    )


def parse_ssh_target(url: str) -> SshTarget:
    """`ssh://user@host[:port]/pool/dataset`; ValueError says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise ValueError(f"invalid target {url!r}: {exc}") from exc
    if parts.scheme != "ssh":
        raise ValueError(f"invalid target {url!r}: the scheme must be ssh://")
    if parts.password is not None:
        raise ValueError("the target must not carry a password: use identityFrom")
    if not parts.username or not _SSH_USER.match(parts.username):
        raise ValueError(f"invalid target {url!r}: name the remote user, ssh://user@host/pool/dataset")
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.match(host):
            raise ValueError(f"invalid target {url!r}: {host!r} is not a host name or IP address") from None
    dataset = parts.path.lstrip("/")
    if parts.query or parts.fragment or not _DATASET.match(dataset):
        raise ValueError(f"invalid target {url!r}: the path must be a dataset, pool first (ssh://{parts.username}"
                         f"@{parts.netloc.partition('@')[2]}/pool/dataset)")
    return SshTarget(parts.username, host, port, dataset)


def parse_bandwidth(text: str) -> int:
    number, unit = _BANDWIDTH.match(text).groups()  # type: ignore[union-attr]  # schema-checked
    value = int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit.lower()]
    if value < 64 * 1024:
        raise ValueError(f"bandwidthLimit {text!r} is below 64K per second: replication would never catch up")
    return value


def _replication(check: _Checker, name: str, spec: dict[str, Any], built: Built) -> Replication:
    for kind, key in ((Kind.REPOSITORY, "repository"), (Kind.SCHEDULE, "schedule"), (Kind.RETENTION, "retention")):
        built.references[kind] = (spec[key], check.doc.at(("spec", key)))
    target = check.parsed(("spec", "target"), parse_ssh_target, spec["target"])
    limit = spec.get("bandwidthLimit")
    identity = _secret(spec["identityFrom"], check.doc.start.file).file or ""
    return Replication(
        name=name,
        repository=spec["repository"],
        target=target or SshTarget("invalid", "invalid", 22, "invalid"),
        host_key=spec["hostKey"],
        identity_file=identity,
        schedule=spec["schedule"],
        retention=spec["retention"],
        bandwidth_limit=check.parsed(("spec", "bandwidthLimit"), parse_bandwidth, limit) if limit else None,
        paused=spec.get("paused", False),
    )


def build_document(doc: Document) -> tuple[Built, list[PolicyError]]:
    """The model value of a schema-valid document, and the semantic errors found in it."""
    check = _Checker(doc)
    kind = Kind(doc.data["kind"])
    name = doc.data["metadata"]["name"]
    spec = doc.data["spec"]
    built = Built(kind=kind, name=name, value=None, name_at=doc.at(("metadata", "name")))  # type: ignore[arg-type]
    value: Model
    if kind is Kind.CONNECTION:
        value = _connection(check, name, spec)
    elif kind is Kind.REPOSITORY:
        value = _repository(check, name, spec)
    elif kind is Kind.SCHEDULE:
        value = _schedule(check, name, spec)
    elif kind is Kind.RETENTION:
        value = _retention(check, name, spec)
    elif kind is Kind.REPLICATION:
        value = _replication(check, name, spec, built)
    else:
        value = _policy(check, name, spec, built)
    built.value = replace(value, location=doc.start)
    return built, check.errors

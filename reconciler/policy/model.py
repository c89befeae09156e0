"""The desired state: what the policy files declare, as plain frozen values.

The loader (`reconciler.policy.load`) produces a `PolicySet`; the planner reads it and nothing else
from the policy files. Every document keeps the `Location` it came from so that any later error
(a cross-check, a plan diagnostic) can point at `file:line:col`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

API_VERSION = "reconciler/v1"


@dataclass(frozen=True, order=True)
class Location:
    """A place in a policy file; line and col are 1-based (what editors show)."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Kind(StrEnum):
    CONNECTION = "Connection"
    REPOSITORY = "Repository"
    SCHEDULE = "Schedule"
    RETENTION = "Retention"
    PROTECTION_POLICY = "ProtectionPolicy"
    REPLICATION = "Replication"


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from; exactly one of `env` / `file` is set. Never the secret itself."""

    env: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class Connection:
    name: str
    address: str  # host name, IP, or https URL of a vCenter or a standalone ESXi host
    user: str
    password_from: SecretRef
    thumbprint: str | None = None  # SHA-1 or SHA-256 of the server certificate, colon-separated hex
    insecure: bool = False  # only when set explicitly: no certificate pin at all
    max_concurrent_per_host: int = 2
    nbd_bandwidth_share: int = 40  # percent of a host's management link NBD may use
    location: Location = field(default=Location("<memory>"), compare=False)


class Driver(StrEnum):
    AUTO = "auto"
    PYZFS = "pyzfs"
    CLI = "cli"


@dataclass(frozen=True)
class Encryption:
    """ZFS native encryption for new VM datasets (OpenZFS only; zfs-fuse has none)."""

    key_from: SecretRef  # a file: ZFS reads it itself (keylocation=file://)
    algorithm: str = "aes-256-gcm"
    key_format: str = "passphrase"


@dataclass(frozen=True)
class Repository:
    name: str
    dataset: str  # parent dataset, e.g. tank/agentless; one child dataset per protected VM
    driver: Driver = Driver.AUTO
    compression: str | None = None
    recordsize: str | None = None
    encryption: Encryption | None = None
    location: Location = field(default=Location("<memory>"), compare=False)


class Weekday(IntEnum):
    """Monday is 0, as `datetime.weekday()` counts."""

    MON = 0
    TUE = 1
    WED = 2
    THU = 3
    FRI = 4
    SAT = 5
    SUN = 6


@dataclass(frozen=True)
class TimeWindow:
    """A daily window; `end <= start` means it crosses midnight (22:00-06:00)."""

    start: dt.time
    end: dt.time


@dataclass(frozen=True)
class ScheduleRule:
    """Backups every `every` on `days` inside `window` (None: the whole day)."""

    days: frozenset[Weekday]
    every: dt.timedelta
    window: TimeWindow | None = None


@dataclass(frozen=True)
class Schedule:
    """Either ordered `rules` (the first matching rule wins) or a `cron` expression."""

    name: str
    timezone: str = "UTC"  # IANA name
    rules: tuple[ScheduleRule, ...] = ()
    cron: str | None = None
    location: Location = field(default=Location("<memory>"), compare=False)


@dataclass(frozen=True)
class Retention:
    """GFS: keep everything younger than `keep_all_for`, then N per day/week/month/year; `keep_last` floor."""

    name: str
    keep_all_for: dt.timedelta = dt.timedelta(0)
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    keep_last: int = 1
    location: Location = field(default=Location("<memory>"), compare=False)


@dataclass(frozen=True)
class Selector:
    """Which VMs a policy claims. A VM matches if any criterion matches; then `exclude` removes."""

    ids: tuple[str, ...] = ()  # MoRefIDs (vm-123) or standalone vmIDs (12): addresses
    instance_uuids: tuple[str, ...] = ()  # identities
    names: tuple[str, ...] = ()  # fnmatch globs
    folders: tuple[str, ...] = ()  # inventory folder paths; a folder matches its subfolders
    tags: tuple[str, ...] = ()  # "category:tag" or "tag"
    exclude: Selector | None = None


@dataclass(frozen=True)
class Exclusions:
    """Volumes a policy chooses not to back up; their byte ranges stay holes in the image."""

    refs: bool = False
    dynamic_disk: bool = False
    upd: bool = False
    lvm: bool = False
    bitlocker: bool = False
    dedup: bool = False
    mount_points: tuple[str, ...] = ()


class Quiesce(StrEnum):
    REQUIRED = "required"
    PREFERRED = "preferred"
    OFF = "off"


class Transport(StrEnum):
    NBD = "nbd"
    HOTADD = "hotadd"


class VerifyMode(StrEnum):
    """Whether each backup is verified (`reconciler verify`) right after it completes."""

    NONE = "none"
    AFTER_BACKUP = "after-backup"


@dataclass(frozen=True)
class ProtectionPolicy:
    name: str
    connection: str
    repository: str
    schedule: str
    retention: str
    select: Selector
    exclusions: Exclusions = Exclusions()
    quiesce: Quiesce = Quiesce.PREFERRED
    transports: tuple[Transport, ...] = (Transport.NBD,)
    paused: bool = False
    verify: VerifyMode = VerifyMode.NONE
    # thin backups: free blocks are not read. Opt-in: the image stops being a byte-for-byte copy of the
    # disk (what `verify` and undelete-from-backup assume), and NTFS's $LogFile is not checked yet
    skip_free_blocks: bool = False
    location: Location = field(default=Location("<memory>"), compare=False)


@dataclass(frozen=True)
class SshTarget:
    """`ssh://user@host[:port]/pool/dataset`: where replicas go; one child dataset per VM, as on the source."""

    user: str
    host: str
    port: int
    dataset: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port != 22 else ""
        return f"ssh://{self.user}@{host}{port}/{self.dataset}"


@dataclass(frozen=True)
class Replication:
    """Off-site copies of a repository's backups (`zfs send | ssh zfs recv`), with the target's own retention.

    The host key is pinned (public, so it may be inline) and the identity is a file reference: ssh never
    asks, never learns a new key, and no private key is ever in a policy file."""

    name: str
    repository: str
    target: SshTarget
    host_key: str  # "ssh-ed25519 AAAA…": the one key the target may present
    identity_file: str  # absolute path of the private key
    schedule: str
    retention: str
    bandwidth_limit: int | None = None  # bytes per second; None: unlimited
    paused: bool = False
    location: Location = field(default=Location("<memory>"), compare=False)


@dataclass(frozen=True)
class PolicySet:
    """All documents of all files, by name. Cross-references are checked by the loader."""

    connections: dict[str, Connection] = field(default_factory=dict)
    repositories: dict[str, Repository] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    retentions: dict[str, Retention] = field(default_factory=dict)
    policies: dict[str, ProtectionPolicy] = field(default_factory=dict)
    replications: dict[str, Replication] = field(default_factory=dict)

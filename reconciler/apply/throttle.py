"""Rate limits for NBD reads: one token bucket per ESXi host, shared by every transfer from that host.

A host's management NIC also carries vMotion, HA heartbeats and the UI; `nbdBandwidthShare` says how much
of it backups may take. The bucket is pure logic over an injected clock and sleep, so its behaviour is
tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MBIT = 1_000_000 // 8  # bytes per second in one Mbit/s
DEFAULT_NIC_MBPS = 1000  # a host whose NIC speed vSphere does not report: assume 1 GbE, the common minimum


def host_rate(nic_speed_mbps: int | None, share_percent: int) -> float:
    """Bytes per second NBD may read from a host: `share_percent` of its management link."""
    speed = nic_speed_mbps if nic_speed_mbps and nic_speed_mbps > 0 else DEFAULT_NIC_MBPS
    return speed * MBIT * max(0, min(share_percent, 100)) / 100


@dataclass
class TokenBucket:
    """`rate` bytes per second on average, bursts up to `burst` bytes. Thread-safe.

    `consume(n)` may be asked for more than `burst` at once (one NBD request is up to 32 MiB): the bucket
    then goes into debt and later callers wait it off, so the long-run rate still holds.
    """

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self._tokens = self.burst
        self._stamp = self.clock()

    def reserve(self, nbytes: int) -> float:
        """Take `nbytes` now; returns how long the caller must wait before using them (0: go)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= nbytes
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def consume(self, nbytes: int) -> None:
        wait = self.reserve(nbytes)
        if wait > 0:
            self.sleep(wait)


class HostThrottles:
    """One bucket per (connection, host), made on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def for_host(self, connection: str, host: str, rate: float) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get((connection, host))
            if bucket is None:
                # one second of traffic as burst: smooth enough for a link, big enough for 32 MiB requests
                bucket = TokenBucket(rate, max(rate, 1.0), self._clock, self._sleep)
                self._buckets[(connection, host)] = bucket
            return bucket

"""The per-host token bucket, on a fake clock: no test sleeps."""

from __future__ import annotations

import pytest

from reconciler.apply.throttle import MBIT, HostThrottles, TokenBucket, host_rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_host_rate_is_the_share_of_the_management_link() -> None:
    assert host_rate(10_000, 40) == 10_000 * MBIT * 0.4
    assert host_rate(1000, 100) == 125_000_000


def test_host_rate_assumes_one_gigabit_when_the_nic_speed_is_unknown() -> None:
    assert host_rate(None, 50) == host_rate(1000, 50)


def test_a_burst_within_the_bucket_does_not_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=100, clock=clock, sleep=clock.sleep)
    bucket.consume(60)
    bucket.consume(40)
    assert clock.slept == []


def test_reading_past_the_burst_waits_for_the_debt_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=100, clock=clock, sleep=clock.sleep)
    bucket.consume(100)
    bucket.consume(50)
    assert clock.slept == [pytest.approx(0.5)]


def test_a_request_larger_than_the_burst_is_allowed_and_paid_off_later() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=100, clock=clock, sleep=clock.sleep)
    bucket.consume(300)  # one 32 MiB NBD request can exceed the bucket
    assert clock.slept == [pytest.approx(2.0)]


def test_long_run_rate_holds_for_many_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=1000, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        bucket.consume(500)
    # 50,000 bytes at 1,000 B/s with 1,000 bytes of initial burst: 49 s
    assert clock.now == pytest.approx(49.0)


def test_idle_time_refills_the_bucket_but_never_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=100, clock=clock, sleep=clock.sleep)
    bucket.consume(100)
    clock.now += 60  # a long pause earns at most one burst
    bucket.consume(100)
    bucket.consume(100)
    assert clock.slept == [pytest.approx(1.0)]


def test_transfers_from_one_host_share_one_bucket_and_other_hosts_have_their_own() -> None:
    clock = FakeClock()
    throttles = HostThrottles(clock, clock.sleep)
    a1 = throttles.for_host("vc", "esx-01", 100)
    a2 = throttles.for_host("vc", "esx-01", 100)
    b = throttles.for_host("vc", "esx-02", 100)
    assert a1 is a2 and a1 is not b


def test_a_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)

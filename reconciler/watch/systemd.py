"""sd_notify without libsystemd: one datagram per message to $NOTIFY_SOCKET (`Type=notify` units).

READY=1 once the first plan is made, STATUS= for `systemctl status`, WATCHDOG=1 at half of
$WATCHDOG_USEC, STOPPING=1 on a graceful stop. Outside systemd every call is a no-op."""

from __future__ import annotations

import os
import socket
import threading


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False  # a monitoring hint must never stop the service
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None when not asked for."""
    env = environ if environ is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None


def start_watchdog(stop: threading.Event) -> threading.Thread | None:
    """Ping from a thread of its own. This proves the interpreter is alive, not that vSphere answers: a
    backup may rightly be quiet for long, and stuck vSphere tasks are bounded by `--task-timeout`."""
    interval = watchdog_interval()
    if interval is None:
        return None

    def ping() -> None:
        while not stop.wait(interval):
            notify("WATCHDOG=1")

    thread = threading.Thread(target=ping, name="sd-watchdog", daemon=True)
    thread.start()
    return thread

"""`reconciler watch` on the command line: bad options get one clear line, a missing policy directory does
not stop the service, SIGTERM stops it with exit 0, JSON logs are one object per line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

RECONCILER = str(Path(sys.executable).with_name("reconciler"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECONCILER, "watch", *args], capture_output=True, text=True, timeout=120)


def test_a_malformed_metrics_address_is_refused_clearly(tmp_path: Path) -> None:
    done = run(str(tmp_path), "--metrics-address", "nope")
    assert done.returncode == 2
    assert "'nope' is not HOST:PORT" in done.stderr and "Traceback" not in done.stderr


def test_a_metrics_port_in_use_is_refused_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(str(tmp_path), "--metrics-address", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "Address already in use" in done.stderr and "Traceback" not in done.stderr


def test_an_unknown_apply_mode_is_refused() -> None:
    done = run("policies", "--apply", "everything")
    assert done.returncode == 2 and "'everything' is not one of" in done.stderr


def test_a_missing_policy_directory_keeps_the_service_up_and_sigterm_stops_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-cloned-yet"
    process = subprocess.Popen([RECONCILER, "watch", str(missing), "--log-format", "json", "--metrics-address",
                                "off", "--state-dir", str(tmp_path / "state")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    records = []
    for line in process.stderr:
        records.append(json.loads(line))  # every line is one JSON object
        if records[-1]["event"] == "policy.invalid":
            break
    assert str(missing) in records[-1]["errors"][0]
    assert records[-1]["kept"] == "none yet: nothing runs"
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 0
    assert "Traceback" not in (rest or "")

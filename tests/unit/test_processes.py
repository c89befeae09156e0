"""Helper processes: liveness ignores zombies, and only our own program is ever signalled."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from reconciler.adapters import processes


def test_a_running_process_is_alive_and_has_its_program_name():
    assert processes.alive(os.getpid())
    assert processes.program_name(os.getpid()) == os.path.basename(sys.executable)


def test_a_zombie_is_not_alive():
    child = subprocess.Popen(["true"])
    while processes.alive(child.pid):  # exits at once; stays a zombie until waited for
        pass
    assert processes.program_name(child.pid) is None
    child.wait()


def test_terminate_leaves_a_process_of_another_program_alone():
    child = subprocess.Popen(["sleep", "30"])
    for _ in range(1000):  # until the forked child has exec'd `sleep` (its /proc entry says python before)
        if processes.program_name(child.pid) == "sleep":
            break
        time.sleep(0.01)
    try:
        assert not processes.terminate(child.pid, lambda pid: processes.program_name(pid) == "nbdkit")
        assert child.poll() is None
        assert processes.terminate(child.pid, lambda pid: processes.program_name(pid) == "sleep", timeout=5)
        assert child.wait(5) is not None
    finally:
        child.kill()
        child.wait()

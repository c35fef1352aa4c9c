"""A job's runner names its process exactly: gone once the process exits, never judged elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memsvc.workers import liveness

pytestmark = pytest.mark.skipif(liveness.machine() is None, reason="needs Linux /proc")


def test_this_process_is_not_gone_and_reads_back() -> None:
    runner = liveness.this_process()
    assert runner is not None and runner.pid == os.getpid()
    assert liveness.Runner.parse(str(runner)) == runner
    assert not liveness.is_gone(str(runner))


def test_a_process_that_exited_is_gone() -> None:
    code = "from memsvc.workers import liveness; print(liveness.this_process())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    runner = child.stdout.strip()
    assert liveness.Runner.parse(runner) is not None
    assert liveness.is_gone(runner)


def test_a_reused_pid_is_another_process() -> None:
    this = liveness.this_process()
    assert this is not None
    earlier = liveness.Runner(this.machine, this.pid, str(int(this.started) - 1))
    assert liveness.is_gone(str(earlier))


def test_processes_elsewhere_and_unreadable_names_are_not_judged() -> None:
    this = liveness.this_process()
    assert this is not None
    other_machine = liveness.Runner("another-host " + this.machine, 4_000_000, "1")
    assert not liveness.is_gone(str(other_machine))
    for text in ("", "no-slashes", "a/b/c", "/1/2"):
        assert not liveness.is_gone(text)

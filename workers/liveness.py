"""Which process runs a job, so that a job whose process is gone is retried at once.

procrastinate finds a dead worker by its silence: no heartbeat for `worker_stalled_after_s` (30 s),
and recovery looks once a minute, so a killed worker's job waited 30–90 s. A process on the same
machine can tell at once: a job's row names the process that runs it (`Runner`), and a process that
no longer exists is dead however recently it beat. Processes of other machines (or other pid
namespaces, where a pid means another process) are left to the heartbeat.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Runner:
    """A process, named so that it is never confused with a later one: where its pid means
    something (`machine`), the pid, and when the process started (a pid is reused, a start is not)."""

    machine: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.machine}/{self.pid}/{self.started}"

    @classmethod
    def parse(cls, text: str) -> Runner | None:
        machine, _, rest = text.rpartition("/")
        machine, _, pid = machine.rpartition("/")
        if not machine or not pid.isdigit():
            return None
        return cls(machine, int(pid), rest)


def machine() -> str | None:
    """Host name, kernel boot and pid namespace of this process: two processes with the same one
    see each other's pids (None where /proc does not say, i.e. not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()} {boot} {namespace}"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields 3… follow the last ')'.
    return stat.rpartition(")")[2].split()[19]


def this_process() -> Runner | None:
    where, pid = machine(), os.getpid()
    started = _started(pid)
    return None if where is None or started is None else Runner(where, pid, started)


def is_gone(runner: str) -> bool:
    """True only when `runner` names a process of this machine that no longer exists; a process
    elsewhere, or a name that does not parse, is not judged."""
    named = Runner.parse(runner)
    if named is None or named.machine != machine():
        return False
    return _started(named.pid) != named.started

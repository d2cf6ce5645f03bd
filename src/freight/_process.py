"""This process as a store records the owner of a run or a claim: its host, and
whether a process of this host still lives.

A runner takes over a run (a worker, a claim) whose owner is on its own host and whose
process is gone, without waiting for the owner's heartbeat or lease to lapse: a restart
right after ``kill -9`` goes on at once. Two rules make that safe:

1. The host is the host name *and* the PID namespace: a pid means something only in the
   namespace that gave it. Containers (or pods) sharing one host name have their own; on
   the host name alone, each would see the other's pid as dead and take over its live
   work, so the work would run twice at once.
2. A zombie is dead: a process killed with SIGKILL stays a zombie until its parent reaps
   it, and ``kill(pid, 0)`` still succeeds, yet it will never run again. On Linux its
   state is read from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

__all__ = ["alive", "host"]

_PROC = Path("/proc/self")


@functools.cache
def host() -> str:
    """This host as owners record it: ``name/pid:[inode]`` where the system has PID
    namespaces (rule 1), else the host name alone (macOS, Windows)."""
    name = socket.gethostname()
    try:
        return f"{name}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return name


def alive(pid: int | None) -> bool:
    """True while process ``pid`` of this host (and PID namespace) runs; a zombie is
    dead (rule 2)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        if _PROC.is_dir():  # Linux, and no such process
            return False
    except OSError:
        pass  # unreadable: ask the kernel below
    else:
        # "pid (comm) state ...": comm may hold spaces and parentheses, so the state is
        # the first field after the last ")".
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state not in (b"Z", b"X", b"x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""``serve`` runs the server as a child in its own process group, and passes it the stop signals.

Why: a signal sent to a whole process group — a terminal's Ctrl-C, ``kill -TERM -<pgid>``, some
process managers — would otherwise also reach vLLM's engine processes, which exit at once and cut
every stream the server was about to drain. In a process group of its own the server (and the
engine it starts) sees only what this supervisor forwards: the first SIGTERM/SIGINT drains, a
second one exits now. A process group, not a new session: Linux schedules each session as one
group (autogroup), so a session of its own would change how the server shares the CPU with
everything else started from the same terminal. systemd's default ``KillMode=control-group`` signals every process of the unit
whatever its session: the unit in deploy/systemd uses ``KillMode=mixed`` for that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

SUPERVISED = "HERMES_SUPERVISED"  # set in the child's environment: it runs the server itself
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: if the supervisor itself is killed (SIGKILL), get a SIGTERM (and drain)
    rather than run on unsupervised. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(argv: list[str]) -> int:
    """Run ``argv`` (the same command, supervised) in a new process group; return its exit status."""
    child = subprocess.Popen(argv, env={**os.environ, SUPERVISED: "1"}, process_group=0, preexec_fn=_die_with_parent)

    def forward(sig: int, _frame: FrameType | None) -> None:
        child.send_signal(signal.SIGTERM if sig == signal.SIGHUP else sig)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    code = child.wait()
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention

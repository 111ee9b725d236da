"""Process supervision, written once: start a child with its log, wait until it answers a health URL,
stop it (SIGTERM, then SIGKILL after a grace period), read the tail of its log, and find a process again
by pid after a restart.

Used by ``slotcon demo`` (the API and UI services), ``slotcon ui`` (Streamlit), the server's job
supervisor (``server.services.jobs``) and the tests' live servers. It imports nothing of the project,
so every package may use it (tests/test_imports.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

#: How long a stopped child gets to exit after SIGTERM before SIGKILL (services; jobs pass their own).
STOP_GRACE_S = 10.0


class ServiceError(RuntimeError):
    """A supervised child died or did not come up healthy; the message ends with its log tail."""


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the text file ``path`` ('' when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    own_session: bool = True,
) -> subprocess.Popen:
    """Starts ``argv`` with stdout and stderr appended to ``log`` and stdin closed; returns the process.

    ``own_session`` makes the child a session (and process-group) leader: a terminal's Ctrl-C or a
    parent's restart does not reach it, and :func:`stop` can kill its whole group."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen(
            list(argv),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=own_session,
        )


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Sends ``sig`` to the process group led by ``pid`` (a child started with ``own_session``); gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S, sig: int = signal.SIGTERM) -> int | None:
    """Sends ``sig`` (SIGTERM) to ``proc``, waits ``grace_s`` seconds, then SIGKILLs it (and its group when
    it leads one); returns its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        if _leads_group(proc.pid):
            kill_group(proc.pid)
        else:
            proc.kill()
        return proc.wait()


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False


def wait_healthy(
    proc: subprocess.Popen, url: str, *, name: str, log: Path | None = None, timeout_s: float = 120.0
) -> None:
    """Polls ``url`` until it answers 200. Raises :class:`ServiceError` (with the log tail) when ``proc``
    exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s

    def where() -> str:
        return f"; its log ({log}):\n{tail(log)}" if log is not None else ""

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"the {name} exited with code {proc.returncode}{where()}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise ServiceError(f"the {name} did not become healthy in {timeout_s:.0f} s{where()}")


@dataclass
class Service:
    """A supervised child process with its name and log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> Service:
        """Starts ``argv`` in its own session, logging to ``log``."""
        return cls(name, spawn(argv, log, env=env, cwd=cwd), Path(log))

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the service's log."""
        return tail(self.log, lines)

    def wait_healthy(self, url: str, timeout_s: float = 120.0) -> None:
        """:func:`wait_healthy` for this service."""
        wait_healthy(self.proc, url, name=self.name, log=self.log, timeout_s=timeout_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """:func:`stop` for this service."""
        return stop(self.proc, grace_s)


# ---------------------------------------------------------------- finding a process again by pid
def _proc_stat_state(pid: int) -> str | None:
    """The one-letter state in /proc/<pid>/stat ("R", "S", "Z", ...), or None when there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def reap(pid: int) -> int | None:
    """waitpid(WNOHANG) for our own zombie children; the exit code, or None when not ours/not done."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (zombies count as dead and are reaped when they are our children)."""
    if Path("/proc").is_dir():
        state = _proc_stat_state(pid)
        if state in ("Z", "X"):
            reap(pid)
            return False
        return state is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid`` from /proc, or None when unavailable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def same_command(argv: list[str], actual: list[str] | None) -> bool:
    """True when ``actual`` is the process we started with ``argv`` (interpreter path may differ)."""
    if actual is None:
        return not Path("/proc").is_dir()  # cannot check: trust the pid
    return actual[1:] == argv[1:] and Path(actual[0]).name.startswith(Path(argv[0]).name[:6])

"""The jobs supervisor: child processes (``python -m trainer``, ``torchrun``, ``python -m indexer``)
started, watched, stopped and re-attached after a server restart.

Each job is a row in :class:`~server.services.jobstore.JobStore`. A watcher thread polls the
children every ``poll_s`` seconds (requests also poll, so a status is never stale); a child is
its own session leader (:func:`server.processes.spawn`), so a server restart or Ctrl-C does not kill
it. Stopping sends SIGTERM to the child (the trainer saves ``current.pth`` and exits); after
:data:`STOP_GRACE_S` the whole process group gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from server.errors import ApiError, not_found
from server.processes import cmdline, kill_group, pid_alive, same_command, spawn
from server.services.jobstore import JobRow, JobStore
from server.services.progress_reader import MetricsReader

logger = logging.getLogger(__name__)

STOP_GRACE_S = 120.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]
VANISHED = "process vanished after server restart"


#: Variables a job never inherits: the API token is the server's alone.
PRIVATE_ENV = ("SLOTCON_API_TOKEN",)


def child_env() -> dict[str, str]:
    """The environment of a job: ours without the API token, unbuffered output, the project importable."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class Supervisor:
    """Starts, polls, stops and re-attaches job processes recorded in ``store``.

    ``on_finished(row)`` is called (from the watcher thread or a request thread) once per job when
    it reaches a final status.
    """

    def __init__(
        self, store: JobStore, poll_s: float = 0.5, on_finished: Callable[[JobRow], None] | None = None
    ) -> None:
        self.store = store
        self.poll_s = poll_s
        self.on_finished = on_finished
        self.metrics = MetricsReader()
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Re-attach or settle jobs left by a previous server, then start the watcher thread."""
        self.recover()
        self._thread = threading.Thread(target=self._watch, name="job-watcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching (children keep running; the next server re-attaches them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                logger.exception("job watcher iteration failed")

    def recover(self) -> None:
        """After a restart: a running job whose pid is alive with our command line is re-attached
        (polled by pid); any other is settled from its outputs or marked failed, never dropped, and
        ``on_finished`` runs for it as for a job that ends while watched (an index job that was to
        become the active index becomes it now)."""
        settled = []
        for row in self.store.active():
            if row.pid and pid_alive(row.pid) and same_command(row.argv, cmdline(row.pid)):
                logger.info("re-attached job %s (pid %s)", row.id, row.pid)
                continue
            settled.append(self._finish(row, exit_code=None, vanished=True))
        self._notify(settled)

    # ------------------------------------------------------------------ operations
    def launch(
        self,
        *,
        kind: str,
        name: str,
        argv: list[str],
        output_dir: Path,
        progress_path: Path,
        log_path: Path,
        config: dict,
        done_path: Path | None = None,
        exclusive: bool = False,
        exclusive_output: bool = False,
    ) -> JobRow:
        """Start ``argv`` as a job. Refuse (409) while another job of ``kind`` is active (``exclusive``),
        or while one of ``kind`` writes the same ``output_dir`` (``exclusive_output``); the check and
        the insert happen under one lock, so two simultaneous requests cannot both pass it."""
        with self._lock:
            if exclusive or exclusive_output:
                self.refresh()
                busy = self.store.active(kind)
                if exclusive_output:
                    busy = [r for r in busy if Path(r.output_dir) == Path(output_dir)]
                if busy:
                    what = f"a {kind} job" + (f" writing {Path(output_dir).name!r}" if exclusive_output else "")
                    raise ApiError(
                        409,
                        "job_conflict",
                        f"{what} is already running (job {busy[0].id}, {busy[0].name!r}); "
                        "stop it first or wait for it to finish",
                    )
            log_path.parent.mkdir(parents=True, exist_ok=True)
            job_id = self.store.insert(
                kind=kind,
                name=name,
                config=config,
                argv=argv,
                output_dir=str(output_dir),
                progress_path=str(progress_path),
                log_path=str(log_path),
                done_path=str(done_path) if done_path else None,
            )
            try:
                proc = spawn(argv, log_path, env=child_env())
            except OSError as e:
                self.store.update(job_id, status="failed", message=f"could not start: {e}", finished_at=time.time())
                raise ApiError(500, "job_start_failed", f"could not start the {kind} job: {e}") from e
            self._children[job_id] = proc
            self.store.update(job_id, pid=proc.pid, started_at=time.time())
            logger.info("started %s job %s (pid %s): %s", kind, job_id, proc.pid, " ".join(argv))
            return self.get(job_id)

    def get(self, job_id: int) -> JobRow:
        """The job (refreshed), or a 404."""
        row = self.store.get(job_id)
        if row is None:
            raise not_found("job", job_id)
        if row.active:
            self.refresh(row.id)
            row = self.store.get(job_id) or row
        return row

    def stop(self, job_id: int) -> JobRow:
        """Ask a running job to stop (SIGTERM; the trainer saves and exits). 409 when it is not running."""
        with self._lock:
            row = self.get(job_id)
            if not row.active or not row.pid:
                raise ApiError(409, "job_not_running", f"job {job_id} is not running (status {row.status})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(row.pid, signal.SIGTERM)
            if row.status != "stopping":
                self.store.update(job_id, status="stopping", stop_requested_at=time.time())
            logger.info("sent SIGTERM to job %s (pid %s)", job_id, row.pid)
            return self.store.get(job_id) or row

    def refresh(self, job_id: int | None = None) -> None:
        """Poll active jobs (one or all) and record those that ended."""
        finished: list[JobRow] = []
        with self._lock:
            rows = [r for r in ([self.store.get(job_id)] if job_id else self.store.active()) if r and r.active]
            for row in rows:
                ended, code = self._poll(row)
                if ended:
                    finished.append(self._finish(row, exit_code=code))
                elif (
                    row.status == "stopping"
                    and row.stop_requested_at
                    and row.pid
                    and time.time() - row.stop_requested_at > STOP_GRACE_S
                ):
                    logger.warning("job %s ignored SIGTERM for %.0f s: SIGKILL", row.id, STOP_GRACE_S)
                    kill_group(row.pid)
        self._notify(finished)

    def _notify(self, finished: list[JobRow]) -> None:
        """Run ``on_finished`` for each job that reached a final status (a failure is logged, and noted
        in the job's message)."""
        for row in finished:
            if self.on_finished is not None:
                try:
                    self.on_finished(row)
                except Exception as e:  # noqa: BLE001 - a callback must not break polling
                    logger.exception("on_finished callback failed for job %s", row.id)
                    note = f"its on-finish step failed ({type(e).__name__}); see the server log"
                    self.store.update(row.id, message="; ".join(m for m in (row.message, note) if m))

    def _poll(self, row: JobRow) -> tuple[bool, int | None]:
        proc = self._children.get(row.id)
        if proc is not None:
            code = proc.poll()
            if code is not None:
                del self._children[row.id]
            return code is not None, code
        if row.pid is None:
            return True, None
        return (not pid_alive(row.pid)), None

    def _finish(self, row: JobRow, exit_code: int | None, vanished: bool = False) -> JobRow:
        status, message = self._outcome(row, exit_code, vanished)
        self.store.update(row.id, status=status, exit_code=exit_code, message=message, finished_at=time.time())
        logger.info("job %s %s (exit code %s)%s", row.id, status, exit_code, f": {message}" if message else "")
        return self.store.get(row.id) or row

    def _outcome(self, row: JobRow, exit_code: int | None, vanished: bool) -> tuple[str, str | None]:
        """Final status and message from the trainer's last event, the exit code or the outputs."""
        if row.kind == "train":
            event = self.metrics.final_event(row.progress_path)
            if event is not None:
                kind = event.get("event")
                if kind == "finished":
                    return "succeeded", None
                if kind == "stopped":
                    return "stopped", event.get("message") or "stopped on request; current.pth saved"
                if kind == "failed":
                    return "failed", str(event.get("message") or "training failed; see the log")
        if exit_code is None and row.done_path and Path(row.done_path).exists():
            return "succeeded", None
        if row.stop_requested_at is not None:
            return "stopped", "stopped on request"
        if exit_code == 0:
            return "succeeded", None
        if exit_code is None:
            return "failed", VANISHED if vanished else "process ended while unobserved; see the log"
        return "failed", f"exited with code {exit_code}; see the log"

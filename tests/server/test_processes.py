"""Process supervision on real child processes: a health-checked HTTP server, one that dies at start-up,
one that ignores SIGTERM, and finding a process again by its pid and command line."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from server import processes
from server.processes import Service, ServiceError


def test_a_service_comes_up_healthy_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = processes.free_port()
    service = Service.start(
        "web",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        tmp_path / "web.log",
        cwd=tmp_path,
    )
    try:
        service.wait_healthy(f"http://127.0.0.1:{port}/", timeout_s=30)
        assert not processes.port_free("127.0.0.1", port)
        assert processes.pid_alive(service.proc.pid)
        assert processes.same_command(service.proc.args, processes.cmdline(service.proc.pid))
    finally:
        code = service.stop(grace_s=10)
    assert code == -signal.SIGTERM and not service.running()
    assert processes.port_free("127.0.0.1", port)
    assert not processes.pid_alive(service.proc.pid)


def test_a_service_that_dies_fails_with_its_log_tail(tmp_path: Path) -> None:
    script = "import sys; print('line one'); print('cannot open the index', flush=True); sys.exit(3)"
    service = Service.start("API", [sys.executable, "-c", script], tmp_path / "api.log")
    with pytest.raises(ServiceError, match=r"(?s)the API exited with code 3; its log .*line one\ncannot open"):
        service.wait_healthy(f"http://127.0.0.1:{processes.free_port()}/", timeout_s=30)
    assert service.tail(1) == "cannot open the index"


def test_a_service_that_never_answers_times_out(tmp_path: Path) -> None:
    service = Service.start("slow", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "slow.log")
    try:
        with pytest.raises(ServiceError, match="did not become healthy in 1 s"):
            service.wait_healthy(f"http://127.0.0.1:{processes.free_port()}/", timeout_s=1)
    finally:
        service.stop(grace_s=5)


def test_sigterm_ignored_means_sigkill_of_the_group(tmp_path: Path) -> None:
    """The child ignores SIGTERM and has a grandchild: after the grace period both are killed."""
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    service = Service.start("stubborn", [sys.executable, "-c", script], tmp_path / "stubborn.log")
    deadline = time.monotonic() + 30
    while not service.tail().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(service.tail().strip())
    start = time.monotonic()
    assert service.stop(grace_s=1) == -signal.SIGKILL
    assert 1 <= time.monotonic() - start < 10
    deadline = time.monotonic() + 10
    while processes.pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes.pid_alive(grandchild)


def test_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert processes.tail(tmp_path / "nothing.log") == ""
    (tmp_path / "x.log").write_text("a\nb\nc\n")
    assert processes.tail(tmp_path / "x.log", 2) == "b\nc"


def test_same_command_compares_arguments() -> None:
    assert processes.same_command(["/usr/bin/python3", "-m", "trainer"], ["/opt/python3.11", "-m", "trainer"])
    assert not processes.same_command(["python3", "-m", "trainer"], ["python3", "-m", "indexer"])
    assert processes.cmdline(2**22 + 12345) is None and not processes.pid_alive(2**22 + 12345)

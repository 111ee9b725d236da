"""Exposure is decided by the socket the server is served on, whatever the launcher.

Live checks run uvicorn inside a network namespace that the test creates, with a veth pair whose
address (192.0.2.1, TEST-NET-1) is not loopback; all traffic stays inside that namespace. Without
``ip netns`` (not root, no iproute2) they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.exposure import listening_addresses
from tests.server.conftest import call_asgi

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "192.0.2.1"  # TEST-NET-1, only ever inside the namespace
FACTORY = ["-m", "uvicorn", "--factory", "server.app:create_app", "--log-level", "warning"]


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def netns():
    """A fresh network namespace with lo up and a veth pair (v0 = 192.0.2.1/24); removed afterwards."""
    name = f"slotcon-test-{uuid.uuid4().hex[:8]}"
    try:
        made = _ip("netns", "add", name)
    except FileNotFoundError:
        pytest.skip("iproute2's `ip` is not installed: cannot create a network namespace")
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (`ip netns add`: {made.stderr.strip()})")
    try:
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["addr", "add", f"{ADDRESS}/24", "dev", "v0"],
            ["link", "set", "v0", "up"],
            ["link", "set", "v1", "up"],
        ):
            r = _ip("netns", "exec", name, "ip", *cmd)
            assert r.returncode == 0, r.stderr
        yield name
    finally:
        _ip("netns", "del", name)


def _env(make_settings, **extra: str) -> dict[str, str]:
    """The server's environment: settings in the test's temp tree, over a copy of the index (labels change)."""
    s = make_settings()
    index = shutil.copytree(s.index, s.state_dir.parent / "index-copy", dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTCON_")}
    env.update(
        PYTHONPATH=str(ROOT),
        SLOTCON_INDEX=str(index),
        SLOTCON_STATE_DIR=str(s.state_dir),
        SLOTCON_DATA_ROOT=str(s.data_root),
        SLOTCON_RUNS_DIR=str(s.runs_dir),
        SLOTCON_DEVICE="cpu",
        **extra,
    )
    return env


def _in_ns(ns: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _refuses(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, out  # uvicorn's start-up failure
    errors = [line for line in out.splitlines() if "slotcon serve:" in line]
    assert len(errors) == 1 and "refusing to listen" in errors[0] and "SLOTCON_API_TOKEN" in errors[0], out
    assert "Traceback" not in out
    return errors[0]


_HTTP = r"""
import json, sys, httpx
url, host, token = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    httpx.get(url + "/api/health", timeout=5)
except httpx.TransportError:
    sys.exit(7)  # not up yet
auth = {"Authorization": "Bearer " + token} if token else {}
out = {}
for name, method, path, headers, body in [
    ("health", "GET", "/api/health", {}, None),
    ("label_no_token", "PUT", "/api/prototypes/1/label", {}, {"label": "x"}),
    ("label_token", "PUT", "/api/prototypes/1/label", auth, {"label": "x"}),
    ("checkpoints_no_token", "GET", "/api/checkpoints", {}, None),
    ("other_host", "GET", "/api/health", {"Host": host}, None),
]:
    r = httpx.request(method, url + path, headers=headers, json=body, timeout=30)
    out[name] = r.status_code
print(json.dumps(out))
"""


def _wait_http(ns: str, url: str, proc: subprocess.Popen, env: dict[str, str], token: str = "") -> dict:
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _HTTP, url, "rebound.example", token],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode == 0:
            return json.loads(r.stdout.strip().splitlines()[-1])
        assert r.returncode == 7, r.stderr
        time.sleep(0.5)
    raise AssertionError("server did not answer")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_uvicorn_factory_on_all_addresses_without_token_refuses_to_start(netns, make_settings):
    """The form the app's docstring shows, bypassing ``slotcon serve``'s own check."""
    _refuses(_in_ns(netns, [sys.executable, *FACTORY, "--host", "0.0.0.0", "--port", "8000"], _env(make_settings)))


def test_uvicorn_on_a_non_loopback_address_without_token_refuses_to_start(netns, make_settings):
    line = _refuses(_in_ns(netns, [sys.executable, *FACTORY, "--host", ADDRESS, "--port", "8000"], _env(make_settings)))
    assert ADDRESS in line


def test_a_socket_bound_before_start_up_is_seen(netns, make_settings):
    """A launcher that binds first and hands uvicorn the descriptor (as gunicorn or --fd do)."""
    launcher = (
        "import os, socket, sys; s = socket.socket(); s.bind(('0.0.0.0', 8001)); s.listen(); "
        "os.set_inheritable(s.fileno(), True); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:], '--fd', str(s.fileno())])"
    )
    _refuses(_in_ns(netns, [sys.executable, "-c", launcher, *FACTORY], _env(make_settings)))


def test_with_a_token_it_serves_on_the_network_and_guards_writes(netns, make_settings):
    env = _env(make_settings, SLOTCON_API_TOKEN="s3cret-token")
    proc = _in_ns(netns, [sys.executable, *FACTORY, "--host", ADDRESS, "--port", "8002"], env)
    try:
        codes = _wait_http(netns, f"http://{ADDRESS}:8002", proc, env, "s3cret-token")
    finally:
        _stop(proc)
    assert codes == {
        "health": 200,
        "label_no_token": 401,
        "label_token": 200,
        "checkpoints_no_token": 401,
        "other_host": 200,
    }  # exposed with a token: any Host name, the token guards


def test_loopback_mode_accepts_only_localhost_names(netns, make_settings):
    """DNS rebinding: a foreign Host name reaching 127.0.0.1 is refused (400) in loopback mode."""
    env = _env(make_settings)
    proc = _in_ns(netns, [sys.executable, *FACTORY, "--host", "127.0.0.1", "--port", "8003"], env)
    try:
        codes = _wait_http(netns, "http://127.0.0.1:8003", proc, env)
    finally:
        _stop(proc)
    assert codes["health"] == 200 and codes["other_host"] == 400
    assert codes["label_no_token"] == 200 and codes["checkpoints_no_token"] == 200  # no token configured


def test_request_on_a_network_socket_without_token_is_refused(make_settings):
    """Whatever the launcher: a connection whose local address is not loopback gets nothing."""
    app = create_app(make_settings())
    with TestClient(app):  # lifespan ran: a loopback (test) server
        status, body, _ = call_asgi(
            app,
            "GET",
            "/api/health",
            server=(ADDRESS, 8000),
            client=("192.0.2.9", 5000),
            headers=[(b"host", f"{ADDRESS}:8000".encode())],
        )
    assert status == 503 and body["error"]["code"] == "exposed_without_token"


def test_host_check_in_loopback_mode(client):
    assert client.get("/api/health").status_code == 200  # "testserver" is a trusted name in the fixtures
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "ui.localhost"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 200, host
    r = client.get("/api/health", headers={"Host": "attacker.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_host"


def test_listening_addresses_reads_this_process_sockets():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert "127.0.0.1" in listening_addresses()
    with socket.socket(socket.AF_INET6) as s6:
        s6.bind(("::1", 0))
        s6.listen()
        assert "::1" in listening_addresses()

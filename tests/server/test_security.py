"""Exposure rules: loopback by default, no exposed server without a token, bearer token on every
mutating route, CORS limited to the UI origin, no client-chosen paths."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.__main__ import main as serve_main
from server.app import create_app
from server.settings import Settings, is_loopback


def test_defaults_bind_loopback(monkeypatch):
    for name in ("SLOTCON_HOST", "SLOTCON_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert s.host == "127.0.0.1" and not s.exposed
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SLOTCON_PORT", "8123")
    monkeypatch.setenv("SLOTCON_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SLOTCON_MAX_UPLOAD_BYTES", "1234")
    s = Settings(_env_file=None)
    assert s.port == 8123 and s.state_dir == tmp_path and s.max_upload_bytes == 1234


def test_refuses_to_start_exposed_without_token(make_settings, capsys):
    with pytest.raises(RuntimeError, match="SLOTCON_API_TOKEN"):
        create_app(make_settings(host="0.0.0.0"))
    assert serve_main(["--host", "0.0.0.0", "--port", "8999"]) == 2
    assert "refusing to listen" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method, url, body",
    [
        ("PUT", "/api/prototypes/1/label", {"label": "x"}),
        ("POST", "/api/jobs/train", {"preset": "cpu-demo"}),
        ("POST", "/api/jobs/index", {"run": "r"}),
        ("DELETE", "/api/jobs/1", None),
        ("POST", "/api/eval", {}),
        ("POST", "/api/index/activate", {"name": "x"}),
    ],
)
def test_exposed_server_needs_the_token_on_mutating_routes(make_settings, method, url, body):
    with TestClient(create_app(make_settings(host="0.0.0.0", api_token="s3cret"))) as client:
        r = client.request(method, url, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert "Bearer" in r.json()["error"]["message"] and r.headers["www-authenticate"] == "Bearer"
        wrong = client.request(method, url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API token"
        assert client.get("/api/prototypes").status_code == 200  # reads stay open
        assert client.get("/api/health").json()["auth_required"] is True


def test_token_grants_mutation(make_settings):
    with TestClient(create_app(make_settings(host="0.0.0.0", api_token="s3cret"))) as client:
        ok = client.put("/api/prototypes/1/label", json={"label": "sky"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["label"] == "sky"
        assert client.delete("/api/prototypes/1/label").status_code == 401
        cleared = client.delete("/api/prototypes/1/label", headers={"Authorization": "Bearer s3cret"})
        assert cleared.status_code == 200 and cleared.json()["label"] is None


def test_cors_only_for_the_ui_origin(make_settings):
    with TestClient(create_app(make_settings(ui_origin="http://localhost:8501"))) as client:
        ok = client.get("/api/health", headers={"Origin": "http://127.0.0.1:8501"})
        assert ok.headers.get("access-control-allow-origin") == "http://127.0.0.1:8501"
        evil = client.get("/api/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        pre = client.options(
            "/api/prototypes/1/label", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"}
        )
        assert pre.status_code == 400


def test_no_route_takes_a_filesystem_path(client):
    """Every request body schema is closed (extra keys rejected) and has no free-form path field."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("TrainRequest", "TrainOverrides", "IndexRequest", "EvalRequest", "ActivateRequest", "LabelUpdate"):
        props = schemas[name]["properties"]
        assert not {"path", "data", "output_dir", "out", "index", "root"} & set(props), name
        assert schemas[name].get("additionalProperties") is False, name


def test_json_bodies_are_size_limited(client):
    r = client.put(
        "/api/prototypes/1/label",
        content=b'{"label": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"
    assert client.get("/api/health").status_code == 200

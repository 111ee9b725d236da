"""The deployment files: ``docker-compose.yml`` validates against the Compose Specification's JSON
schema (vendored in ``tests/deploy/data``, see its README), and every file, target, module and setting it names exists.

No Docker engine runs here, so this is what can be checked without one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    """The parsed compose file (anchors and merge keys resolved)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_of(service: dict) -> Path:
    build = service["build"]
    return ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def test_compose_file_validates_against_the_compose_spec_schema(compose: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_schema_rejects_a_broken_compose_file(compose: dict) -> None:
    """The validation has teeth: an unknown service key and a wrong type are caught."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["healthcheck"]["retries"] = "many"
    broken["services"]["ui"]["not_a_compose_key"] = 1
    assert len(list(jsonschema.Draft201909Validator(schema).iter_errors(broken))) >= 2


def test_api_and_ui_services_with_healthchecks(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "ui"} <= set(services)
    for name in ("api", "ui"):
        check = services[name]["healthcheck"]["test"]
        assert check[0] == "CMD" and ("/api/health" in check[-1] or "/_stcore/health" in check[-1])
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    assert services["ui"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["ui"]["environment"]["SLOTCON_API_URL"] == "http://api:8000"


def test_gpu_trainer_profile_reserves_a_device(compose: dict) -> None:
    trainer = compose["services"]["trainer"]
    assert trainer["profiles"] == ["gpu"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)


def test_named_volumes_for_data_runs_indexes(compose: dict) -> None:
    declared = set(compose["volumes"])
    assert {"data", "runs", "indexes", "state"} <= declared
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/")):
                assert source in declared, f"service {name} mounts undeclared volume {source}"


def test_settings_come_from_environment_variables(compose: dict) -> None:
    """Every SLOTCON_* variable given to the API is a field of the server's settings."""
    settings = pytest.importorskip("server.settings")
    fields = set(settings.Settings.model_fields)
    env = compose["services"]["api"]["environment"]
    names = {k.removeprefix("SLOTCON_").lower() for k in env if k.startswith("SLOTCON_")}
    assert {"index", "api_token", "host", "runs_dir", "indexes_dir", "state_dir", "data_root"} <= names
    assert names <= fields, f"unknown settings: {sorted(names - fields)}"


def test_referenced_files_targets_and_modules_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        dockerfile = dockerfile_of(service)
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        text = dockerfile.read_text()
        stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M | re.I))
        assert service["build"]["target"] in stages, f"{name}: no stage {service['build']['target']}"
        for source in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, flags=re.M):
            for path in source.split():
                assert (ROOT / service["build"].get("context", ".") / path).exists(), f"COPY {path}"
        command = service.get("command", [])
        if isinstance(command, list) and command[:2] == ["python", "-m"]:
            mod = command[2].replace(".", "/")
            assert (ROOT / f"{mod}.py").is_file() or (ROOT / mod / "__main__.py").is_file(), command[2]


def dockerfile_stages(text: str) -> dict[str, str]:
    """Each ``FROM ... AS name`` stage's text, by name."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_ui_image_installs_no_torch_or_faiss() -> None:
    stages = dockerfile_stages((ROOT / "docker" / "Dockerfile").read_text())
    ui_stage = stages["ui-build"] + stages["ui"]
    assert "--from=torch" not in ui_stage.replace(" ", "")
    installs = " ".join(line for line in ui_stage.splitlines() if "pip install" in line).lower()
    assert "streamlit" in installs and "torch" not in installs and "faiss" not in installs
    assert "--no-deps" in installs

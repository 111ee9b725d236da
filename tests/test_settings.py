"""Every ``SLOTCON_*`` setting is read at the edges, in a settings object: ``core`` reads no environment
variable; the inference variables (``SLOTCON_INFER_*``, ``SLOTCON_INFER``) are read by
:class:`indexer.settings.InferSettings`, for the command lines and the server, and reach the model they run;
the UI's (``SLOTCON_API_URL``, ``SLOTCON_API_TOKEN``) by :class:`ui.settings.UiSettings`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.infer_model import PRECISIONS, InferenceModel, InferOptions
from core.model import SlotCon
from indexer.settings import InferSettings, read_infer_settings

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted((ROOT / "core").rglob("*.py"))
INFER_VARIABLES = (
    "SLOTCON_INFER",
    "SLOTCON_INFER_FOLD_BN",
    "SLOTCON_INFER_CHANNELS_LAST",
    "SLOTCON_INFER_PRECISION",
    "SLOTCON_INFER_COMPILE",
    "SLOTCON_INFER_EARLY_CHUNK",
)
UI_VARIABLES = ("SLOTCON_API_URL", "SLOTCON_API_TOKEN")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the variables it checks."""
    for name in (*INFER_VARIABLES, *UI_VARIABLES, "SLOTCON_INDEX"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------- core reads no environment


def environment_reads(path: Path) -> list[str]:
    """Where ``path`` touches the environment: ``os.environ``/``os.environb``/``os.getenv``/``os.putenv``
    however reached (``import os as o``, ``from os import environ``), as ``line: text``."""
    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in names:
            hits.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            hits += [f"{node.lineno}: from os import {a.name}" for a in node.names if a.name in names]
    return hits


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_core_reads_no_environment_variable(path: Path) -> None:
    assert environment_reads(path) == []


def test_the_walker_sees_an_environment_read(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os as o\nfrom os import getenv\n\ndef f():\n    return o.environ.get('X'), getenv('Y')\n")
    assert environment_reads(probe) == ["2: from os import getenv", "5: o.environ"]


# ---------------------------------------------------------------------------- the inference settings

#: (variable, value, the InferOptions field it sets or "fused", the value it takes)
DOCUMENTED = [
    ("SLOTCON_INFER", "plain", "fused", False),
    ("SLOTCON_INFER", " Plain ", "fused", False),
    ("SLOTCON_INFER", "fused", "fused", True),
    ("SLOTCON_INFER_FOLD_BN", "off", "fold_bn", False),
    ("SLOTCON_INFER_FOLD_BN", "0", "fold_bn", False),
    ("SLOTCON_INFER_FOLD_BN", "no", "fold_bn", False),
    ("SLOTCON_INFER_FOLD_BN", "false", "fold_bn", False),
    ("SLOTCON_INFER_CHANNELS_LAST", "on", "channels_last", True),
    ("SLOTCON_INFER_CHANNELS_LAST", "0", "channels_last", False),
    ("SLOTCON_INFER_CHANNELS_LAST", "auto", "channels_last", None),
    ("SLOTCON_INFER_PRECISION", "bf16", "precision", "bf16"),
    ("SLOTCON_INFER_PRECISION", "FP16", "precision", "fp16"),
    ("SLOTCON_INFER_PRECISION", "fp32", "precision", "fp32"),
    ("SLOTCON_INFER_COMPILE", "1", "compile", True),
    ("SLOTCON_INFER_COMPILE", "yes", "compile", True),
    ("SLOTCON_INFER_COMPILE", "true", "compile", True),
    ("SLOTCON_INFER_EARLY_CHUNK", "off", "early_chunk", False),
    ("SLOTCON_INFER_FOLD_BN", "", "fold_bn", True),  # empty: unset
]


def resolved(settings: InferSettings) -> dict:
    return {**vars(settings.options()), "fused": settings.fused}


def test_without_variables_the_defaults() -> None:
    assert resolved(InferSettings()) == {**vars(InferOptions()), "fused": True}
    assert InferOptions() == InferOptions(fold_bn=True, channels_last=None, precision="auto", early_chunk=True)
    assert not InferOptions().compile


@pytest.mark.parametrize(("variable", "value", "field", "expected"), DOCUMENTED)
def test_each_variable_sets_its_option(monkeypatch, variable: str, value: str, field: str, expected) -> None:
    defaults = resolved(InferSettings())
    monkeypatch.setenv(variable, value)
    assert resolved(InferSettings()) == {**defaults, field: expected}  # the others keep their defaults


def test_every_variable_is_covered() -> None:
    assert {v for v, *_ in DOCUMENTED} == set(INFER_VARIABLES)
    fields = {f for *_, f, _ in DOCUMENTED} - {"fused"}
    assert fields == set(vars(InferOptions())), "an InferOptions field without a variable"
    assert set(InferSettings.model_fields["precision"].annotation.__args__) == set(PRECISIONS)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SLOTCON_INFER", "fast"), ("SLOTCON_INFER_PRECISION", "fp8"), ("SLOTCON_INFER_EARLY_CHUNK", "sometimes")],
)
def test_a_malformed_variable_is_an_error_naming_it(monkeypatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}='{value}'"):
        read_infer_settings()


def test_in_code_the_options_take_their_names() -> None:
    settings = InferSettings(precision="fp16", SLOTCON_INFER="plain")
    assert (settings.options().precision, settings.fused) == ("fp16", False)
    with pytest.raises(ValueError):
        InferSettings(mode="plain")  # the choice takes its variable's name: no silently ignored keyword


def test_the_command_lines_flags_win(monkeypatch) -> None:
    from indexer import cli_common
    from indexer.__main__ import get_args_parser

    base = ["--checkpoint", "c.pth", "--data", "d", "--out", "o"]
    monkeypatch.setenv("SLOTCON_INFER_COMPILE", "on")
    monkeypatch.setenv("SLOTCON_INFER_PRECISION", "bf16")
    job = cli_common.job_options(get_args_parser().parse_args(base))
    assert job["fused"] and job["inference"] == replace(InferOptions(), compile=True, precision="bf16")
    assert job["compile"] is None  # --compile auto
    job = cli_common.job_options(get_args_parser().parse_args([*base, "--plain-inference", "--compile", "off"]))
    assert not job["fused"] and job["inference"] == InferOptions(precision="bf16") and job["compile"] is False
    monkeypatch.setenv("SLOTCON_INFER", "plain")
    assert not cli_common.job_options(get_args_parser().parse_args(base))["fused"]


def test_the_server_settings_carry_them(monkeypatch, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """``Settings.inference`` reads the variables, and the server's model is loaded with them."""
    from server.runtime import Runtime
    from server.services.digests import content_sha256
    from server.settings import Settings

    def model(**env: str):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = Settings(_env_file=None, state_dir=tmp_path / "state", device="cpu")
        return Runtime(settings)._load_model(tiny_checkpoint, content_sha256(tiny_checkpoint)).model

    fast = model()
    assert isinstance(fast, InferenceModel) and fast.options.fold_bn and fast.options.precision == "fp32"
    assert not model(SLOTCON_INFER_FOLD_BN="off", SLOTCON_INFER_CHANNELS_LAST="off").options.channels_last
    assert isinstance(model(SLOTCON_INFER="plain"), SlotCon)


def test_the_server_knows_where_its_index_came_from(monkeypatch, tmp_path: Path) -> None:
    from server.settings import Settings

    assert Settings(_env_file=None).index_source is None
    assert Settings(_env_file=None, index=tmp_path).index_source == "--index"
    monkeypatch.setenv("SLOTCON_INDEX", str(tmp_path))
    from_env = Settings(_env_file=None)
    assert (from_env.index, from_env.index_source) == (tmp_path, "SLOTCON_INDEX")
    flag = Settings(_env_file=None, index=tmp_path / "other")  # slotcon serve --index wins
    assert (flag.index, flag.index_source) == (tmp_path / "other", "--index")


@pytest.mark.parametrize(
    ("env", "args", "inference"),
    [
        ({"SLOTCON_INFER": "plain"}, [], "plain"),
        ({"SLOTCON_INFER_EARLY_CHUNK": "off", "SLOTCON_INFER_CHANNELS_LAST": "off"}, [], "fused fold_bn fp32"),
        ({"SLOTCON_INFER": "fused"}, ["--plain-inference"], "plain"),
    ],
    ids=["SLOTCON_INFER=plain", "options", "flag-wins"],
)
def test_a_real_index_build_records_them(
    env: dict, args: list, inference: str, tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """``python -m indexer`` in a child process with the variables set: its manifest records the model it ran."""
    out = tmp_path / "index"
    cmd = [sys.executable, "-m", "indexer", "--checkpoint", str(tiny_checkpoint), "--data", str(synthetic_root),
           "--out", str(out), "--limit", "2", "--batch-size", "2", "--no-progress", "--compile", "off",
           "--workers", "0", *args]  # fmt: skip
    child = {k: v for k, v in os.environ.items() if not k.startswith("SLOTCON_")}
    child |= {"PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["inference"] == inference


def test_a_malformed_variable_stops_the_command_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "indexer", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path),
           "--out", str(tmp_path / "o")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOTCON_INFER_PRECISION": "fp8"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2 and "slotcon index: error: SLOTCON_INFER_PRECISION='fp8'" in proc.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- the UI's settings


def test_the_ui_settings_read_the_api_url_and_token(monkeypatch) -> None:
    from ui.settings import UiSettings

    default = UiSettings()
    assert (default.api_url, default.token) == ("http://127.0.0.1:8000", None)
    monkeypatch.setenv("SLOTCON_API_URL", "http://api.example:9000/")
    monkeypatch.setenv("SLOTCON_API_TOKEN", "s3cret")
    settings = UiSettings()
    assert (settings.api_url, settings.token) == ("http://api.example:9000", "s3cret")
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("SLOTCON_API_URL", "")
    monkeypatch.setenv("SLOTCON_API_TOKEN", "")
    assert (UiSettings().api_url, UiSettings().token) == ("http://127.0.0.1:8000", None)


def test_the_ui_client_uses_them(monkeypatch) -> None:
    from ui import client

    monkeypatch.setenv("SLOTCON_API_URL", "http://api.example:9000/")
    monkeypatch.setenv("SLOTCON_API_TOKEN", "s3cret")
    assert client.server_url() == "http://api.example:9000"
    api = client._for(client.api_url())
    assert api.base_url == "http://api.example:9000"
    assert api._http.headers["Authorization"] == "Bearer s3cret"


# ---------------------------------------------------------------------------- the documented variables


def _documented() -> set[str]:
    """The variables of docs/deployment.md's settings tables."""
    text = (ROOT / "docs" / "deployment.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return {line.split("`")[1] for line in text.splitlines() if line.startswith("| `SLOTCON_")}


def _readers() -> dict[str, tuple[type, str]]:
    """Every variable a settings object reads, with the object and its field."""
    from server.settings import Settings
    from ui.settings import UiSettings

    readers: dict[str, tuple[type, str]] = {}
    for cls in (Settings, InferSettings, UiSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            if name == "inference":  # the nested InferSettings, read through its own variables
                continue
            variable = info.validation_alias if isinstance(info.validation_alias, str) else f"{prefix}{name}".upper()
            readers.setdefault(variable, (cls, name))
    return readers


def test_the_documented_variables_are_the_ones_read() -> None:
    """docs/deployment.md lists every variable a settings object reads, and only those."""
    assert _documented() == set(_readers())


def _other_value(info) -> tuple[str, object]:  # noqa: ANN001
    """A value for a setting other than its default, as the variable's text and as the setting reads it."""
    kind, default = str(info.annotation), info.default
    if "Path" in kind:
        return "/srv/elsewhere", Path("/srv/elsewhere")
    if "SecretStr" in kind:
        return "s3cret", "s3cret"
    if "Literal" in kind:
        other = next(c for c in info.annotation.__args__ if c != default)
        return other, other
    if "bool" in kind:
        return ("off", False) if default is not False else ("on", True)
    if "float" in kind:
        return str(default + 0.5), default + 0.5
    if "int" in kind:
        return str(default + 1), default + 1
    return "http://example.org:1234", "http://example.org:1234"


@pytest.mark.parametrize("variable", sorted(_readers()))
def test_each_documented_variable_reaches_its_setting(monkeypatch, variable: str) -> None:
    cls, field = _readers()[variable]
    text, expected = _other_value(cls.model_fields[field])
    monkeypatch.setenv(variable, text)
    got = getattr(cls(), field)
    assert (got.get_secret_value() if hasattr(got, "get_secret_value") else got) == expected

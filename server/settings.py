"""Server settings: ``SLOTCON_*`` environment variables (pydantic-settings), overridable by the CLI; how the
model runs: ``SLOTCON_INFER_*`` and ``SLOTCON_INFER`` (:class:`indexer.settings.InferSettings`)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.settings import InferSettings

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class Settings(BaseSettings):
    """Where the server finds its data and how it exposes itself.

    Every filesystem location is chosen here, server-side; no route takes a path from a client. Values given
    to the constructor (``slotcon serve``'s flags) win over the environment, and the settings remember which
    were given (:attr:`index_source`).
    """

    model_config = SettingsConfigDict(env_prefix="SLOTCON_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    index: Path | None = Field(
        None, description="default index directory (none: the stored default; without one index routes give 503)"
    )
    checkpoint: Path | None = Field(
        None, description="model for uploads when no index is loaded (else the index's checkpoint)"
    )
    data_root: Path = Field(Path("data/synthetic"), description="dataset root used by train/index jobs")
    runs_dir: Path = Field(Path("runs"), description="training jobs write <runs_dir>/<name>")
    indexes_dir: Path = Field(Path("indexes"), description="index jobs write <indexes_dir>/<name>")
    state_dir: Path = Field(Path("state"), description="jobs database, job logs, caches")
    api_token: SecretStr | None = Field(None, description="bearer token for mutating routes")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_upload_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb cap (width×height)")
    max_decode_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="per-upload cap on the memory a decode may take (predicted)"
    )
    upload_concurrency: int = Field(2, ge=1, le=64, description="uploads decoded and analysed at once")
    upload_queue_s: float = Field(60.0, gt=0, le=3600, description="how long an upload waits for a slot (then 503)")
    max_jpeg_scans: int = Field(64, ge=1, description="scans a JPEG upload may have (ordinary progressive: ~10)")
    max_image_frames: int = Field(1000, ge=1, description="frames or pages an upload may have (GIF, WebP, APNG, TIFF)")
    max_image_chunks: int = Field(
        10_000, ge=16, description="chunks, markers or decoder tiles an upload may have (PNG, JPEG, WebP, GIF, TIFF)"
    )
    decode_timeout_s: float = Field(10.0, gt=0, le=600, description="an upload's decode stops after this (then 503)")
    work_concurrency: int = Field(2, ge=1, le=64, description="figures, comparisons and named indexes opened at once")
    work_timeout_s: float = Field(30.0, gt=0, le=3600, description="a figure or comparison stops after this (503)")
    index_cache_entries: int = Field(
        4, ge=1, le=256, description="named indexes (besides the default) kept open, least recently used out"
    )
    index_cache_mb: int = Field(
        2048, ge=1, description="memory the named indexes kept open may hold together (files and models), MiB"
    )
    render_concurrency: int = Field(4, ge=1, le=256, description="dataset images decoded and rendered at once")
    trusted_hosts: str = Field(
        "", description="extra Host names accepted in loopback mode, comma-separated (localhost names always are)"
    )
    ui_origin: str = "http://localhost:8501"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    job_poll_s: float = Field(0.5, gt=0, description="how often the job watcher polls children")
    inference: InferSettings = Field(
        default_factory=InferSettings,
        description="how the model runs: SLOTCON_INFER_* and SLOTCON_INFER (read by InferSettings itself; jobs, "
        "child processes, inherit the variables)",
    )

    _given: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._given = frozenset(k for k, v in values.items() if v is not None and not k.startswith("_"))

    @property
    def index_source(self) -> str | None:
        """Where ``index`` came from: ``--index`` (given to the constructor, as ``slotcon serve`` gives its
        flags), ``SLOTCON_INDEX`` (the environment), None when there is none."""
        if self.index is None:
            return None
        return "--index" if "index" in self._given else "SLOTCON_INDEX"

    @property
    def exposed(self) -> bool:
        """True when ``host`` is not a loopback address (the server is reachable from elsewhere)."""
        return not is_loopback(self.host)

    @property
    def has_token(self) -> bool:
        """True when a non-empty API token is configured."""
        return bool(self.api_token and self.api_token.get_secret_value())

    @property
    def allowed_hosts(self) -> list[str]:
        """Extra Host names (``trusted_hosts``) accepted in loopback mode besides the localhost names."""
        return [h.strip() for h in self.trusted_hosts.split(",") if h.strip()]

    @property
    def cors_origins(self) -> list[str]:
        """The UI origins allowed by CORS: ``ui_origin`` plus its localhost/127.0.0.1 twin."""
        origins = [o.strip().rstrip("/") for o in self.ui_origin.split(",") if o.strip()]
        twins = [o.replace("//localhost", "//127.0.0.1") for o in origins]
        twins += [o.replace("//127.0.0.1", "//localhost") for o in origins]
        return list(dict.fromkeys(origins + twins))

    def check_exposure(self) -> None:
        """Raise ``RuntimeError`` when listening beyond loopback without ``api_token``."""
        if self.exposed and not self.has_token:
            raise RuntimeError(
                f"refusing to listen on {self.host!r} (not loopback) without an API token: "
                "set SLOTCON_API_TOKEN, or bind to 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual localhost names."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

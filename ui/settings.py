"""The UI's settings: where the API is (``SLOTCON_API_URL``) and the token it may need (``SLOTCON_API_TOKEN``).

Read from the environment by :class:`UiSettings` (pydantic-settings), the UI's one reader of them; the client
(:mod:`ui.client`) reads them once per browser session and keeps them.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ui.endpoints import DEFAULT_API_URL


class UiSettings(BaseSettings):
    """``api_url`` (``SLOTCON_API_URL``; default ``http://127.0.0.1:8000``, no trailing slash) and ``api_token``
    (``SLOTCON_API_TOKEN``; default none). An empty variable counts as unset."""

    model_config = SettingsConfigDict(env_prefix="SLOTCON_", extra="ignore", env_ignore_empty=True)

    api_url: str = DEFAULT_API_URL
    api_token: SecretStr | None = None

    @field_validator("api_url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        """Without a trailing slash; a blank one is the default."""
        if isinstance(value, str):
            return value.strip().rstrip("/") or DEFAULT_API_URL
        return value

    @property
    def token(self) -> str | None:
        """The bearer token, or None when none is set."""
        return (self.api_token.get_secret_value() or None) if self.api_token is not None else None

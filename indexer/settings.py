"""How the inference model runs, read from the environment at the edges (pydantic-settings).

:class:`InferSettings` is the one reader of the ``SLOTCON_INFER_*`` variables and of ``SLOTCON_INFER``; the
command lines (:mod:`indexer.cli_common`) and the server (``server.settings.Settings.inference``) build it,
and pass what :meth:`InferSettings.options` and :attr:`InferSettings.fused` give into the library
(:func:`core.infer_model.inference_model_for`), which reads no environment variable itself.

- ``SLOTCON_INFER_FOLD_BN``: ``fold_bn``, on or off (default on);
- ``SLOTCON_INFER_CHANNELS_LAST``: ``channels_last``, on, off or auto (default auto: None, decided for the
  device);
- ``SLOTCON_INFER_PRECISION``: ``precision``, auto, fp32, fp16 or bf16 (default auto);
- ``SLOTCON_INFER_COMPILE``: ``compile``, on or off (default off);
- ``SLOTCON_INFER_EARLY_CHUNK``: ``early_chunk``, on or off (default on);
- ``SLOTCON_INFER``: fused or plain (default fused; plain: the full model, the reference path).

On and off are also 1, true, yes and 0, false, no; values are read case-insensitively; an empty variable
counts as unset; any other value is an error (:func:`read_infer_settings`: a ValueError naming the
variable). A job the server launches is a child process that inherits the environment, so it reads the same
settings. A command line's flags win over them: ``--plain-inference`` runs the full model whatever
``SLOTCON_INFER`` says, ``--compile off`` never compiles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from core.infer_model import InferOptions

#: ``SLOTCON_INFER``: the variable that chooses the model (``plain``: the full model, the reference path).
MODE_ENV = "SLOTCON_INFER"


class InferSettings(BaseSettings):
    """The inference options (``SLOTCON_INFER_<FIELD>``) and the fused/plain choice (``SLOTCON_INFER``).

    Built from the environment (``InferSettings()``); in code the options take their names and the choice
    its variable's: ``InferSettings(precision="fp16", SLOTCON_INFER="plain")``."""

    model_config = SettingsConfigDict(env_prefix="SLOTCON_INFER_", extra="forbid", env_ignore_empty=True)

    fold_bn: bool = True
    channels_last: bool | None = Field(None, description="None: auto (on for CUDA and for CPU fp32)")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    compile: bool = False
    early_chunk: bool = True
    mode: Literal["fused", "plain"] = Field("fused", validation_alias=MODE_ENV)

    @field_validator("*", mode="before")
    @classmethod
    def _words(cls, value: Any, info: ValidationInfo) -> Any:
        """Text is read stripped and in lower case; ``channels_last`` ``auto`` is None (decided for the device)."""
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        return None if info.field_name == "channels_last" and value == "auto" else value

    @property
    def fused(self) -> bool:
        """Whether the inference model runs (``SLOTCON_INFER`` is not ``plain``)."""
        return self.mode == "fused"

    def options(self) -> InferOptions:
        """The :class:`core.infer_model.InferOptions` these settings say."""
        from core.infer_model import InferOptions  # late: reading the settings loads no torch

        return InferOptions(**self.model_dump(exclude={"mode"}))


def read_infer_settings() -> InferSettings:
    """:class:`InferSettings` from the environment; ValueError naming each malformed variable, its value and
    what it should be."""
    try:
        return InferSettings()
    except ValidationError as e:
        problems = []
        for error in e.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            variable = name if name == MODE_ENV else f"SLOTCON_INFER_{name.upper()}"
            problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
        raise ValueError("; ".join(problems)) from None

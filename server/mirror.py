"""Response models generated from the indexer's typed documents (``indexer/types.py``).

The API answers the slot statistics and the stored evaluations exactly as the indexer writes them, so
the models are not written twice: :func:`mirror` turns a dataclass (and the dataclasses it nests) into
a pydantic model with the same fields, types and defaults, and ``extra="forbid"``, so a field added to
the indexer appears in the OpenAPI schema and in the UI's client the same day, and a response that
does not fit fails the server's own tests rather than the UI's guesses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

_MODELS: dict[type, type[BaseModel]] = {}


class StrictModel(BaseModel):
    """Base of the mirrored models: unknown fields are an error, never passed through."""

    model_config = ConfigDict(extra="forbid")


def _annotation(tp: Any) -> Any:
    """``tp`` with every dataclass in it replaced by its mirrored model."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return mirror(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return typing.Union[tuple(_annotation(a) for a in args)]  # noqa: UP007 (built at run time)
    if origin is list:
        return list[_annotation(args[0])]
    if origin is dict:
        return dict[args[0], _annotation(args[1])]
    return tp


def _one_line(doc: str | None) -> str | None:
    return " ".join(doc.split()) if doc else None


def mirror(
    cls: type, *, name: str | None = None, extra: dict[str, tuple[Any, Any]] | None = None, doc: str | None = None
) -> type[BaseModel]:
    """The pydantic model of the dataclass ``cls``: one field per dataclass field (same annotation,
    nested dataclasses mirrored, same default), plus ``extra`` fields ``{name: (annotation, Field)}``
    that only the API adds (ids, inline images). Models without ``extra`` are cached per class."""
    if extra is None and name is None and cls in _MODELS:
        return _MODELS[cls]
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = Field(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = Field(...)
        fields[f.name] = (_annotation(hints[f.name]), default)
    overlap = set(fields) & set(extra or {})
    if overlap:
        raise ValueError(f"{cls.__name__}: the API's fields {sorted(overlap)} shadow the document's")
    fields.update(extra or {})
    model = create_model(
        name or cls.__name__,
        __base__=StrictModel,
        __doc__=doc or _one_line(cls.__doc__),
        __module__=__name__,
        **fields,
    )
    if extra is None and name is None:
        _MODELS[cls] = model
    return model

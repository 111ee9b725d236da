"""Page state in the URL, so that a copied link reopens the same view.

Each page declares its shareable state as :class:`Param` s (a session-state key, usually a widget's,
and the query parameter that carries it). :func:`restore` runs before the page's widgets: on a fresh
session it seeds each key from the link (a value that does not parse, or is not one of the choices,
is dropped and the default view opens). :func:`publish` runs after them and writes the current values
back into the address bar (defaults are left out, so plain links stay plain). Widgets bound to a
``Param`` take their default from it, never from a ``value=``/``index=`` of their own (Streamlit warns
when both are given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st


@dataclass(frozen=True)
class Param:
    """``key`` in ``st.session_state`` ↔ ``?name=`` in the URL; ``parse`` turns the text into the value
    (ValueError: not a valid value), ``default`` is the value a link without the parameter means."""

    key: str
    name: str
    parse: Callable[[str], Any] = str
    default: Any = None

    def text(self, value: Any) -> str:
        """The value as it appears in the URL."""
        if isinstance(value, bool):
            return "1" if value else "0"
        return str(value)


def integer(low: int = 0, high: int | None = None) -> Callable[[str], int]:
    """A parser of integers in ``[low, high]``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(f"{value} is out of range")
        return value

    return parse


def number(low: float, high: float) -> Callable[[str], float]:
    """A parser of floats in ``[low, high]``."""

    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range")
        return value

    return parse


def one_of(choices: Sequence[Any]) -> Callable[[str], Any]:
    """A parser accepting only ``choices`` (compared as text)."""
    by_text = {str(c): c for c in choices}

    def parse(text: str) -> Any:
        if text not in by_text:
            raise ValueError(f"{text!r} is not one of {list(by_text)}")
        return by_text[text]

    return parse


def flag(text: str) -> bool:
    """``1``/``true``/``yes`` or ``0``/``false``/``no``."""
    low = text.lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise ValueError(f"{text!r} is not a flag")


def restore(params: Sequence[Param]) -> None:
    """Seeds the session from the URL (only keys the session does not hold yet), then the defaults."""
    for p in params:
        if p.key in st.session_state:
            continue
        if p.name in st.query_params:
            try:
                st.session_state[p.key] = p.parse(st.query_params[p.name])
                continue
            except ValueError:
                pass  # a broken or stale link opens the default view
        if p.default is not None:
            st.session_state[p.key] = p.default


def publish(params: Sequence[Param]) -> None:
    """Writes the session's current values into the URL (a default or missing value: no parameter)."""
    for p in params:
        value = st.session_state.get(p.key)
        if value is None or value == p.default:
            if p.name in st.query_params:
                del st.query_params[p.name]
        elif st.query_params.get(p.name) != p.text(value):
            st.query_params[p.name] = p.text(value)

"""Page state in the URL, so that a copied link reopens the same view and Back/Forward move between views.

Each page declares its shareable state as :class:`Param` s (a session-state key, usually a widget's,
and the query parameter that carries it). :func:`restore` runs before the page's widgets: when the
address bar says something other than what the session last wrote there (a fresh session opened from a
link, Back or Forward, an edited address) the URL wins and every parameter is seeded from it (a missing,
broken or stale value gives the default view); otherwise the session's own values stand. :func:`publish`
runs after the widgets and records the current values; :func:`flush` (run once at the end of each page
run by ``ui.components.run_page``) writes them into the address bar in one change (defaults are left out,
so plain links stay plain), so one action makes one browser history entry. Parameters that no page
declares (e.g. ``index``) are left as they are. Widgets bound to a ``Param`` take their default from it,
never from a ``value=``/``index=`` of their own (Streamlit warns when both are given).
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


#: Session keys: what this session last wrote into the URL (name → text, ``None``: absent) and what this
#: run will write at its end.
_PUBLISHED = "_url_published"
_PENDING = "_url_pending"


def _url_text(name: str) -> str | None:
    return st.query_params.get(name)


def url_moved(params: Sequence[Param]) -> bool:
    """Whether the address bar holds values of ``params`` that this session did not write there: a link
    opened, Back or Forward pressed, the address edited."""
    published: dict[str, str | None] = st.session_state.get(_PUBLISHED, {})
    return any(_url_text(p.name) != published.get(p.name) for p in params)


def restore(params: Sequence[Param]) -> bool:
    """Seeds the session from the URL; returns whether the URL won (then every parameter is set from it,
    a missing or invalid one to its default, and a ``None`` default removes the key). When it did not,
    only keys the session lacks are set from it. A page that closes something sets its key to ``None``
    rather than deleting it, so that the URL's old value does not come back."""
    moved = url_moved(params)
    for p in params:
        if not moved and p.key in st.session_state:
            # set again on every run: Streamlit forgets a widget's value after a run that did not draw it
            # (the grid's filters while a prototype is open)
            st.session_state[p.key] = st.session_state[p.key]
            continue
        # a link, Back or Forward; or a key Streamlit forgot (a widget of another page): what the URL says
        text = _url_text(p.name)
        if text is not None:
            try:
                st.session_state[p.key] = p.parse(text)
                continue
            except ValueError:
                pass  # a broken or stale link opens the default view
        if p.default is not None:
            st.session_state[p.key] = p.default
        else:
            st.session_state.pop(p.key, None)
    if moved:  # what the URL says is now what the session shows
        published = st.session_state.setdefault(_PUBLISHED, {})
        published.update({p.name: _url_text(p.name) for p in params})
    return moved


def publish(params: Sequence[Param]) -> None:
    """Records the session's current values for the URL (a default or missing value: no parameter); the
    address bar changes once, in :func:`flush`."""
    pending: dict[str, str | None] = st.session_state.setdefault(_PENDING, {})
    for p in params:
        value = st.session_state.get(p.key)
        pending[p.name] = None if value is None or value == p.default else p.text(value)


def flush() -> None:
    """Writes the recorded values into the URL in one change (one history entry), keeping the parameters
    no page declared; nothing is sent when the URL already says it."""
    pending: dict[str, str | None] = st.session_state.pop(_PENDING, {})
    if not pending:
        return
    current = st.query_params.to_dict()
    target = {k: v for k, v in current.items() if k not in pending or pending[k] is not None}
    target.update({k: v for k, v in pending.items() if v is not None})
    st.session_state.setdefault(_PUBLISHED, {}).update(pending)
    if target != current:
        st.query_params.from_dict(target)

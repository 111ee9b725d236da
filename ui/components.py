"""Widgets shared by the pages: the API-error banner, the page guard, small formatters.

Every page runs its body through :func:`run_page`, so an unreachable API shows one clear banner and
an API error shows its message, never a traceback.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import streamlit as st

from ui.client import ApiRequestError, ApiUnreachable, api_url, fetch_health, server_url
from ui.url_state import flush

UNREACHABLE_TITLE = "The SlotCon API is not reachable"


def show_unreachable(exc: ApiUnreachable) -> None:
    """The one banner for a missing API: where the UI looked and how to start the API."""
    st.error(
        f"**{UNREACHABLE_TITLE}** at `{server_url()}`.\n\n"
        "Start it with `slotcon serve --index indexes/cpu-demo` (or `make demo`), or point the UI "
        "at it with `slotcon ui --api URL` / `SLOTCON_API_URL`.",
        icon="🔌",
    )


def show_api_error(exc: ApiRequestError, action: str | None = None) -> None:
    """A readable message for an API error answer (``action`` says what was being done)."""
    if isinstance(exc, ApiUnreachable):
        show_unreachable(exc)
        return
    prefix = f"{action} failed: " if action else ""
    hint = ""
    if exc.status == 503:
        hint = "\n\nNo index is active yet: build one on the **Training** page or with `slotcon index`."
    elif exc.status == 401:
        hint = "\n\nThe API needs a token: set `SLOTCON_API_TOKEN` for the UI."
    st.error(f"{prefix}{exc.message}{hint}", icon="⚠️")


def run_page(title: str, render: Callable[[], None], *, icon: str | None = None) -> None:
    """Sets the title and runs ``render``, turning API failures into a banner or message, then writes the
    page's state into the URL (one history entry per run)."""
    st.title(f"{icon} {title}" if icon else title)
    try:
        fetch_health(api_url())  # one banner up front when the API is down, whatever the page needs
        render()
    except ApiUnreachable as exc:
        show_unreachable(exc)
    except ApiRequestError as exc:
        show_api_error(exc)
    finally:
        flush()


def call(action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any | None:
    """Runs one API call for a user action; shows a readable error and returns ``None`` on failure."""
    try:
        return fn(*args, **kwargs)
    except ApiRequestError as exc:
        show_api_error(exc, action)
        return None


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """``0.1234`` → ``"12.3 %"``; ``None``/NaN → ``"–"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * float(x):.{digits}f} %"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``None``/NaN → ``"–"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{float(x):.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    """``3725`` → ``"1 h 02 min"``, ``75`` → ``"1 min 15 s"``; ``None`` → ``"–"``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) or seconds < 0:
        return "–"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def fmt_time(epoch_s: float | None, now: float | None = None) -> str:
    """A Unix time as people read it, in the UI's time zone: ``"14:03:27"`` today, ``"6 Dec 14:03"``
    earlier; ``None`` → ``"–"``."""
    if epoch_s is None or (isinstance(epoch_s, float) and math.isnan(epoch_s)):
        return "–"
    when = datetime.fromtimestamp(float(epoch_s))
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    if when.date() == today:
        return when.strftime("%H:%M:%S")
    return (
        f"{when.day} {when.strftime('%b')}"
        + (f" {when.year}" if when.year != today.year else "")
        + (f" {when.strftime('%H:%M')}")
    )


def prototype_title(p: dict) -> str:
    """``"#12 · sky"`` (or ``"#12"`` when unnamed)."""
    label = p.get("label")
    return f"#{p.get('id')} · {label}" if label else f"#{p.get('id')}"


_MARKDOWN_SPECIAL = "\\`*_{}[]()<>#+-.!|~$"
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def plain(text: Any) -> str:
    """``text`` made inert for ``st.markdown(..., unsafe_allow_html=True)``: HTML escaped and every
    Markdown punctuation character backslash-escaped, so a user's label shows as typed."""
    out = html.escape(str(text), quote=True)
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in out).replace("\n", " ")


def colour_swatch(colour: str, text: str) -> str:
    """Markdown/HTML for a coloured square followed by ``text`` (legends). ``text`` is Markdown the
    caller composed; any user-supplied part of it must be passed through :func:`plain` first. A
    ``colour`` that is not ``#rrggbb`` is drawn grey."""
    colour = colour if isinstance(colour, str) and _HEX_COLOUR.match(colour) else "#888888"
    return (
        f"<span style='display:inline-block;width:0.9em;height:0.9em;background:{colour};"
        f"border:1px solid #0003;margin-right:0.4em;vertical-align:middle'></span>{text}"
    )


def scroll_to(anchor: str) -> None:
    """Scrolls the page to the element with id ``anchor`` (a header's ``anchor=``), so that results drawn
    below the fold are seen; the script runs once, where it is drawn."""
    # the target may be drawn after this script runs: it retries for a few seconds
    st.html(
        "<script>(function(){let tries=40;const go=()=>{const el=document.getElementById("
        + json.dumps(anchor)
        + ");if(el){el.scrollIntoView({behavior:'smooth',block:'start'});}"
        "else if(--tries>0){setTimeout(go,150);}};go();})();</script>",
        unsafe_allow_javascript=True,
        width="content",
    )


#: Query parameters every view keeps when a link opens another one (the explored index and its build).
CARRIED_PARAMS = ("index", "build")


def page_link(page: str, label: str, params: dict[str, Any], *, icon: str | None = None) -> None:
    """A link, reading ``label`` as plain text, to ``page`` (``app_pages/<page>.py``, relative to the entry
    file) opening the view ``params`` describe (with the explored index carried over), navigated inside the
    app (Back returns). A page run on its own (tests, no ``st.navigation``) knows no other pages: the link
    is then a plain one to its URL."""
    from streamlit.errors import StreamlitAPIException

    carried = {k: st.query_params[k] for k in CARRIED_PARAMS if k in st.query_params}
    clean = carried | {k: str(v) for k, v in params.items() if v is not None}
    text = plain(label)  # the label is text (a concept's name): Streamlit would read it as Markdown
    try:
        st.page_link(f"app_pages/{page}.py", label=text, icon=icon, query_params=clean)
    except StreamlitAPIException:
        path = "" if page == "concepts" else page
        query = "&".join(f"{k}={quote(v)}" for k, v in clean.items())
        st.markdown(f"[{text}](/{path}{'?' + query if query else ''})")

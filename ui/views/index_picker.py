"""The sidebar's index picker: which index every page explores, carried in the URL (``?index=NAME&build=ID``)
so a copied link opens the same segments anywhere; making an index the default (confirmed), renaming
and deleting the others.

The URL wins when it names an index (a link, Back/Forward); otherwise the session's choice, else the
server's default, is written into it. A link whose build is not the index's current one (the index was
rebuilt under its name) keeps asking for that build, so the pages answer with the API's ``build_changed``
message instead of other segments, and the sidebar offers the current build.
"""

from __future__ import annotations

import re
from datetime import datetime

import streamlit as st

from ui.client import (
    EXPLORED_BUILD,
    EXPLORED_INDEX,
    ApiRequestError,
    clear_index_caches,
    fetch_checkpoints,
    fetch_index_listing,
    get_client,
    server_url,
)
from ui.components import call

_CHOICE = "index_picker_choice"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def describe(entry: dict) -> str:
    """One line about an index: checkpoint (run/file), epoch or step, images, K, when it was built."""
    parts = [f"{entry.get('run') + '/' if entry.get('run') else ''}{entry.get('checkpoint', '?')}"]
    if entry.get("epoch") is not None:
        parts.append(f"epoch {entry['epoch']}")
    if entry.get("step") is not None:
        parts.append(f"step {entry['step']}")
    parts += [f"{entry.get('num_images', '?')} images", f"K = {entry.get('num_prototypes', '?')}"]
    built = entry.get("built_at") or ""
    try:
        parts.append("built " + datetime.fromisoformat(built.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M"))
    except ValueError:
        if built:
            parts.append(f"built {built}")
    return " · ".join(parts)


def explore(name: str, build: str | None) -> None:
    """Explore ``name`` at ``build`` from now on: the session and the URL say so."""
    st.session_state[EXPLORED_INDEX] = name
    st.session_state[EXPLORED_BUILD] = build
    current = st.query_params.to_dict()
    target = {k: v for k, v in current.items() if k != "build"} | {"index": name} | ({"build": build} if build else {})
    if target != current:  # one change of the address (one history entry), and none when it already says so
        st.query_params.from_dict(target)


def _changed(items: dict[str, dict]) -> None:
    name = st.session_state.get(_CHOICE)
    if name in items:
        explore(name, items[name].get("build"))


def _forget() -> None:
    """Drop the answers cached for the indexes (after the default, a name or the list changed)."""
    fetch_index_listing.clear()
    fetch_checkpoints.clear()
    clear_index_caches()


def index_picker() -> None:
    """The sidebar block: the explored index (name, checkpoint, epoch/step, images, K, built), the URL kept
    naming it, and its actions (make default, rename, delete). Silent when the API cannot be reached (the
    pages show the banner)."""
    try:
        listing = fetch_index_listing(server_url())
    except ApiRequestError:
        return
    items = {i["name"]: i for i in listing.get("items", [])}
    default = listing.get("default")
    url_index, url_build = st.query_params.get("index"), st.query_params.get("build")
    if url_index:
        name, build = url_index, url_build or items.get(url_index, {}).get("build")
    else:
        name = st.session_state.get(EXPLORED_INDEX) or default
        build = st.session_state.get(EXPLORED_BUILD) if name == st.session_state.get(EXPLORED_INDEX) else None
        if name in items and not build:
            build = items[name].get("build")
    if not name:
        st.caption("No index yet: build one on the **Training** page.")
        return
    if (url_index, url_build) != (name, build) or st.session_state.get(EXPLORED_INDEX) != name:
        explore(name, build)
    st.session_state[EXPLORED_BUILD] = build

    if name not in items:
        st.error(f"Index **{name}** (named by this link) is not on the server: pick another one.")
    names = list(items)
    if not names:
        return
    if name in items:
        st.session_state[_CHOICE] = name
    label = {n: f"{n} (default)" if n == default else n for n in names}
    st.selectbox(
        "Index", names, key=_CHOICE, format_func=label.get, on_change=_changed, args=(items,),
        help="The index every page explores; the URL names it, so a copied link opens the same segments.",
    )  # fmt: skip
    entry = items.get(name)
    if entry is None:
        return
    st.caption(describe(entry))
    current = entry.get("build")
    if build and current and build != current:
        st.warning(
            f"This link was made for an earlier build of **{name}** (build `{build}`); the index has been rebuilt "
            f"since (build `{current}`), so the link's segment ids would show other segments.",
            icon="⚠️",
        )
        if st.button("Show the current build", key="index_current_build"):
            explore(name, current)
            st.rerun()
    with st.expander("Manage this index"):
        _manage(name, default)


def _manage(name: str, default: str | None) -> None:
    """Make ``name`` the default (confirmed), rename or delete it (never the default)."""
    client = get_client()
    if name == default:
        st.caption("This is the server's default index: the one every page and link without `index=` shows.")
        return
    sure = st.checkbox(
        f"Make **{name}** the server's default", key="index_make_default_sure",
        help="The default is what the API answers without ?index=, for every user; it survives a restart.",
    )  # fmt: skip
    clicked = st.button("Make default", key="index_make_default", disabled=not sure)
    if clicked and call("Making the index the default", client.set_default_index, name) is not None:
        _forget()
        st.session_state.pop("index_make_default_sure", None)
        st.toast(f"{name} is now the default index (it was {default}).")
        st.rerun()
    new = st.text_input("New name", key="index_new_name", placeholder="letters, digits, _ and -").strip()
    if st.button("Rename", key="index_rename", disabled=not new):
        if not _NAME.match(new):
            st.error("A name takes letters, digits, _ and - only (at most 64).")
        elif call("Renaming the index", client.rename_index, name, new) is not None:
            _forget()
            explore(new, None)
            st.session_state.pop("index_new_name", None)
            st.rerun()
    gone = st.checkbox(f"Delete **{name}** and its files", key="index_delete_sure")
    if st.button("Delete", key="index_delete", disabled=not gone, type="primary"):
        try:
            get_client().delete_index(name)
        except ApiRequestError as exc:
            st.error(f"Deleting the index failed: {exc.message}")
        else:
            _forget()
            st.session_state.pop("index_delete_sure", None)
            if default:
                explore(default, None)
            st.rerun()

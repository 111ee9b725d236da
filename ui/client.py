"""The one HTTP client of the UI: every call to the SlotCon API goes through :class:`ApiClient`.

The API answers errors as ``{"error": {"code": str, "message": str}}`` with the HTTP status; they
become :class:`ApiRequestError`. A refused or timed-out connection becomes :class:`ApiUnreachable`, which
the pages turn into one banner (see :mod:`ui.components`). JSON answers are returned as plain dicts
and lists, exactly as the API's schema (``/openapi.json``, ``server/schemas.py``) describes them: list
answers are ``{"items": [...]}`` envelopes, and nothing here guesses at other shapes.

Streamlit caching lives here too: :func:`get_client` is a ``st.cache_resource`` (one connection
pool per API URL) and the ``fetch_*`` functions are ``st.cache_data(ttl=...)`` wrappers keyed by
the API URL, so pages never refetch what has not changed. Where the API is and its token come from
:func:`settings` (``SLOTCON_API_URL``, ``SLOTCON_API_TOKEN``: :class:`ui.settings.UiSettings`).
"""

from __future__ import annotations

from typing import Any

import httpx
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from ui.settings import UiSettings


class ApiRequestError(Exception):
    """An error answer of the API (or a transport failure): ``status``, ``code`` and ``message``."""

    def __init__(self, message: str, *, status: int = 0, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message


class ApiUnreachable(ApiRequestError):
    """The API did not answer at all (connection refused, DNS failure, time-out)."""


#: Session keys of the index the pages explore and the build the URL named (set by the sidebar's picker,
#: :mod:`ui.views.index_picker`).
EXPLORED_INDEX = "_explored_index"
EXPLORED_BUILD = "_explored_build"
_INDEX_MARK = "#index="
_BUILD_MARK = "@"


_SETTINGS = "_ui_settings"


def settings() -> UiSettings:
    """The UI's settings (:class:`ui.settings.UiSettings`), read from the environment once per browser session
    and kept in its session state; read afresh outside a Streamlit session (no script run context)."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return UiSettings()
    known = st.session_state.get(_SETTINGS)
    if not isinstance(known, UiSettings):
        known = st.session_state[_SETTINGS] = UiSettings()
    return known


def server_url() -> str:
    """The API server's URL: ``$SLOTCON_API_URL`` or ``http://127.0.0.1:8000``, without a trailing slash."""
    return settings().api_url


def api_url() -> str:
    """The key every ``fetch_*`` is called with: :func:`server_url`, followed by ``#index=NAME@BUILD`` when the
    sidebar chose an index (so each index has its own cached answers, and every request of the client made
    for it names it: ``?index=NAME&build=BUILD``)."""
    base = server_url()
    try:
        index = st.session_state.get(EXPLORED_INDEX)
        build = st.session_state.get(EXPLORED_BUILD)
    except Exception:  # outside a Streamlit session (no script run context): the default index
        index = build = None
    if not index:
        return base
    return f"{base}{_INDEX_MARK}{index}" + (f"{_BUILD_MARK}{build}" if build else "")


def split_api_url(key: str) -> tuple[str, str | None, str | None]:
    """(server URL, index, build) of an :func:`api_url` key."""
    base, _, rest = key.partition(_INDEX_MARK)
    index, _, build = rest.partition(_BUILD_MARK)
    return base, index or None, build or None


def _error_from_response(response: httpx.Response) -> ApiRequestError:
    """Turns a non-2xx answer into an :class:`ApiRequestError` with the API's code and message."""
    code, message = f"http_{response.status_code}", response.reason_phrase or "request failed"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
        elif "detail" in body:  # FastAPI's default shape, should a route not use the typed errors
            detail = body["detail"]
            message = (
                detail
                if isinstance(detail, str)
                else "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            )
    elif response.text:
        message = response.text[:300]
    return ApiRequestError(message, status=response.status_code, code=code)


class ApiClient:
    """Typed access to the REST routes under ``/api``; each method returns the decoded answer.

    Raises :class:`ApiUnreachable` when the API cannot be reached and :class:`ApiRequestError` when it
    answers with an error.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        index: str | None = None,
        build: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.index, self.build = index, build  # named on every request (``?index=&build=``) when set
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    # -- plumbing -----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.index and path not in _NO_INDEX:
            params = dict(kwargs.get("params") or {})
            if "index" not in params:  # a route given an index of its own (Compare's tiles) keeps it
                params.update(_clean({"index": self.index, "build": self.build}))
            kwargs["params"] = params
        try:
            response = self._http.request(method, "/api" + path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiUnreachable(
                f"The SlotCon API at {self.base_url} is not reachable ({exc.__class__.__name__})."
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(f"The SlotCon API at {self.base_url} did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise ApiRequestError(f"Request to {path} failed: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiRequestError(f"The API sent invalid JSON for {path}.", status=response.status_code) from exc

    def _bytes(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        return self._request("GET", path, params=_clean(params)).content

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    # -- health and prototypes ----------------------------------------------------------------------

    def health(self) -> dict:
        """``GET /api/health``: status, the active index and its counts."""
        return self._json("GET", "/health")

    def options(self) -> dict:
        """``GET /api/options``: presets with their main options, precisions, protocols, baselines, defaults."""
        return self._json("GET", "/options")

    def prototypes(self) -> list[dict]:
        """``GET /api/prototypes``: one record per prototype (activity, label, purity, best segment)."""
        return _items(self._json("GET", "/prototypes"))

    def prototype_map(self) -> dict:
        """``GET /api/prototypes/map``: 2-D coordinates of the prototype vectors (server-side projection)."""
        return self._json("GET", "/prototypes/map")

    def indexes(self) -> list[dict]:
        """``GET /api/indexes``: the indexes under the server's indexes directory, by name."""
        return _items(self._json("GET", "/indexes"))

    def index_listing(self) -> dict:
        """``GET /api/indexes``: ``items`` (name, build, checkpoint, run, epoch, step, images, K, built_at,
        default) and ``default`` (the default index's name)."""
        return self._json("GET", "/indexes")

    def set_default_index(self, name: str) -> dict:
        """``PUT /api/indexes/default``: makes ``name`` the default index (stored; survives a restart)."""
        return self._json("PUT", "/indexes/default", json={"name": name})

    def carry_names(self, name: str, source: str, overwrite: bool = False) -> dict:
        """``POST /api/indexes/{name}/names/carry``: ``source``'s concept names given to their Compare matches in
        ``name``; returns ``items`` (source prototype, prototype, label, iou) and ``skipped``."""
        return self._json("POST", f"/indexes/{name}/names/carry", json={"source": source, "overwrite": bool(overwrite)})

    def rename_index(self, name: str, new: str) -> dict:
        """``POST /api/indexes/{name}/rename``: renames an index (not the default); returns its entry."""
        return self._json("POST", f"/indexes/{name}/rename", json={"name": new})

    def delete_index(self, name: str) -> None:
        """``DELETE /api/indexes/{name}``: deletes an index and its files (not the default)."""
        self._json("DELETE", f"/indexes/{name}")

    def compare(self, a: str, b: str | None = None) -> dict:
        """``GET /api/compare``: index ``a`` against ``b`` (default: the active index)."""
        return self._json("GET", "/compare", params=_clean({"a": a, "b": b}))

    def best_segment(self, index: str, k: int, size: int = 160) -> bytes:
        """``GET /api/prototypes/{k}/best.png?index=``: a prototype's best segment in an index."""
        return self._bytes(f"/prototypes/{int(k)}/best.png", {"index": index, "size": size})

    def figure(self, prototypes: str, topk: int = 10, fmt: str = "png") -> bytes:
        """``GET /api/figure``: the paper's concept figure of the listed prototypes (PNG, PDF or SVG)."""
        return self._bytes("/figure", {"prototypes": prototypes, "topk": topk, "format": fmt})

    def prototype_similarity(self) -> dict:
        """``GET /api/prototypes/similarity``: the K×K cosines as numbers (K <= 256)."""
        return self._json("GET", "/prototypes/similarity")

    def prototype_similarity_png(self, size: int = 512) -> bytes:
        """``GET /api/prototypes/similarity.png``: the K×K cosines as a heatmap (any K)."""
        return self._bytes("/prototypes/similarity.png", {"size": size})

    def prototype_page(
        self, *, sort: str = "id", query: str = "", hide_dead: bool = False, offset: int = 0, limit: int = 24
    ) -> dict:
        """``GET /api/prototypes`` filtered, ordered and paged by the server: ``items`` (one page), ``total``
        (what the filters keep), ``num_prototypes`` (K) and ``num_dead``."""
        params = {"sort": sort, "q": query or None, "hide_dead": "true" if hide_dead else None}
        return self._json("GET", "/prototypes", params=_clean({**params, "offset": offset, "limit": limit}))

    def prototype(self, k: int) -> dict:
        """``GET /api/prototypes/{k}``: one prototype's record."""
        return self._json("GET", f"/prototypes/{int(k)}")

    def set_label(self, k: int, label: str | None) -> dict:
        """``PUT /api/prototypes/{k}/label`` names a concept; an empty or blank ``label`` removes its
        name (``DELETE /api/prototypes/{k}/label``)."""
        if label is None or not label.strip():
            return self._json("DELETE", f"/prototypes/{int(k)}/label")
        return self._json("PUT", f"/prototypes/{int(k)}/label", json={"label": label.strip()})

    def prototype_segments(self, k: int, offset: int = 0, limit: int = 20) -> list[dict]:
        """``GET /api/prototypes/{k}/segments``: its segments ranked by cosine score."""
        params = {"offset": offset, "limit": limit}
        return _items(self._json("GET", f"/prototypes/{int(k)}/segments", params=params))

    # -- segments and images ------------------------------------------------------------------------

    def segment(self, segment_id: int) -> dict:
        """``GET /api/segments/{id}``: one segment (image, prototype, score, area, bbox)."""
        return self._json("GET", f"/segments/{int(segment_id)}")

    def neighbors(
        self, segment_id: int, limit: int = 10, prototype: int | None = None, space: str | None = None
    ) -> list[dict]:
        """``GET /api/segments/{id}/neighbors``: the most similar segments, with their similarity, in the
        embedding ``space`` (``projector`` or ``encoder``; None: the server's default, the projector)."""
        params = _clean({"limit": limit, "prototype": prototype, "space": space})
        return _items(self._json("GET", f"/segments/{int(segment_id)}/neighbors", params=params))

    def images(self, offset: int = 0, limit: int = 50) -> dict:
        """``GET /api/images``: a page of the indexed images (``items`` and ``total``)."""
        return self._json("GET", "/images", params={"offset": offset, "limit": limit})

    def image(self, image_id: int, size: int | None = None) -> bytes:
        """``GET /api/images/{id}``: the JPEG (a thumbnail when ``size`` is given)."""
        return self._bytes(f"/images/{int(image_id)}", {"size": size})

    def overlay(
        self, image_id: int, *, prototype: int | None = None, segment: int | None = None, size: int | None = None
    ) -> bytes:
        """``GET /api/images/{id}/overlay``: the image with one prototype's or segment's mask in red."""
        return self._bytes(
            f"/images/{int(image_id)}/overlay", {"prototype": prototype, "segment": segment, "size": size}
        )

    def image_slots(self, image_id: int) -> bytes:
        """``GET /api/images/{id}/slots``: a PNG of the image with all its slots in distinct colours."""
        return self._bytes(f"/images/{int(image_id)}/slots")

    def analyze(
        self,
        filename: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        crop: bool = False,
        space: str | None = None,
    ) -> dict:
        """``POST /api/slots``: runs the model on an uploaded image; its slots, overlay and neighbours.
        The whole image is segmented; ``crop=True``: the index's centre crop (the release's protocol);
        ``space``: the embedding the neighbours are searched in (None: the server's default, the projector)."""
        files = {"file": (filename, data, content_type)}
        params = _clean({"crop": "true" if crop else None, "space": space}) or None
        return self._json("POST", "/slots", files=files, params=params, timeout=120.0)

    # -- statistics and evaluation ------------------------------------------------------------------

    def stats(self, duplicate_threshold: float | None = None) -> dict:
        """``GET /api/stats``: dead prototypes, activity, active per image, similarity, and the
        near-duplicate pairs above ``duplicate_threshold`` (default: the stored threshold)."""
        params = None if duplicate_threshold is None else {"duplicate_threshold": float(duplicate_threshold)}
        return self._json("GET", "/stats", params=params)

    def eval_results(self) -> list[dict]:
        """``GET /api/eval``: the stored unsupervised-segmentation evaluations."""
        return _items(self._json("GET", "/eval"))

    def dissection(self) -> dict | None:
        """``GET /api/eval/dissection``: the newest stored dissection of the prototypes, None without one."""
        try:
            return self._json("GET", "/eval/dissection")
        except ApiRequestError as exc:
            if exc.status == 404:
                return None
            raise

    def eval_paper(self) -> dict:
        """The paper's row of ``GET /api/eval`` (its scores and its own tag)."""
        return self._json("GET", "/eval", params={"inline_examples": 0})["paper"]

    def eval_examples(self, eval_id: int) -> list[dict]:
        """``GET /api/eval/{id}/examples``: example images with ``pred_url`` and ``gt_url``."""
        return _items(self._json("GET", f"/eval/{int(eval_id)}/examples"))

    def fetch_url(self, url: str) -> bytes:
        """The bytes at a URL the API handed out (a path under ``/api`` or an absolute URL)."""
        path = httpx.URL(url).path if "://" in url else url
        path = path.split("?", 1)[0]
        query = httpx.URL(url).params if "?" in url else None
        if path.startswith("/api"):
            path = path[len("/api") :]
        return self._request("GET", path, params=query).content

    def start_eval(self, body: dict) -> dict:
        """``POST /api/eval``: starts an evaluation job; returns the job."""
        return self._json("POST", "/eval", json=body)

    # -- jobs, checkpoints, indexes -----------------------------------------------------------------

    def start_training(self, body: dict) -> dict:
        """``POST /api/jobs/train``: starts a training job; returns the job."""
        return self._json("POST", "/jobs/train", json=body)

    def start_indexing(self, body: dict) -> dict:
        """``POST /api/jobs/index``: starts indexing a checkpoint; returns the job."""
        return self._json("POST", "/jobs/index", json=body)

    def jobs(self) -> list[dict]:
        """``GET /api/jobs``: every job, newest first."""
        return _items(self._json("GET", "/jobs"))

    def job(self, job_id: int) -> dict:
        """``GET /api/jobs/{id}``: one job with its status and progress."""
        return self._json("GET", f"/jobs/{int(job_id)}")

    def job_metrics(self, job_id: int, since: int = -1) -> dict:
        """``GET /api/jobs/{id}/metrics``: ``items`` (the run's ``metrics.jsonl`` records with step >
        ``since``), ``last_step`` and the run's final ``event`` once written."""
        return self._json("GET", f"/jobs/{int(job_id)}/metrics", params={"since": since})

    def job_log(self, job_id: int) -> str:
        """``GET /api/jobs/{id}/log``: the tail of the job's log."""
        return self._json("GET", f"/jobs/{int(job_id)}/log")["log"]

    def stop_job(self, job_id: int) -> dict:
        """``DELETE /api/jobs/{id}``: stops a running job (SIGTERM; the trainer saves and exits)."""
        return self._json("DELETE", f"/jobs/{int(job_id)}")

    def checkpoints(self) -> list[dict]:
        """``GET /api/checkpoints``: the runs' checkpoints."""
        return _items(self._json("GET", "/checkpoints"))

    def activate_index(self, *, job_id: int | None = None, name: str | None = None) -> dict:
        """``POST /api/index/activate``: makes an index (by indexing job or by name) the default one."""
        return self._json("POST", "/index/activate", json=_clean({"job_id": job_id, "name": name}))


#: Routes about the server rather than an index: asked without ``?index=``.
_NO_INDEX = frozenset({"/health", "/options", "/indexes", "/indexes/default", "/checkpoints", "/index/activate"})


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drops ``None`` values so they are not sent as empty query parameters."""
    return None if params is None else {k: v for k, v in params.items() if v is not None}


def _items(answer: dict) -> list:
    """The ``items`` of a list answer (every list route answers ``{"items": [...], ...}``)."""
    return answer["items"]


# -- Streamlit caching --------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _client_for(key: str, token: str | None) -> ApiClient:
    base, index, build = split_api_url(key)
    return ApiClient(base, token=token, index=index, build=build)


def get_client() -> ApiClient:
    """The cached client for the configured API URL (one connection pool per URL)."""
    return _for(api_url())


def _for(key: str) -> ApiClient:
    return _client_for(key, settings().token)


@st.cache_data(ttl=10, show_spinner=False)
def fetch_health(base_url: str) -> dict:
    """Cached ``GET /api/health`` (10 s)."""
    return _for(base_url).health()


@st.cache_data(ttl=300, show_spinner=False)
def fetch_options(base_url: str) -> dict:
    """Cached ``GET /api/options`` (5 min): the recipes the forms start from."""
    return _for(base_url).options()


@st.cache_data(ttl=30, show_spinner=False)
def fetch_prototypes(base_url: str) -> list[dict]:
    """Cached ``GET /api/prototypes`` (30 s; cleared when a label changes)."""
    return _for(base_url).prototypes()


@st.cache_data(ttl=30, show_spinner=False)
def fetch_prototype_page(base_url: str, sort: str, query: str, hide_dead: bool, offset: int, limit: int) -> dict:
    """Cached one page of ``GET /api/prototypes?sort=&q=&hide_dead=&offset=&limit=`` (30 s; cleared when a
    label changes)."""
    return _for(base_url).prototype_page(sort=sort, query=query, hide_dead=hide_dead, offset=offset, limit=limit)


@st.cache_data(ttl=30, show_spinner=False)
def fetch_prototype(base_url: str, k: int) -> dict:
    """Cached ``GET /api/prototypes/{k}`` (30 s; cleared when a label changes)."""
    return _for(base_url).prototype(k)


@st.cache_data(ttl=15, show_spinner=False)
def fetch_indexes(base_url: str) -> list[dict]:
    """Cached ``GET /api/indexes`` (15 s)."""
    return _for(base_url).indexes()


@st.cache_data(ttl=15, show_spinner=False)
def fetch_index_listing(base_url: str) -> dict:
    """Cached ``GET /api/indexes`` with the default's name (15 s; cleared when an index changes)."""
    return _for(base_url).index_listing()


@st.cache_data(ttl=300, show_spinner=False)
def fetch_compare(base_url: str, a: str, b: str | None) -> dict:
    """Cached ``GET /api/compare`` (5 min; the server caches it per pair of builds)."""
    return _for(base_url).compare(a, b)


@st.cache_data(ttl=600, show_spinner=False)
def fetch_best_segment(base_url: str, index: str, k: int, size: int = 160) -> bytes:
    """Cached ``GET /api/prototypes/{k}/best.png?index=`` (10 min)."""
    return _for(base_url).best_segment(index, k, size)


@st.cache_data(ttl=300, show_spinner=False)
def fetch_similarity(base_url: str) -> dict:
    """Cached ``GET /api/prototypes/similarity`` (5 min)."""
    return _for(base_url).prototype_similarity()


@st.cache_data(ttl=300, show_spinner=False)
def fetch_similarity_png(base_url: str, size: int = 512) -> bytes:
    """Cached ``GET /api/prototypes/similarity.png`` (5 min)."""
    return _for(base_url).prototype_similarity_png(size)


@st.cache_data(ttl=300, show_spinner=False)
def fetch_prototype_map(base_url: str) -> dict:
    """Cached ``GET /api/prototypes/map`` (5 min)."""
    return _for(base_url).prototype_map()


@st.cache_data(ttl=300, show_spinner=False)
def fetch_segments(base_url: str, k: int, offset: int, limit: int) -> list[dict]:
    """Cached ``GET /api/prototypes/{k}/segments`` (5 min)."""
    return _for(base_url).prototype_segments(k, offset, limit)


@st.cache_data(ttl=300, show_spinner=False)
def fetch_segment(base_url: str, segment_id: int) -> dict:
    """Cached ``GET /api/segments/{id}`` (5 min)."""
    return _for(base_url).segment(segment_id)


@st.cache_data(ttl=300, show_spinner=False)
def fetch_neighbors(base_url: str, segment_id: int, limit: int, space: str | None = None) -> list[dict]:
    """Cached ``GET /api/segments/{id}/neighbors`` in ``space`` (5 min)."""
    return _for(base_url).neighbors(segment_id, limit, space=space)


@st.cache_data(ttl=60, show_spinner=False)
def fetch_images(base_url: str, offset: int, limit: int) -> dict:
    """Cached ``GET /api/images`` (1 min)."""
    return _for(base_url).images(offset, limit)


@st.cache_data(ttl=600, show_spinner=False, max_entries=2000)
def fetch_image(base_url: str, image_id: int, size: int | None = None) -> bytes:
    """Cached ``GET /api/images/{id}`` (10 min)."""
    return _for(base_url).image(image_id, size)


@st.cache_data(ttl=600, show_spinner=False, max_entries=2000)
def fetch_overlay(
    base_url: str, image_id: int, prototype: int | None = None, segment: int | None = None, size: int | None = None
) -> bytes:
    """Cached ``GET /api/images/{id}/overlay`` (10 min)."""
    return _for(base_url).overlay(image_id, prototype=prototype, segment=segment, size=size)


@st.cache_data(ttl=60, show_spinner=False)
def fetch_stats(base_url: str, duplicate_threshold: float | None = None) -> dict:
    """Cached ``GET /api/stats`` (1 min) at a near-duplicate threshold."""
    return _for(base_url).stats(duplicate_threshold)


@st.cache_data(ttl=15, show_spinner=False)
def fetch_eval_results(base_url: str) -> list[dict]:
    """Cached ``GET /api/eval`` (15 s)."""
    return _for(base_url).eval_results()


@st.cache_data(ttl=15, show_spinner=False)
def fetch_dissection(base_url: str) -> dict | None:
    """Cached ``GET /api/eval/dissection`` (15 s; None when no dissection is stored)."""
    return _for(base_url).dissection()


@st.cache_data(ttl=3600, show_spinner=False)
def fetch_eval_paper(base_url: str) -> dict:
    """Cached paper row of ``GET /api/eval`` (1 h: it changes only with the server's code)."""
    return _for(base_url).eval_paper()


@st.cache_data(ttl=300, show_spinner=False)
def fetch_eval_examples(base_url: str, eval_id: int) -> list[dict]:
    """Cached ``GET /api/eval/{id}/examples`` (5 min)."""
    return _for(base_url).eval_examples(eval_id)


@st.cache_data(ttl=10, show_spinner=False)
def fetch_checkpoints(base_url: str) -> list[dict]:
    """Cached ``GET /api/checkpoints`` (10 s)."""
    return _for(base_url).checkpoints()


def clear_index_caches() -> None:
    """Forgets every cached answer that depends on the active index (after a label or index change)."""
    for fn in (
        fetch_health,
        fetch_prototypes,
        fetch_prototype_page,
        fetch_prototype,
        fetch_prototype_map,
        fetch_segments,
        fetch_segment,
        fetch_neighbors,
        fetch_images,
        fetch_image,
        fetch_overlay,
        fetch_stats,
        fetch_eval_results,
        fetch_eval_examples,
    ):
        fn.clear()

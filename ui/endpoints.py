"""Where the UI finds the API: the default URL and the variables that set the URL and the token
(read by :class:`ui.settings.UiSettings`).

Kept apart from ``ui.client`` so that command-line entry points (``slotcon ui``) can read them without
importing Streamlit.
"""

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_URL_ENV = "SLOTCON_API_URL"
API_TOKEN_ENV = "SLOTCON_API_TOKEN"

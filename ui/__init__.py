"""SlotCon Explorer's web UI (Streamlit): pages that talk to the API over HTTP through :mod:`ui.client`.

No torch, faiss or sqlite here: everything model- or index-related is asked of the server.
"""

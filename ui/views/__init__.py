"""Reusable page sections (the pages in ``ui/app_pages`` compose them)."""

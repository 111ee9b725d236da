"""Reusable page sections (the pages in ``ui/pages`` compose them)."""

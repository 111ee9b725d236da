"""Orchestration: the ``slotcon`` command (:mod:`slotcon.cli`), the one-command demo (:mod:`slotcon.demo`) and
the UI launcher (:mod:`slotcon.ui_launcher`). Process supervision and the pipeline's command lines, which the
server's jobs use too, live under the server (:mod:`server.processes`, :mod:`server.commands`).

The arrows point one way: ``slotcon`` uses core, trainer, indexer, server and ui (by subprocess or
lazily by module name), and nothing imports ``slotcon`` (tests/test_imports.py).
"""

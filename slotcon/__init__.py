"""Orchestration: the ``slotcon`` command (:mod:`slotcon.cli`), the one-command demo (:mod:`slotcon.demo`),
the UI launcher (:mod:`slotcon.ui_launcher`), and the two leaf modules every package may use: process
supervision (:mod:`slotcon.processes`) and the pipeline's command lines (:mod:`slotcon.commands`).

The arrows point one way: ``slotcon`` uses core, trainer, indexer, server and ui (by subprocess or
lazily by module name), and nothing imports ``slotcon`` except its two leaves (tests/test_imports.py).
"""

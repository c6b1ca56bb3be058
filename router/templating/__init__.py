"""Templates: the sandboxed Jinja environment, rendering, limits, filters, caches and native blocks.

Owns: :mod:`.templates` (``Templates``: compile, render, errors with template and line),
:mod:`.filters`, :mod:`.limits` (time and size limits of a render), :mod:`.cache` and
:mod:`.compile_workers` (cold-load speed), :mod:`.field_checks` (reads of undeclared event
fields), :mod:`.native` (channel-native blocks: Discord embeds, Slack blocks, email).
Imports only ``config``, ``support`` and ``core``.
"""

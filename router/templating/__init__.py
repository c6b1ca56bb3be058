"""Templates: the sandboxed Jinja environment, rendering, limits, filters, caches and native blocks.

Owns: :mod:`.templates` (``Templates``: find, compile and cache a folder's templates, resolve
overrides and extends into render plans, render), :mod:`.context` (``build_context``: what a
template sees), :mod:`.sandbox` (the Jinja environment and its loader), :mod:`.plans` (a
resolved render plan, ``Rendered``), :mod:`.compiled` (one template's code and the facts read
from its tree), :mod:`.explain` (errors with template, line and what was meant),
:mod:`.filters`, :mod:`.limits` (time and size limits of a render), :mod:`.cache` and
:mod:`.compile_workers` (cold-load speed), :mod:`.field_checks` (reads of undeclared event
fields), :mod:`.native` (channel-native blocks: Discord embeds, Slack blocks, email).
Imports only ``config``, ``support`` and ``core``.
"""

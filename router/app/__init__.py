"""The running process: ``router serve``'s lifecycle and the commands that drive a whole configuration.

Owns: :mod:`.server` (``Server``: start, signals, file watcher, reloads, shutdown),
:mod:`.cases` (``router test --cases``), :mod:`.scaffold` (``router init``),
:mod:`.render_check` (templates rendered by ``router test``), :mod:`.gc_tuning` (the garbage collector for a
long-running process), :mod:`.workers` (``router serve --workers N``: the consumer children). May import every layer below it; only ``router.cli`` imports it.
"""

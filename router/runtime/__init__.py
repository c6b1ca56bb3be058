"""Everything one validated configuration builds: registry, compiled templates, rule index.

Owns: :mod:`.runtime` (``Runtime`` and ``render()`` for a rule and channel). The engine, flow
control and the CLI read the configuration in force through it. Imports plugins, templating,
matching, config and below.
"""

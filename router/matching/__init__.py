"""Which rules an event fires: patterns, conditions and the rule index.

Owns: :mod:`.index` (``RuleIndex``, compiled conditions, ``explain`` for ``router test
--explain``), :mod:`.paths` (dotted-path lookup into event data). Imports only ``config``,
``support`` (RE2 for ``regex`` conditions: :mod:`router.support.linear_regex`) and ``core``.
"""

"""Which rules an event fires: conditions, the rule index and its compiled forms, ``explain``.

Owns: :mod:`.index` (``RuleIndex``: exact types in a dict, wildcards in :mod:`.trie`, per-type
plans; ``rule_problems``; ``naive_match``, the plain scan it must agree with),
:mod:`.conditions` (paths into events, operators and their reference semantics),
:mod:`.codegen` (conditions compiled to Python for the hot path), :mod:`.plan` (one event type's
candidates, grouped by an eq/in path), :mod:`.trie` (wildcard patterns), :mod:`.explain`
(verdicts for ``router test --explain``), :mod:`.paths` (dotted-path lookup into event data).
The pattern grammar itself is :mod:`router.core.patterns`, shared with config validation.
Imports only ``config``, ``support`` (RE2 for ``regex`` conditions:
:mod:`router.support.linear_regex`) and ``core``.
"""

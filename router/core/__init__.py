"""Plain shared types every layer uses: events, messages, deliveries, records, errors, redaction.

Owns: :mod:`.events` (the ``Event`` envelope and its decoders), :mod:`.message` (``Message``,
``Outcome``), :mod:`.delivery`, :mod:`.records` (retry records on the wire), :mod:`.errors`,
:mod:`.durations`, :mod:`.patterns` (the grammar of a rule's ``on`` patterns), :mod:`.redact` (secret registry and scrubbing), :mod:`.suggest`
(did-you-mean), :mod:`.version`. The bottom layer: imports nothing else of ``router``.
"""

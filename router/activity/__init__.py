"""Activity: every event's story, durable and searchable (docs/activity.md).

Owns the activity records (``records.py``), the recorder the engine and the delivery stages
feed (``recorder.py``: a non-blocking in-memory buffer written in batches by a background
task), the writer process that does the writing (``writer.py``), the storage backends behind
one interface (``store.py``, with ``inline.py`` for the short stories' attempts kept in their
event's row; ``sqlite_store.py``, ``postgres_store.py``), the queries behind the CLI and the API
(``query.py``), the JSON API under ``/api/`` (``api.py``, mounted by the app layer) and the
CLI's text output (``view.py``).

May import ``config``, ``support`` and ``core`` only: the engine, flow control and the
pipeline call into it; it never calls back into them (replay is handed a callable).
"""

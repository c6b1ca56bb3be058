"""Getting events in: the HTTP endpoint, its authentication, and the publishing clients.

Owns: :mod:`.http` (the aiohttp app: ``POST /events``, health, metrics), :mod:`.auth`
(bearer token or HMAC), :mod:`.connections` (connection cap, header deadline),
:mod:`.admission` (body bytes read at once, queue depth bound), :mod:`.publisher` (``router.Publisher`` for applications),
:mod:`.publish_command` (``router publish``). Hands events to a transport; never imports the
engine, so ingest and handling stay independent.
"""

"""Channels delivered through apprise: shared plumbing and the generic ``apprise`` URL channel.

Owns: :mod:`.base` (one Apprise object per channel, its own thread pool, native payloads),
:mod:`.url` (``type: apprise``).
"""

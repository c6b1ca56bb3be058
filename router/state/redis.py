"""The Redis state store: shared by several router processes consuming one queue.

Every read-modify-write runs as one Lua script, so it is atomic across processes. Simple
reads and writes (``is_sent``, ``mark_sent``, ``sent_many``) are single commands.

Time comes from the store's clock in the calling process and is passed to the scripts as an
argument, never read from the Redis server: tests can then control time, and the stored
epochs (deadlines, theoretical arrival times) are compared against it. Redis TTLs are set as
well, so keys disappear on their own; a value past its stored deadline counts as absent
even if its TTL has not fired yet. Durability of ``mark_sent`` is Redis's own: run it with
``appendonly yes`` where a lost idempotency record would matter.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from router.state.base import (
    CLAIMED,
    DIGEST_RETENTION,
    SENT_CLAIM,
    DeliveryClaim,
    DigestAdd,
    StateStore,
    check_positive,
    gcra_params,
)

# Floats cross into Lua as strings formatted with %.17g both ways, so no precision is lost.
_FIRST_SEEN = """
local seen = tonumber(redis.call('GET', KEYS[1]))
if seen and seen > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# A named hold: the first owner keeps it until its deadline; everyone is told who holds it.
_CLAIM = """
local until_at = tonumber(redis.call('HGET', KEYS[1], 'until'))
if until_at and until_at > tonumber(ARGV[2]) then return redis.call('HGET', KEYS[1], 'owner') end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'until', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return ARGV[1]
"""

# KEYS: sent ledger entry, lease. ARGV: owner, now, lease deadline, lease ms.
# The ledger first: a delivery already sent is never leased again.
_CLAIM_DELIVERY = """
local now = tonumber(ARGV[2])
local sent = tonumber(redis.call('GET', KEYS[1]))
if sent and sent > now then return {'sent', '0'} end
local owner = redis.call('HGET', KEYS[2], 'owner')
local until_at = tonumber(redis.call('HGET', KEYS[2], 'until'))
if owner and owner ~= ARGV[1] and until_at and until_at > now then
  return {'held', string.format('%.17g', until_at - now)}
end
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'until', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'claimed', '0'}
"""

# Sliding-window log: one sorted-set member per allowed call, scored by its time.
_RATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# GCRA reservation; with a second key, a block deadline nothing may start before. With
# ARGV[4] (a number), a slot further than that from now is reported but not reserved.
_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local start = now
if #KEYS > 1 then
  local blocked = tonumber(redis.call('GET', KEYS[2]))
  if blocked and blocked > start then start = blocked end
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < start then tat = start end
local slot = tat - tau
if slot < start then slot = start end
if ARGV[4] ~= '' and slot - now > tonumber(ARGV[4]) then return string.format('%.17g', slot - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) * 1000)))
return string.format('%.17g', slot - now)
"""

_BLOCK = """
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: items list, due-at string, due index (sorted set of bucket keys by when to flush).
_DIGEST_ADD = """
local now = tonumber(ARGV[2])
local due = tonumber(redis.call('GET', KEYS[2]))
if due and due + tonumber(ARGV[6]) <= now then due = nil end
if not due then
  due = now + tonumber(ARGV[3])
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], string.format('%.17g', due))
  redis.call('ZADD', KEYS[3], string.format('%.17g', due), ARGV[5])
end
local count = redis.call('RPUSH', KEYS[1], ARGV[1])
local full = count >= tonumber(ARGV[4])
if full then
  local listed = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[5]))
  if not listed or listed > now then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[5]) end
end
local ttl = math.max(1, math.ceil((due + tonumber(ARGV[6]) - now) * 1000))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local index_ttl = redis.call('PTTL', KEYS[3])
if index_ttl < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
return {count, string.format('%.17g', due), full and 1 or 0}
"""

_DIGEST_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return items
"""

# KEYS as for add. Drop the first ARGV[1] items; what remains becomes a fresh bucket.
_DIGEST_DROP = """
local now = tonumber(ARGV[2])
if tonumber(ARGV[1]) > 0 then redis.call('LTRIM', KEYS[1], ARGV[1], -1) end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[5])
  return 0
end
local due = now + tonumber(ARGV[3])
local listed = due
if left >= tonumber(ARGV[4]) then listed = now end
redis.call('SET', KEYS[2], string.format('%.17g', due))
redis.call('ZADD', KEYS[3], string.format('%.17g', listed), ARGV[5])
local ttl = math.max(1, math.ceil((due + tonumber(ARGV[6]) - now) * 1000))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local index_ttl = redis.call('PTTL', KEYS[3])
if index_ttl < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
return left
"""

_ACQUIRE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
local expires_at = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
if owner and owner ~= ARGV[1] and expires_at and expires_at > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    """A Redis TTL in milliseconds: rounded up, never zero (zero or less would be refused)."""
    return max(1, math.ceil(seconds * 1000))


def _num(value: float) -> str:
    return repr(float(value))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisStateStore(StateStore):
    """State in Redis, atomic across every process that uses the same URL and key prefix."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "router:",
        clock: Callable[[], float] = time.time,
        max_connections: int = 64,
        command_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._max_connections = max_connections
        # No call may wait for ever: a server that accepts and then says nothing (a partition, a
        # frozen host) would otherwise hold a handler, its prefetch slot and shutdown with it.
        self._command_timeout = command_timeout
        self.prefix = prefix
        self._clock = clock
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    def __repr__(self) -> str:
        return f"RedisStateStore({redact_url(self._url)!r}, prefix={self.prefix!r})"

    # lifecycle

    async def open(self) -> None:
        if self._client is not None:
            return
        # A blocking pool makes a burst of calls queue for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=self._max_connections,
            timeout=30,
            decode_responses=False,
            socket_timeout=self._command_timeout,
            socket_connect_timeout=min(5.0, self._command_timeout),
        )
        client = aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        sources = {
            "first_seen": _FIRST_SEEN,
            "claim": _CLAIM,
            "claim_delivery": _CLAIM_DELIVERY,
            "rate": _RATE,
            "gcra": _GCRA,
            "block": _BLOCK,
            "digest_add": _DIGEST_ADD,
            "digest_take": _DIGEST_TAKE,
            "digest_drop": _DIGEST_DROP,
            "acquire": _ACQUIRE,
            "release": _RELEASE,
        }
        # register_script only hashes locally; the first call loads it into the server.
        self._scripts = {name: client.register_script(source) for name, source in sources.items()}
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> aioredis.Redis:
        """The open Redis client (raises when the store is not open)."""
        if self._client is None:
            raise RuntimeError("the state store is not open; call open() first")
        return self._client

    async def ping(self) -> None:
        await self.client.ping()

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        client = self.client
        return await self._scripts[name](keys=list(keys), args=list(args), client=client)

    # idempotency

    async def is_sent(self, key: str) -> bool:
        value = await self.client.get(self._key("sent", key))
        return value is not None and float(value) > self._clock()

    async def mark_sent(self, key: str, ttl: float) -> None:
        check_positive("ttl", ttl)
        await self.client.set(self._key("sent", key), _num(self._clock() + ttl), px=_ms(ttl))

    async def sent_many(self, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        values = await self.client.mget([self._key("sent", key) for key in unique])
        now = self._clock()
        return {key for key, value in zip(unique, values, strict=True) if value is not None and float(value) > now}

    async def claim_delivery(self, key: str, owner: str, lease: float) -> DeliveryClaim:
        check_positive("lease", lease)
        now = self._clock()
        status, wait = await self._script(
            "claim_delivery",
            [self._key("sent", key), self._key("lease", key)],
            [owner, _num(now), _num(now + lease), _ms(lease)],
        )
        if status == b"sent":
            return SENT_CLAIM
        if status == b"claimed":
            return CLAIMED
        return DeliveryClaim("held", float(wait))

    async def release_delivery(self, key: str, owner: str) -> None:
        # The lock's release script: a hash whose owner field must match.
        await self._script("release", [self._key("lease", key)], [owner])

    # dedupe

    async def first_seen(self, key: str, window: float) -> bool:
        check_positive("window", window)
        now = self._clock()
        result = await self._script(
            "first_seen", [self._key("seen", key)], [_num(now), _num(now + window), _ms(window)]
        )
        return bool(result)

    async def claim(self, key: str, owner: str, ttl: float) -> str:
        check_positive("ttl", ttl)
        now = self._clock()
        holder = await self._script("claim", [self._key("claim", key)], [owner, _num(now), _num(now + ttl), _ms(ttl)])
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    # rate limit

    async def rate_allow(self, key: str, limit: int, period: float) -> bool:
        check_positive("period", period)
        now = self._clock()
        member = uuid.uuid4().hex  # each allowed call is its own entry, even at the same instant
        result = await self._script(
            "rate", [self._key("rate", key)], [_num(now), _num(now - period), limit, member, _ms(period)]
        )
        return bool(result)

    # throttle and pacing

    async def throttle_reserve(self, key: str, limit: int, period: float, burst: int | None = None) -> float:
        interval, tau = gcra_params(limit, period, burst)
        result = await self._script(
            "gcra", [self._key("throttle", key)], [_num(self._clock()), _num(interval), _num(tau), ""]
        )
        return float(result)

    async def pace(self, channel: str, limit: int, period: float, max_wait: float | None = None) -> float:
        interval, tau = gcra_params(limit, period, None)
        keys = [self._key("pace", channel), self._key("block", channel)]
        most = "" if max_wait is None else _num(max_wait)
        result = await self._script("gcra", keys, [_num(self._clock()), _num(interval), _num(tau), most])
        return float(result)

    async def block(self, channel: str, until: float) -> None:
        remaining = until - self._clock()
        if remaining <= 0:
            return
        await self._script("block", [self._key("block", channel)], [_num(until), _ms(remaining)])

    async def blocked_for(self, channel: str) -> float:
        until = await self.client.get(self._key("block", channel))
        return max(float(until) - self._clock(), 0.0) if until is not None else 0.0

    # digests

    def _digest_keys(self, key: str) -> list[str]:
        return [self._key("digest:items", key), self._key("digest:due", key), f"{self.prefix}digest-index"]

    async def digest_add(self, key: str, item: bytes, window: float, max_items: int) -> DigestAdd:
        check_positive("window", window)
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        args: list[str | int | bytes] = [
            item,
            _num(self._clock()),
            _num(window),
            max_items,
            key,
            _num(DIGEST_RETENTION),
        ]
        count, due_at, full = await self._script("digest_add", self._digest_keys(key), args)
        return DigestAdd(count=int(count), due_at=float(due_at), full=bool(full))

    async def digest_peek(self, key: str, limit: int | None = None) -> list[bytes]:
        items_key, due_key, _ = self._digest_keys(key)
        due = await self.client.get(due_key)
        # Past retention but not expired by Redis yet: gone, as digest_add sees it.
        if due is None or float(due) + DIGEST_RETENTION <= self._clock():
            return []
        if limit is not None and limit < 1:
            return []
        items = await self.client.lrange(items_key, 0, -1 if limit is None else limit - 1)
        # decode_responses=False: items come back as bytes.
        return [item if isinstance(item, bytes) else item.encode() for item in items]

    async def digest_drop(self, key: str, count: int, window: float, max_items: int) -> int:
        check_positive("window", window)
        args: list[str | int | bytes] = [max(count, 0), _num(self._clock()), _num(window), max_items, key]
        args.append(_num(DIGEST_RETENTION))
        return int(await self._script("digest_drop", self._digest_keys(key), args))

    async def digest_due(self, now: float) -> list[str]:
        members = await self.client.zrangebyscore(f"{self.prefix}digest-index", "-inf", _num(now))
        # decode_responses=False: members come back as bytes.
        return [member.decode() if isinstance(member, bytes) else str(member) for member in members]

    async def digest_take(self, key: str) -> list[bytes]:
        items = await self._script("digest_take", self._digest_keys(key), [key])
        return [bytes(item) for item in items]

    # locks

    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        check_positive("ttl", ttl)
        now = self._clock()
        result = await self._script("acquire", [self._key("lock", name)], [owner, _num(now), _num(now + ttl), _ms(ttl)])
        return bool(result)

    async def release_lock(self, name: str, owner: str) -> None:
        await self._script("release", [self._key("lock", name)], [owner])

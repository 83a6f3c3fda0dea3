"""The Lua scripts of the Redis store: each runs atomically on the one key it names (cluster-safe).

A stream is a hash ``<namespace><id>``: ``v`` (write token), ``n`` (steps applied), ``s`` (state row),
``y`` (last output) and, once the stream has ended, ``e`` (and no ``s``). The live streams are also
members of one sorted set, the *index* ``rnnstream-index:<namespace>``, scored by the time (Redis' clock,
ms) after which they count no more: their expiry, ``+inf`` without a ttl, or a short reservation for a
stream admitted and not written yet. Counting is ``ZCARD`` after dropping the lapsed members (O(log n)
each), and admitting new streams is one script on the index, so replicas sharing the store never start
more than ``max_streams`` between them.
"""

from __future__ import annotations

WRITE = """
local token = redis.call('HGET', KEYS[1], 'v') or '0'
if ARGV[1] ~= '*' and token ~= ARGV[1] then return 0 end
if ARGV[7] == '1' then
  redis.call('HDEL', KEYS[1], 's')
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', ARGV[3], 'y', ARGV[5], 'e', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  return 1
end
redis.call('HDEL', KEYS[1], 'e')
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', ARGV[3], 's', ARGV[4], 'y', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) else redis.call('PERSIST', KEYS[1]) end
return 1
"""
"""KEYS[1]: the stream. ARGV: expected token ('*': unconditional), new token, steps, state, output, ttl ms
(0: none), '1' when the step ends the stream, and how long an ended record is kept (ms)."""

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
"""

ADMIT = _NOW + """
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[1])
local admitted = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    admitted[#admitted + 1] = 1
  elseif count < limit then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
    count = count + 1
    admitted[#admitted + 1] = 1
  else
    admitted[#admitted + 1] = 0
  end
end
return admitted
"""
"""KEYS[1]: the index. ARGV: the limit, how long a reservation holds (ms), then the ids: 1 (admitted or
already live) or 0 each."""

TOUCH = """
local score = '+inf'
if tonumber(ARGV[1]) > 0 then
  local clock = redis.call('TIME')
  score = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[1])
end
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], score, ARGV[i]) end
return #ARGV - 1
"""
"""KEYS[1]: the index. ARGV: the ttl (ms, 0: none), then the ids just written: live until then."""

DELETE = """
local live = redis.call('HEXISTS', KEYS[1], 'v') == 1 and redis.call('HEXISTS', KEYS[1], 'e') == 0
redis.call('DEL', KEYS[1])
if live then return 1 end
return 0
"""
"""KEYS[1]: the stream. Forget it (an ended record too); 1 if it was live."""

SYNC = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'c', 1) end
return 1
"""
"""KEYS[1]: a stream just read. A write to its master after the read, so that a WAIT covers the record read
(``durability``: replication keeps each master's order); ``c`` counts these writes and is never read."""

COUNT = _NOW + "return redis.call('ZCARD', KEYS[1])"
"""KEYS[1]: the index. The live streams and reservations."""

RESERVATION_MS = 60_000
"""How long an admitted stream counts before its first write; a process that dies in between frees it then."""

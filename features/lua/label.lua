-- Store one fraud label for a terminal, idempotently per transaction id.
-- KEYS[1] terminal hash (mark 'l:<tx>', label count 'nl'), KEYS[2] label ZSET
-- ARGV: tx id, labelled event time, available_at, is_fraud ('1' / '0')
-- Returns 1 when stored, 0 when ignored (not a fraud, or already stored).
--@CONFIG@
if ARGV[4] ~= '1' then return 0 end
if redis.call('HSETNX', KEYS[1], 'l:' .. ARGV[1], '1') == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3] .. '|' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'nl', 1)
redis.call('PEXPIRE', KEYS[1], TTL_MS, 'NX')
redis.call('PEXPIRE', KEYS[2], TTL_MS, 'NX')
return 1

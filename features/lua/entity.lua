-- One transaction against one entity (card or terminal), atomically: dedup check, tile update, read.
-- KEYS[1] entity hash: state blob 's', dedup 'd:<tx>' (the reply), counterparty last-seen 'c:<cp>' (event
-- time as a float64), label marks 'l:<tx>' and their count 'nl'
-- KEYS[2] expiry index ZSET (member = a field of KEYS[1], score = event time after which it can go)
-- KEYS[3] label ZSET (terminal only; score = labelled event time, member = '<available_at>|<tx>')
-- ARGV: tx id, 40 bytes of little-endian float64 (event time, amount in cents, latitude, longitude, wall
-- clock in s; NaN coordinates = none), counterparty. Binary: parsing decimal numbers (strtod) and
-- formatting them (%.17g) cost Redis more CPU than most of the work below.
-- Returns the raw window statistics of the plan (RAW) as little-endian float64s; features/derive.py
-- turns them into features, the same code as offline. Binary, because Lua numbers in integer replies are
-- truncated and text would cost more than packing.
-- State blob: 8 header doubles (watermark, transactions applied since the last trim (0 = none yet),
-- last effective time, has_geo, lat, lon, ttl refreshed at, next trim), one tile count per level, then
-- tiles of TB = 44 bytes: bucket, count (int32), sum, sum of squares, min, max (float64: exact integer
-- cents whatever the amount), counterparties last seen in the tile (int32); sorted by level then bucket
-- (the per-level counts say where a level starts). Bytes matter: on this machine an HGET from Lua costs
-- ~1.3 µs of Redis CPU more per KB of value, and the blob is read and written on every call.
-- Redis CPU per call is what this code is optimised for: scratch tables and formats are upvalues reused
-- across calls (see entity_config), and unchanged tiles are copied as bytes, not packed again.
--@CONFIG@
local st, ix, lab = KEYS[1], KEYS[2], KEYS[3]
local dkey, ckey = 'd:' .. ARGV[1], 'c:' .. ARGV[3]
local r = redis.call('HMGET', st, 's', dkey, ckey, 'nl')
if r[2] then return r[2] end

local t, c, lat, lon, now = struct.unpack('<ddddd', ARGV[2])
local floor = math.floor
local v
local blob = r[1]
if blob then
  local n = #blob
  local fmt = UNPACKFMT[n]
  if not fmt then
    fmt = HDRFMT .. string.rep(TILEFMT, (n - HDRB) / TB)
    UNPACKFMT[n] = fmt
  end
  v = {struct.unpack(fmt, blob)}
else
  v = {t, 0, 0, 0, 0, 0, 0, t + TRIM_EVERY}
  for L = 1, NLEVEL do v[8 + L] = 0 end
end
local te = v[1]
if t > te then te = t end
local prevseen
if r[3] then prevseen = struct.unpack('<d', r[3]) end
local cc = c * c

local pieces, np = PIECES, 1
local i = HDR + 1
for L = 1, NLEVEL do
  local tl = TILE[L]
  local b = floor(te / tl)
  local dlv = DLV[L]
  -- this level's tiles are v[ks .. ke] (the header keeps a count per level); expired ones lead
  local ks, ke = i, i + v[8 + L] * 7 - 1
  i = ke + 1
  local low = b - RING[L] + 1
  while ks <= ke and v[ks] < low do ks = ks + 7 end
  -- the current tile: update in place when it exists, else append one
  local p
  if ke >= ks and v[ke - 6] == b then
    p = ke - 6
    v[p + 1] = v[p + 1] + 1
    v[p + 2] = v[p + 2] + c
    v[p + 3] = v[p + 3] + cc
    if c < v[p + 4] then v[p + 4] = c end
    if c > v[p + 5] then v[p + 5] = c end
    if dlv then v[p + 6] = v[p + 6] + 1 end
  end
  -- Window statistics of this level in one pass from the newest tile down. Checkpoint x (bucket offset
  -- CPOFF from b, in descending order) records the totals over tiles with bucket >= b + x; a window
  -- [lo, hi] is then CP(lo) - CP(hi + 1) (just CP(lo) when hi = b: no tile is newer, so offset 1 is no
  -- checkpoint), and min/max are the running values at lo (undelayed windows; 0 when no tile is in
  -- range). The same pass moves the counterparty's previous sighting out of its tile (distinct counts);
  -- a tile older than every window is never read again, so it needs no update.
  local bp = -1
  if prevseen and dlv then bp = floor(prevseen / tl) end
  local bpos
  local n, s, q, dl, mn, mx = 0, 0, 0, 0, HUGE, -HUGE
  local pend = not p
  local j = ke - 6
  for ci = CPFIRST[L], CPLAST[L] do
    local x = b + CPOFF[ci]
    if pend and b >= x then
      pend = false
      n, s, q, mn, mx = n + 1, s + c, q + cc, c, c
      if dlv then dl = dl + 1 end
    end
    while j >= ks do
      local bk = v[j]
      if bk < x then break end
      if bk == bp then
        v[j + 6] = v[j + 6] - 1
        bpos = j
      end
      n = n + v[j + 1]; s = s + v[j + 2]; q = q + v[j + 3]; dl = dl + v[j + 6]
      local m = v[j + 4]
      if m < mn then mn = m end
      m = v[j + 5]
      if m > mx then mx = m end
      j = j - 7
    end
    CN[ci], CS[ci], CQ[ci], CDL[ci] = n, s, q, dl
    if n > 0 then CMN[ci], CMX[ci] = mn, mx else CMN[ci], CMX[ci] = 0, 0 end
  end
  -- New blob for this level: unchanged tiles are copied from the old blob as bytes (the tile starting
  -- at element e of v starts after byte AT(e)), only the (at most two) modified tiles are packed again.
  local from = ks
  if bpos and bpos ~= p then
    if bpos > from then np = np + 1; pieces[np] = string.sub(blob, AT(from) + 1, AT(bpos)) end
    np = np + 1; pieces[np] = struct.pack(TILEPACK, v[bpos], v[bpos + 1], v[bpos + 2], v[bpos + 3],
      v[bpos + 4], v[bpos + 5], v[bpos + 6])
    from = bpos + 7
  end
  if p then
    if p > from then np = np + 1; pieces[np] = string.sub(blob, AT(from) + 1, AT(p)) end
    np = np + 1; pieces[np] = struct.pack(TILEPACK, b, v[p + 1], v[p + 2], v[p + 3], v[p + 4], v[p + 5],
      v[p + 6])
    COUNTS[L] = (ke - ks + 1) / 7
  else
    if ke >= from then np = np + 1; pieces[np] = string.sub(blob, AT(from) + 1, AT(ke + 1)) end
    local d = 0
    if dlv then d = 1 end
    np = np + 1; pieces[np] = struct.pack(TILEPACK, b, 1, c, cc, c, c, d)
    COUNTS[L] = (ke - ks + 1) / 7 + 1
  end
end

-- Known frauds per delayed window: labels whose available_at <= te, bucketed by labelled event time.
local AF = AFZ
if HAS_LABELS and (tonumber(r[4]) or 0) > 0 then
  AF = AFN
  for w = 1, NWIN do AF[w] = 0 end
  local lo_t, hi_t = 1e300, -1e300
  for w = 1, NWIN do
    if WDELAY[w] > 0 then
      local tl = TILE[WLEVEL[w]]
      local hb = floor(te / tl) - WDELAY[w]
      if (hb - WTILES[w] + 1) * tl < lo_t then lo_t = (hb - WTILES[w] + 1) * tl end
      if (hb + 1) * tl > hi_t then hi_t = (hb + 1) * tl end
    end
  end
  local got = redis.call('ZRANGEBYSCORE', lab, lo_t, '(' .. string.format('%.17g', hi_t), 'WITHSCORES')
  for k = 1, #got, 2 do
    if tonumber(string.match(got[k], '^[^|]+')) <= te then
      local et = tonumber(got[k + 1])
      for w = 1, NWIN do
        if WDELAY[w] > 0 then
          local tl = TILE[WLEVEL[w]]
          local hb = floor(te / tl) - WDELAY[w]
          local lb = floor(et / tl)
          if lb <= hb and lb > hb - WTILES[w] then AF[w] = AF[w] + 1 end
        end
      end
    end
  end
end

-- Raw statistics in plan order (RAWOUT is generated from the plan, see features/online.py).
local res = RAWOUT(te, v, AF)

-- Trim what can no longer influence a feature (memory bound): once per TRIM_EVERY of event time or
-- TRIM_COUNT transactions, whichever comes first, so busy entities trim often and idle ones rarely.
local nexttrim, applied = v[8], v[2] + 1
if te >= nexttrim or applied > TRIM_COUNT then
  applied = 1
  local gone = redis.call('ZRANGEBYSCORE', ix, '-inf', te)
  for k = 1, #gone, 1000 do
    redis.call('HDEL', st, unpack(gone, k, math.min(k + 999, #gone)))
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', ix, '-inf', te) end
  if HAS_LABELS and (tonumber(r[4]) or 0) > 0 then
    local cut = '(' .. string.format('%.17g', (floor(te / TILE[LABEL_LEVEL]) - RING[LABEL_LEVEL] + 1)
      * TILE[LABEL_LEVEL])
    local old = redis.call('ZRANGEBYSCORE', lab, '-inf', cut)
    if #old > 0 then
      for k = 1, #old do old[k] = 'l:' .. string.match(old[k], '|(.*)$') end
      for k = 1, #old, 1000 do
        redis.call('HDEL', st, unpack(old, k, math.min(k + 999, #old)))
      end
      redis.call('ZREMRANGEBYSCORE', lab, '-inf', cut)
      redis.call('HINCRBY', st, 'nl', -#old)
    end
  end
  nexttrim = te + TRIM_EVERY
end

-- Keys of an idle entity expire (wall clock); refreshed at most once per TTL_REFRESH seconds.
local refresh = not blob or now - v[7] > TTL_REFRESH
local ttlr = v[7]
if refresh then ttlr = now end
local glat, glon, hasgeo = 0, 0, 0
if lat == lat and lon == lon then glat, glon, hasgeo = lat, lon, 1 end  -- NaN: no coordinates
pieces[1] = struct.pack(HDRFMT, te, applied, te, hasgeo, glat, glon, ttlr, nexttrim, unpack(COUNTS, 1, NLEVEL))
redis.call('HSET', st, 's', table.concat(pieces, '', 1, np), dkey, res, ckey, struct.pack('<d', te))
redis.call('ZADD', ix, te + DEDUP_H, dkey, te + CP_KEEP, ckey)
if refresh then
  redis.call('PEXPIRE', st, TTL_MS)
  redis.call('PEXPIRE', ix, TTL_MS)
  if HAS_LABELS then redis.call('PEXPIRE', lab, TTL_MS) end
end
return res

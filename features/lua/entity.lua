-- One transaction against one entity (card or terminal), atomically: dedup check, tile update, read.
-- KEYS[1] entity hash: state blob 's', dedup 'd:<tx>', counterparty last-seen 'c:<cp>', label marks
-- KEYS[2] expiry index ZSET (member = a field of KEYS[1], score = event time after which it can go)
-- KEYS[3] label ZSET (terminal only; score = labelled event time, member = '<available_at>|<tx>')
-- ARGV: tx id, event time, amount in cents, latitude|'', longitude|'', counterparty, wall clock (s)
-- Returns the raw window statistics of the plan (RAW) as little-endian float64s; features/derive.py
-- turns them into features, the same code as offline. Binary, because Lua numbers in integer replies are
-- truncated and text would cost more than packing.
-- State blob: 8 header doubles (watermark, transactions applied since the last trim (0 = none yet),
-- last effective time, has_geo, lat, lon, ttl refreshed at, next trim), one tile count per level, then
-- tiles of 8 doubles (level, bucket, count, sum, sum of squares, min, max,
-- counterparties last seen in the tile), sorted by level then bucket.
--@CONFIG@
local st, ix, lab = KEYS[1], KEYS[2], KEYS[3]
local dkey, ckey = 'd:' .. ARGV[1], 'c:' .. ARGV[6]
local r = redis.call('HMGET', st, 's', dkey, ckey, 'nl')
if r[2] then return r[2] end

local t, c = tonumber(ARGV[2]), tonumber(ARGV[3])
local lat, lon, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
local floor = math.floor
local HDR = 8 + NLEVEL
local v
local blob = r[1]
if blob then
  v = {struct.unpack('<' .. string.rep('d', #blob / 8), blob)}
else
  v = {t, 0, 0, 0, 0, 0, 0, t + TRIM_EVERY}
  for L = 1, NLEVEL do v[8 + L] = 0 end
end
local te = v[1]
if t > te then te = t end
local prevseen = tonumber(r[3])

-- per window: count, sum, sum of squares, min, max, distinct counterparties, known frauds
local AN, AS, AQ, AMN, AMX, ADL, AF = {}, {}, {}, {}, {}, {}, {}
local CN, CS, CQ, CDL, CMN, CMX = {}, {}, {}, {}, {}, {}
local pieces = {''}
local counts = {}
local i = HDR + 1
for L = 1, NLEVEL do
  local tl = TILE[L]
  local b = floor(te / tl)
  local low = b - RING[L] + 1
  -- this level's tiles are v[ks .. ke] (the header keeps a count per level); expired ones lead
  local ks, ke = i, i + v[8 + L] * 8 - 1
  i = ke + 1
  while ks <= ke and v[ks + 1] < low do ks = ks + 8 end
  -- the current tile: update in place when it exists, else append one
  local p
  if ke >= ks and v[ke - 6] == b then
    p = ke - 7
    v[p + 2] = v[p + 2] + 1
    v[p + 3] = v[p + 3] + c
    v[p + 4] = v[p + 4] + c * c
    if c < v[p + 5] then v[p + 5] = c end
    if c > v[p + 6] then v[p + 6] = c end
    if DLV[L] then v[p + 7] = v[p + 7] + 1 end
  end
  -- Window statistics of this level in one pass from the newest tile down. Checkpoint x (bucket offset
  -- CPOFF from b, in descending order) records the totals over tiles with bucket >= b + x; a window
  -- [lo, hi] is then CP(lo) - CP(hi + 1), and min/max are the running values at lo (undelayed windows).
  -- The same pass moves the counterparty's previous sighting out of its tile (distinct counts); a
  -- tile older than every window is never read again, so it needs no update.
  local bp = -1e300
  if prevseen and DLV[L] then bp = floor(prevseen / tl) end
  local bpos
  local n, s, q, dl, mn, mx = 0, 0, 0, 0, 0, 0
  local pend = not p
  local j = ke - 7
  for ci = CPFIRST[L], CPLAST[L] do
    local x = b + CPOFF[ci]
    if pend and b >= x then
      pend = false
      n, s, q, mn, mx = n + 1, s + c, q + c * c, c, c
      if DLV[L] then dl = dl + 1 end
    end
    while j >= ks and v[j + 1] >= x do
      if v[j + 1] == bp then
        v[j + 7] = v[j + 7] - 1
        bpos = j
      end
      if n == 0 or v[j + 5] < mn then mn = v[j + 5] end
      if n == 0 or v[j + 6] > mx then mx = v[j + 6] end
      n = n + v[j + 2]; s = s + v[j + 3]; q = q + v[j + 4]; dl = dl + v[j + 7]
      j = j - 8
    end
    CN[ci], CS[ci], CQ[ci], CDL[ci], CMN[ci], CMX[ci] = n, s, q, dl, mn, mx
  end
  -- New blob for this level: unchanged tiles are copied from the old blob as bytes (element i of v
  -- sits at byte (i - 1) * 8), only the (at most two) modified tiles are packed again.
  local from = ks
  if bpos and bpos ~= p then
    if bpos > from then pieces[#pieces + 1] = string.sub(blob, (from - 1) * 8 + 1, (bpos - 1) * 8) end
    pieces[#pieces + 1] = struct.pack('<dddddddd', unpack(v, bpos, bpos + 7))
    from = bpos + 8
  end
  if p then
    if p > from then pieces[#pieces + 1] = string.sub(blob, (from - 1) * 8 + 1, (p - 1) * 8) end
    pieces[#pieces + 1] = struct.pack('<dddddddd', unpack(v, p, p + 7))
    counts[L] = (ke - ks + 1) / 8
  else
    if ke >= from then pieces[#pieces + 1] = string.sub(blob, (from - 1) * 8 + 1, ke * 8) end
    local d = 0
    if DLV[L] then d = 1 end
    pieces[#pieces + 1] = struct.pack('<dddddddd', L, b, 1, c, c * c, c, c, d)
    counts[L] = (ke - ks + 1) / 8 + 1
  end
end
for w = 1, NWIN do
  local lo, hi = WLO[w], WHI[w]
  AN[w], AS[w], AQ[w], ADL[w] = CN[lo] - CN[hi], CS[lo] - CS[hi], CQ[lo] - CQ[hi], CDL[lo] - CDL[hi]
  AMN[w], AMX[w], AF[w] = CMN[lo], CMX[lo], 0
end

-- Known frauds per delayed window: labels whose available_at <= te, bucketed by labelled event time.
if HAS_LABELS and (tonumber(r[4]) or 0) > 0 then
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

local STAT = {AN, AS, AQ, AMN, AMX, ADL, AF}
local out = {}
for k = 1, #RAWS do
  local w, code = RAWW[k], RAWS[k]
  if w > 0 then out[k] = STAT[code][w]
  elseif code == 1 then  -- seconds since the previous transaction, -1 when none
    if v[2] >= 1 then out[k] = te - v[3] else out[k] = -1 end
  elseif code == 2 then out[k] = v[4]  -- whether the previous transaction had coordinates
  elseif code == 3 then out[k] = v[5]
  else out[k] = v[6] end
end

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
  if HAS_LABELS then
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
local refresh = not r[1] or now - v[7] > TTL_REFRESH
local ttlr = v[7]
if refresh then ttlr = now end
local glat, glon, hasgeo = 0, 0, 0
if lat and lon then glat, glon, hasgeo = lat, lon, 1 end
pieces[1] = struct.pack('<' .. string.rep('d', HDR), te, applied, te, hasgeo, glat, glon, ttlr, nexttrim,
  unpack(counts))
local res = struct.pack(OUTFMT, unpack(out))
redis.call('HSET', st, 's', table.concat(pieces), dkey, res, ckey, te)
redis.call('ZADD', ix, te + DEDUP_H, dkey, te + CP_KEEP, ckey)
if refresh then
  redis.call('PEXPIRE', st, TTL_MS)
  redis.call('PEXPIRE', ix, TTL_MS)
  if HAS_LABELS then redis.call('PEXPIRE', lab, TTL_MS) end
end
return res

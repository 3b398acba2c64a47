-- One round trip of a replica for one shared budget (see server/admission/lease.rs).
-- KEYS: 1 groups (zset: group of slots -> expiry ms), 2 meta (hash),
--       3 replicas (zset: id -> last seen), 4 passes (hash: lane -> stride pass),
--       5 active (zset: replica|lane -> active until), 6 counts (hash: group -> slots,
--       '#' -> all slots), 7 legacy (zset: slot -> expiry ms, an older version's log)
-- Every time is the server's own clock (TIME), so replica clocks do not matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local groups, meta, replicas_key, passes, active, counts, legacy =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local replica = ARGV[1]
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local burst = tonumber(ARGV[6])
local known = ARGV[7]
local uncertain = ARGV[8] == '1'
local stale_ms = tonumber(ARGV[9])
local keep_ms = tonumber(ARGV[10])
local recovery_ms = tonumber(ARGV[11])
local configured = tonumber(ARGV[12])
local first_seq = tonumber(ARGV[13])
local pause_ms = tonumber(ARGV[14])
local bulk_share = tonumber(ARGV[15])
local leaving = ARGV[16] == '1'
local i = 17

-- A missing epoch means the data was lost (or this is the first use). If the
-- caller knew an older epoch, or may have missed the loss, others' recent use
-- is unknown: nothing is granted until every replica has recorded its own.
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = t[1] .. '.' .. t[2]
  redis.call('HSET', meta, 'epoch', epoch)
  if known ~= '' or uncertain then
    redis.call('HSET', meta, 'blocked_until', now + recovery_ms)
  end
end

-- Heartbeats: replicas not heard from lately may be running alone on their
-- share; that share stays reserved while they may still be.
if leaving then
  redis.call('ZREM', replicas_key, replica)
else
  redis.call('ZADD', replicas_key, now, replica)
end
redis.call('ZREMRANGEBYSCORE', replicas_key, '-inf', now - keep_ms)
local live = redis.call('ZCOUNT', replicas_key, now - stale_ms, '+inf')
local stale = redis.call('ZCOUNT', replicas_key, '-inf', '(' .. (now - stale_ms))
local replicas = math.max(live + stale, configured, 1)
local reserved = stale * math.floor(limit / replicas)

-- The log counts slots in groups (`groups`: member -> expiry, `counts`:
-- member -> slots, and '#' -> the total): a lease (`<replica>:L<seq>`,
-- created here at its grant), or a bucket of slots that expire together
-- (`<replica>:U...`, `<replica>:R...`), created by the replica's reports.
-- A report gives a group's count (absolute, so sending it again changes
-- nothing) and, for a bucket, its expiry as ms from now.
local total = tonumber(redis.call('HGET', counts, '#') or '0')
local function set_count(m, c, delta)
  local old = tonumber(redis.call('HGET', counts, m) or '0')
  if delta == nil then
    -- Slots only ever leave a lease; one the log no longer holds stays gone.
    c = math.min(c, old)
  elseif delta <= 0 then
    c = 0
  end
  if c == old then
    return
  end
  if c == 0 then
    redis.call('ZREM', groups, m)
    redis.call('HDEL', counts, m)
  else
    if old == 0 then
      redis.call('ZADD', groups, now + delta, m)
    end
    redis.call('HSET', counts, m, c)
  end
  total = total + c - old
end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local delta = nil
  if ARGV[i + 2] ~= '' then
    delta = tonumber(ARGV[i + 2])
  end
  set_count(replica .. ':' .. ARGV[i], tonumber(ARGV[i + 1]), delta)
  i = i + 3
end
-- Expired groups leave the total.
local gone = redis.call('ZRANGEBYSCORE', groups, '-inf', now)
local CHUNK = 500
for s = 1, #gone, CHUNK do
  local part = { unpack(gone, s, math.min(s + CHUNK - 1, #gone)) }
  for _, c in ipairs(redis.call('HMGET', counts, unpack(part))) do
    total = total - (tonumber(c) or 0)
  end
  redis.call('HDEL', counts, unpack(part))
end
redis.call('ZREMRANGEBYSCORE', groups, '-inf', now)
-- Slots of replicas that kept one member per slot (an older version of this
-- script): counted one each until they expire.
redis.call('ZREMRANGEBYSCORE', legacy, '-inf', now)
local legacy_count = redis.call('ZCARD', legacy)

if pause_ms > 0 then
  local pause_until = now + pause_ms
  local current = tonumber(redis.call('HGET', meta, 'paused_until') or '0')
  if pause_until > current then
    redis.call('HSET', meta, 'paused_until', pause_until, 'tokens', 0, 'ts', pause_until)
  end
end

-- The burst cap: a token bucket refilled at N/W. After a pause it also
-- applies without a cap configured, so traffic resumes at an even pace.
local bucket = redis.call('HMGET', meta, 'tokens', 'ts')
local tokens, ts = tonumber(bucket[1]), tonumber(bucket[2])
local cap = burst
if cap == 0 and ts and now < ts + window then
  cap = limit
end
if cap > 0 then
  if not tokens then
    tokens, ts = cap, now
  end
  if now > ts then
    tokens = math.min(cap, tokens + (now - ts) * limit / window)
    ts = now
  end
end

local count = total + legacy_count
local paused_until = tonumber(redis.call('HGET', meta, 'paused_until') or '0')
local blocked = tonumber(redis.call('HGET', meta, 'blocked_until') or '0')
local hold = math.max(paused_until, blocked)
local room = limit - count - reserved
if now < hold then
  room = 0
end
if cap > 0 and math.floor(tokens) < room then
  room = math.floor(tokens)
end
if room < 0 then
  room = 0
end

-- Global fairness: stride passes per lane (class:caller) and per class,
-- charged with what each replica reports it granted. A replica's waiting
-- lanes may run ahead of the slowest active lane of their class by at most
-- a quantum; idle lanes rejoin at the slowest active pass.
local shares = { [0] = 1 - bulk_share, [1] = bulk_share }
local quantum = 2
local class_quantum = quantum / math.min(shares[0], shares[1])
local mine = {}
n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  mine[j] = {
    lane = ARGV[i], class = tonumber(ARGV[i + 1]), weight = math.max(1, tonumber(ARGV[i + 2])),
    waiting = tonumber(ARGV[i + 3]), used = tonumber(ARGV[i + 4]),
  }
  i = i + 5
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZREM', active, replica .. '|' .. ARGV[i])
  i = i + 1
end
redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
for _, l in ipairs(mine) do
  if l.used > 0 then
    redis.call('HINCRBYFLOAT', passes, 'u' .. l.lane, l.used / l.weight)
    redis.call('HINCRBYFLOAT', passes, 'c' .. l.class, l.used / shares[l.class])
  end
end
local function pass_of(field)
  return tonumber(redis.call('HGET', passes, field) or '0')
end
local min_lane, class_active = {}, {}
local function scan()
  min_lane, class_active = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', active, 0, -1)) do
    local lane = string.sub(m, string.find(m, '|', 1, true) + 1)
    local class = tonumber(string.sub(lane, 1, 1))
    local p = pass_of('u' .. lane)
    if min_lane[class] == nil or p < min_lane[class] then
      min_lane[class] = p
    end
    class_active[class] = true
  end
end
scan()
local min_class = nil
for class, _ in pairs(class_active) do
  local p = pass_of('c' .. class)
  if min_class == nil or p < min_class then
    min_class = p
  end
end
local any_waiting = false
for _, l in ipairs(mine) do
  if l.waiting > 0 then
    any_waiting = true
    local m = replica .. '|' .. l.lane
    if not redis.call('ZSCORE', active, m) then
      if min_lane[l.class] and pass_of('u' .. l.lane) < min_lane[l.class] then
        redis.call('HSET', passes, 'u' .. l.lane, min_lane[l.class])
      end
      if not class_active[l.class] and min_class and pass_of('c' .. l.class) < min_class then
        redis.call('HSET', passes, 'c' .. l.class, min_class)
      end
    end
    redis.call('ZADD', active, now + stale_ms, m)
  end
end
local allowed = 0
if any_waiting then
  scan()
  min_class = nil
  for class, _ in pairs(class_active) do
    local p = pass_of('c' .. class)
    if min_class == nil or p < min_class then
      min_class = p
    end
  end
  for _, l in ipairs(mine) do
    if l.waiting > 0 then
      local lead = (min_lane[l.class] + quantum - pass_of('u' .. l.lane)) * l.weight
      local class_lead = (min_class + class_quantum - pass_of('c' .. l.class)) * shares[l.class]
      local h = math.min(lead, class_lead, l.waiting)
      if h > 0 then
        allowed = allowed + math.ceil(h)
      end
    end
  end
  if allowed < room then
    room = allowed
  end
end
redis.call('PEXPIRE', passes, keep_ms)
redis.call('PEXPIRE', active, keep_ms)

local granted = math.max(0, math.min(room, want))
if granted > 0 then
  local m = replica .. ':L' .. string.format('%.0f', first_seq)
  redis.call('ZADD', groups, now + lease + window, m)
  redis.call('HSET', counts, m, granted)
  total = total + granted
end
redis.call('HSET', counts, '#', total)
if cap > 0 then
  redis.call('HSET', meta, 'tokens', tokens - granted, 'ts', ts)
end
redis.call('PEXPIRE', groups, lease + window + 1000)
redis.call('PEXPIRE', counts, lease + window + 1000)

count = total + legacy_count
local oldest_ms = -1
for _, key in ipairs({ groups, legacy }) do
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] and (oldest_ms < 0 or tonumber(oldest[2]) - now < oldest_ms) then
    oldest_ms = tonumber(oldest[2]) - now
  end
end
local retry = 0
if granted < want then
  if now < hold then
    retry = hold - now
  elseif limit - count - reserved <= 0 and oldest_ms > 0 then
    retry = oldest_ms
  elseif cap > 0 and tokens - granted < 1 then
    retry = math.ceil((1 - (tokens - granted)) * window / limit)
  else
    retry = math.ceil(window / limit)
  end
  retry = math.max(1, retry)
end
return { granted, epoch, math.max(0, limit - count - reserved), oldest_ms, retry, replicas,
  math.max(0, paused_until - now) }

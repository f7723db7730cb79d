//! The Lua scripts of the Redis backend (`redis.rs`): the health table's
//! changes, the rpm/tpm sliding window, callers' token budgets and the
//! workers' heartbeat. Each touches one hash tag, so it runs on a Redis
//! Cluster too.

/// Shared by the health scripts. `KEYS[1]` the table, `KEYS[2]` the version;
/// `ARGV[1]` the channel, `ARGV[2]` the member. An entry is
/// `fails|benches|until|owner|probe_until|updated|version` (ms, Redis clock);
/// an answer is `now|<entry>`; a message is `now|<entry>|member`.
pub(super) const COMMON: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function decode(s)
  local e = {fails = 0, benches = 0, till = 0, owner = '', probe = 0, updated = 0, v = 0}
  if s then
    local f = {}
    for p in string.gmatch(s .. '|', '([^|]*)|') do f[#f + 1] = p end
    e.fails = tonumber(f[1]) or 0
    e.benches = tonumber(f[2]) or 0
    e.till = tonumber(f[3]) or 0
    e.owner = f[4] or ''
    e.probe = tonumber(f[5]) or 0
    e.updated = tonumber(f[6]) or 0
    e.v = tonumber(f[7]) or 0
  end
  return e
end
local function encode(e)
  return string.format('%d|%d|%d|%s|%d|%d|%d', e.fails, e.benches, e.till, e.owner, e.probe, e.updated, e.v)
end
local function save(e, now)
  e.v = redis.call('INCR', KEYS[2])
  local s = encode(e)
  if e.fails == 0 and e.benches == 0 and e.till == 0 and e.owner == '' then
    redis.call('HDEL', KEYS[1], ARGV[2])
  else
    redis.call('HSET', KEYS[1], ARGV[2], s)
  end
  redis.call('PUBLISH', ARGV[1], now .. '|' .. s .. '|' .. ARGV[2])
  return now .. '|' .. s
end
local now = now_ms()
local e = decode(redis.call('HGET', KEYS[1], ARGV[2]))
";

/// `ARGV[3..]`: threshold, cooldown base, cooldown max, Retry-After (ms),
/// probe owner ('' if none), stale after (ms), '1' if the bench escalates.
/// Mirrors `Entry::fail`.
pub(super) const FAIL: &str = r"
local threshold, base, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ra, owner, stale = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local escalates = ARGV[9] == '1'
local benched = now < e.till
if not benched and now - e.updated > stale then
  e.fails = 0
  e.benches = 0
end
e.fails = e.fails + 1
if e.fails >= threshold and not benched then
  local cooldown = ra
  if escalates then
    e.benches = e.benches + 1
    cooldown = math.min(base * (2 ^ math.min(e.benches - 1, 30)), max)
    if ra > cooldown then cooldown = ra end
  else
    e.benches = math.max(e.benches, 1)
  end
  e.till = math.max(e.till, now + cooldown)
elseif benched and now + ra > e.till then
  e.till = now + ra
end
if owner ~= '' and e.owner == owner then
  e.owner = ''
  e.probe = 0
end
e.updated = now
return save(e, now)
";

/// `ARGV[3]` the caller's probe owner ('' if none). Mirrors `Entry::succeed`:
/// an active bench stays unless the caller holds its probe; the bench count
/// stays (it decays with time); ending a bench or a probe starts the ramp.
pub(super) const SUCCEED: &str = r"
local ours = ARGV[3] ~= '' and e.owner == ARGV[3]
if now < e.till and not ours then
  e.v = tonumber(redis.call('GET', KEYS[2]) or '0')
  return now .. '|' .. encode(e)
end
local ended = e.till > 0 or ours
e.fails = 0
e.till = 0
e.owner = ''
e.probe = 0
if ended then e.updated = now end
return save(e, now)
";

/// `ARGV[3]` owner, `ARGV[4]` ttl (ms), `ARGV[5]` stale after (ms). Mirrors
/// `Entry::claim`. An answer that changes nothing carries the current
/// change counter, so the worker takes it over its own guess.
pub(super) const CLAIM: &str = r"
if e.fails > 0 and now >= e.till and (e.owner == '' or now >= e.probe) then
  if now - math.max(e.updated, e.till) > tonumber(ARGV[5]) then e.benches = 0 end
  e.owner = ARGV[3]
  e.probe = now + tonumber(ARGV[4])
  e.updated = now
  return {1, save(e, now)}
end
e.v = tonumber(redis.call('GET', KEYS[2]) or '0')
return {0, now .. '|' .. encode(e)}
";

/// `ARGV[3]` owner. Mirrors `Entry::release`.
pub(super) const RELEASE: &str = r"
if e.owner ~= '' and e.owner == ARGV[3] then
  e.owner = ''
  e.probe = 0
  e.updated = now
  return save(e, now)
end
e.v = tonumber(redis.call('GET', KEYS[2]) or '0')
return now .. '|' .. encode(e)
";

/// `ARGV[3..]`: fails, benches, bench left (ms; -1 none). Mirrors `Entry::merge`.
pub(super) const MERGE: &str = r"
e.fails = math.max(e.fails, tonumber(ARGV[3]))
e.benches = math.max(e.benches, tonumber(ARGV[4]))
local left = tonumber(ARGV[5])
if left >= 0 then e.till = math.max(e.till, now + left) end
e.updated = now
return save(e, now)
";

/// `KEYS[1]` the table, `KEYS[2]` the version: `{now, version, field, value, …}`.
pub(super) const LOAD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now, tonumber(redis.call('GET', KEYS[2]) or '0')}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
";

/// Shared by the quota scripts: the current and previous Unix minute of
/// Redis's clock, and how much of the previous minute still counts (a
/// sliding window: no burst of twice the limit fits across a minute's edge).
pub(super) const WINDOW: &str = r"
local t = redis.call('TIME')
local sec = tonumber(t[1])
local m = math.floor(sec / 60)
local weight = 1 - (sec % 60) / 60
local function get(f) return math.max(tonumber(redis.call('HGET', KEYS[1], f) or '0'), 0) end
";

/// `KEYS[1]` the member's (or caller's) usage; `ARGV` rpm, tpm (-1: none),
/// the requests and tokens asked for. Leases a block of permits out of the
/// sliding minute, counted as used at once (`permits.rs`): as many as asked,
/// at most what is left under each limit (at least one while the window has
/// room: a request may overshoot the tpm once, as a
/// reservation per request could). `{requests, tokens, used requests,
/// used tokens, ms until the next minute}`; no requests: the window is spent.
pub(super) const PERMITS: &str = r"
local r = get('r:' .. m) + get('r:' .. (m - 1)) * weight
local tk = get('t:' .. m) + get('t:' .. (m - 1)) * weight
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local left = 60000 - (sec % 60) * 1000 - math.floor(tonumber(t[2]) / 1000)
if (rpm >= 0 and r >= rpm) or (tpm >= 0 and tk >= tpm) then
  return {0, 0, math.floor(r), math.floor(tk), left}
end
local gr, gt = tonumber(ARGV[3]), tonumber(ARGV[4])
if rpm >= 0 then gr = math.min(gr, math.ceil(rpm - r)) end
if tpm >= 0 then gt = math.min(gt, math.ceil(tpm - tk)) end
redis.call('HINCRBY', KEYS[1], 'r:' .. m, gr)
if gt > 0 then redis.call('HINCRBY', KEYS[1], 't:' .. m, gt) end
redis.call('HDEL', KEYS[1], 'r:' .. (m - 2), 't:' .. (m - 2), 'r:' .. (m - 3), 't:' .. (m - 3))
redis.call('EXPIRE', KEYS[1], 180)
return {gr, gt, math.floor(r) + gr, math.floor(tk) + gt, left}
";

/// `KEYS[1]` a caller's budgets; `ARGV`: n, then n pairs of window field
/// and limit, then the tokens asked for (a worker's block, `permits.rs`).
/// Refuses if a window is spent (`{i, used}`), else takes as many as asked,
/// at most what every window has left, from every window (`{0, taken}`).
/// Windows that are over (yesterday, last month) are dropped; the hash is
/// kept for 40 days, so a month's window outlives the month.
pub(super) const BUDGET: &str = r"
local n = tonumber(ARGV[1])
local current = {}
for i = 1, n do current[ARGV[2 * i]] = true end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not current[f] then redis.call('HDEL', KEYS[1], f) end
end
local t = tonumber(ARGV[2 * n + 2])
for i = 1, n do
  local used = tonumber(redis.call('HGET', KEYS[1], ARGV[2 * i]) or '0')
  local limit = tonumber(ARGV[2 * i + 1])
  if used >= limit then return {i, used} end
  t = math.min(t, limit - used)
end
for i = 1, n do redis.call('HINCRBY', KEYS[1], ARGV[2 * i], t) end
redis.call('EXPIRE', KEYS[1], 3456000)
return {0, t}
";

/// `KEYS[1]` a caller's budgets; `ARGV[1]` tokens (negative: given back),
/// then the window fields. Never below 0.
pub(super) const BUDGET_CHARGE: &str = r"
for i = 2, #ARGV do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[1]) < 0 then
    redis.call('HSET', KEYS[1], ARGV[i], 0)
  end
end
redis.call('EXPIRE', KEYS[1], 3456000)
return 1
";

/// `ARGV[1]` tokens (negative: given back), `ARGV[2]` requests (counted
/// by a worker alone while Redis was away; negative: leased permits given
/// back), `ARGV[3]` how many minutes ago
/// (0 or 1: a minute older than that is out of the sliding window, and
/// nothing is charged). Mirrors `MemoryBackend::charge`.
pub(super) const CHARGE: &str = r"
local ago = tonumber(ARGV[3])
if ago > 1 then return 0 end
local at = m - math.max(ago, 0)
-- Never below 0: an estimate given back may land in a later minute.
if redis.call('HINCRBY', KEYS[1], 't:' .. at, ARGV[1]) < 0 then
  redis.call('HSET', KEYS[1], 't:' .. at, 0)
end
if tonumber(ARGV[2]) ~= 0 and redis.call('HINCRBY', KEYS[1], 'r:' .. at, ARGV[2]) < 0 then
  redis.call('HSET', KEYS[1], 'r:' .. at, 0)
end
redis.call('EXPIRE', KEYS[1], 180)
return 1
";

/// The current minute's counts: `{requests, tokens}`.
pub(super) const USAGE: &str = r"
return {get('r:' .. m), get('t:' .. m)}
";

/// `KEYS[1]` the live workers; `ARGV[1]` this worker, `ARGV[2]` how long a
/// silent worker counts (ms). Returns how many are live.
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
";

pub(super) fn health_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{COMMON}{body}"))
}

/// Concurrency-slot shares (`fleet/slots/lease.rs`). `KEYS`: one hash per
/// capped member (field: worker id, value `grant|want|expires ms`), all
/// under one hash tag. `ARGV[1]` this worker, `ARGV[2]` the lease's ttl
/// (ms), then per key: the cap, what this worker holds now (its share, or
/// more while slots of a larger one are in use), what it wants. Shares are
/// split max-min fair over the live workers' wants (ties by worker id);
/// a worker is granted its fair share only as far as the others' records
/// leave room, and its record never drops below what it holds, so the
/// records never add up to more than the cap. What nobody wants is split
/// too (the busiest first), so idle workers still hold a slot or so each
/// and the whole cap is always leased out. Returns per key
/// `{grant, live workers}`.
pub(super) const SLOTS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, ttl = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local cap = tonumber(ARGV[3 * i])
  local holds = tonumber(ARGV[3 * i + 1])
  local mine = tonumber(ARGV[3 * i + 2])
  local others = 0
  local list = {{id = me, want = mine}}
  local all = redis.call('HGETALL', KEYS[i])
  for j = 1, #all, 2 do
    local f = {}
    for p in string.gmatch(all[j + 1] .. '|', '([^|]*)|') do f[#f + 1] = tonumber(p) or 0 end
    if (f[3] or 0) <= now then
      redis.call('HDEL', KEYS[i], all[j])
    elseif all[j] ~= me then
      others = others + (f[1] or 0)
      list[#list + 1] = {id = all[j], want = f[2] or 0}
    end
  end
  table.sort(list, function(a, b)
    if a.want ~= b.want then return a.want < b.want end
    return a.id < b.id
  end)
  local left, fair = cap, 0
  local given = {}
  for k = 1, #list do
    local g = math.min(list[k].want, math.floor(left / (#list - k + 1)))
    given[k] = g
    left = left - g
  end
  -- What rounding left, to those who want more, the most wanting first;
  -- then what nobody wants, the same way: the whole cap is always out.
  for pass = 1, 2 do
    for k = #list, 1, -1 do
      if left > 0 and (pass == 2 or given[k] < list[k].want) then
        given[k] = given[k] + 1
        left = left - 1
      end
    end
  end
  while left > 0 do
    for k = #list, 1, -1 do
      if left > 0 then
        given[k] = given[k] + 1
        left = left - 1
      end
    end
  end
  for k = 1, #list do
    if list[k].id == me then fair = given[k] end
  end
  local grant = math.max(0, math.min(fair, cap - others))
  local record = math.max(grant, holds)
  redis.call('HSET', KEYS[i], me, record .. '|' .. mine .. '|' .. (now + ttl))
  redis.call('PEXPIRE', KEYS[i], ttl * 2)
  out[#out + 1] = grant
  out[#out + 1] = #list
end
return out
";

-- balancer.lua: drop-in replacement for ingress-nginx's rootfs/etc/nginx/lua/balancer.lua
-- whose decisions all come from the ingress-lb core (lua/ingress_lb/core.lua).
--
-- Wiring (as in ingress-nginx's nginx.tmpl):
--   init_by_lua_block        { balancer = require("balancer") }
--   init_worker_by_lua_block { balancer.init_worker() }
--   rewrite_by_lua_block     { balancer.rewrite() }
--   upstream upstream_balancer { server 0.0.0.1; balancer_by_lua_block { balancer.balance() } }
--   log_by_lua_block         { balancer.log() }
-- and, per location, the variables nginx.tmpl sets: $proxy_upstream_name (the
-- backend), $location_path (the ingress path: cookie path and cookie `locations`),
-- $balancer_ewma_score (optional; set to the picked endpoint's ewma score).
--
-- This module makes no balancing decision: rewrite() asks the core whether the
-- backend can serve, balance() fetches the request data the backend's algorithm
-- needs and asks the core for the peer, log() reports the attempts' timings to the
-- core (ewma). The per-request pick state (an ilb_pick_ctx) lives in ngx.ctx, so
-- the retries nginx makes after a failed attempt reach the core with the peers
-- already tried; log() returns it to the worker's free list.
--
-- Canary routing: when $proxy_upstream_name has alternativeBackends, the core
-- decides (once per request, kept in ngx.ctx for the retries) whether the request
-- goes to one of them, from the $http_ variables it names (core.backend(name)
-- lists them) and $http_cookie; the chosen name goes to
-- $proxy_alternative_upstream_name when the location declares it, as stock does.
--
-- Request data, by what the backend needs (core.backend(name), cached per
-- configuration):
--   hash key   the backend's upstream-hash-by expression evaluated as ingress-nginx's
--              util.generate_var_value does (ingress_lb.hash_by), in balance(), as
--              stock does;
--   cookie     $http_cookie, $host ("_" when $server_name is "_", the key stock
--              looks `locations` up with), $location_path ("/" when the location
--              does not set it), $http_user_agent, $https = "on";
--   timing     $upstream_addr, $upstream_status, $upstream_connect_time,
--              $upstream_response_time as they are, reported in log().
--
-- Set-Cookie: the sticky algorithms ask for a cookie with the pick. balance() adds
-- it to the response headers right there (ngx.header works in balancer_by_lua with
-- lua-nginx-module, as stock's sticky balancer relies on), keeping any other
-- Set-Cookie already set; a retry's pick replaces the cookie an earlier attempt of
-- the same request added (the last pick decides), so a response never carries two
-- affinity cookies.
--
-- ewma statistics: requiring this module in init_by_lua (the master) maps the
-- statistics every worker shares (core.init_stats); size them with
-- require("ingress_lb.core").configure{ ewma_slots = N } before the require.
-- Required later (in a worker), each worker keeps its own, with a warning once an
-- ewma backend is used.
--
-- Keeping workers in step: every worker has its own core. A timer (SYNC_INTERVAL)
-- reads the configuration_data shared dict:
--   * when the key "backends_generation" exists (written by our configuration.lua,
--     incremented once per accepted POST), "backends" is read and applied only when
--     that counter changed: an unchanged configuration is never read or decoded, and
--     two updates within one second are both seen;
--   * otherwise (stock configuration.lua, which only writes "backends" and
--     "raw_backends_last_synced_at" = ngx.time()), "backends" is read when the
--     timestamp changed and again on every tick for RECHECK_WINDOW seconds after
--     it, so that a second POST within the same second is not missed; the core
--     recognises an identical document without decoding it.
-- A document the core rejects is logged once; the previous configuration keeps
-- serving.

local ngx_balancer = require("ngx.balancer")
local core = require("ingress_lb.core")
local hash_by = require("ingress_lb.hash_by")
local shdict_raw = require("ingress_lb.shdict_raw")

local ngx = ngx
local ngx_var = ngx.var
local ngx_log = ngx.log
local ngx_now = ngx.now
local ngx_header = ngx.header
local ERR = ngx.ERR
local WARN = ngx.WARN
local tostring = tostring
local type = type
local pcall = pcall
local require = require
local setmetatable = setmetatable
local string_byte = string.byte
local string_find = string.find
local table_remove = table.remove

local core_backend = core.backend
local core_pick = core.pick
local core_last_peer = core.last_peer
local core_last_set_cookie = core.last_set_cookie
local core_observe = core.observe
local core_route = core.route
local core_new_ctx = core.new_ctx
local core_release_ctx = core.release_ctx
local core_apply = core.apply
local core_apply_yielding = core.apply_yielding
local core_counter_in_force = core.counter_in_force
local core_note_in_force = core.note_in_force
local read_raw = shdict_raw.read
local raw_reads = shdict_raw.available()
local result_name = core.result_name
local compile_hash_by = hash_by.compile
local evaluate_hash_by = hash_by.evaluate
local set_more_tries = ngx_balancer.set_more_tries
local set_current_peer = ngx_balancer.set_current_peer

-- seconds between two reads of the shared dict; every worker uses a new
-- configuration at most this long (plus one timer run) after it was stored
local SYNC_INTERVAL = 0.25

-- seconds during which "backends" is re-read after a change of the stock
-- timestamp (which has a resolution of one second)
local RECHECK_WINDOW = 2

local GENERATION_KEY = "backends_generation"
local SYNCED_AT_KEY = "raw_backends_last_synced_at"
-- also watched, for configuration writers that use this name
local SYNCED_AT_KEY_ALT = "backends_last_synced_at"

-- the per-request pick state in ngx.ctx
local CTX_KEY = "ingress_lb_pick_ctx"
-- the Set-Cookie value added by an earlier attempt of the request, in ngx.ctx
local COOKIE_KEY = "ingress_lb_set_cookie"
-- ngx.ctx key: the backend that serves this request (proxy_upstream_name or the
-- canary the core routed it to), decided once and kept for the retries
local BACKEND_KEY = "ingress_lb_backend"

-- Like stock: never proxy to the controller's own status port on localhost.
-- configuration.prohibited_localhost_port is set by nginx.tmpl in init_by_lua.
local PROHIBITED_LOCALHOST_PORT
do
  local ok, configuration = pcall(require, "configuration")
  PROHIBITED_LOCALHOST_PORT = ok and type(configuration) == "table"
                              and configuration.prohibited_localhost_port or "10246"
end
local PROHIBITED_SUFFIX = ":" .. tostring(PROHIBITED_LOCALHOST_PORT)
local PROHIBITED_PEER_PATTERN = "^127%.[%d.]+" .. PROHIBITED_SUFFIX .. "$"

local configuration_data = ngx.shared.configuration_data

local _M = {}

-- The ewma statistics every worker shares are mapped here when this module is
-- loaded in init_by_lua (the master, before the workers are forked). A library
-- that cannot be loaded is reported by init_worker(); why the statistics are not
-- shared is reported when an ewma backend is first used.
local stats_unshared_reason = "balancer.lua was not required in init_by_lua"
if ngx.get_phase() == "init" and core.load() then
  local ok, err = core.init_stats()
  if ok then
    stats_unshared_reason = nil
  else
    stats_unshared_reason = err
  end
end
local stats_warned = false

-- $balancer_ewma_score: nil until first set, then whether this nginx.conf
-- declares it (nginx.tmpl does, with "set $balancer_ewma_score -1;"; setting an
-- undeclared variable raises an error)
local ewma_score_declared

-- sync state (per worker)
local last_generation
local last_synced_at = 0
local recheck_until = 0
local rejected_document


-- document: a Lua string, nil, or a pointer to `len` bytes (shdict_raw.read())
local function apply_document(document, yielding, len)
  if document == nil then
    -- like stock: no stored backends means no backend at all
    document = "[]"
  end

  -- from the timer: a large change is compiled on another thread while the timer
  -- sleeps, and the worker keeps serving with the configuration in force
  local ok, err
  if yielding then
    ok, err = core_apply_yielding(document, nil, len)
  else
    ok, err = core_apply(document, len)
  end
  if ok then
    rejected_document = nil
    -- what the core could not honour (an unknown load-balance name, an invalid
    -- canary header pattern, ...): each distinct set logged once (by the worker
    -- that took the POST, or the first worker to apply it)
    local warnings = core.new_warnings(configuration_data)
    if warnings then
      ngx_log(WARN, "backends configuration: ", warnings)
    end
    return true
  end

  -- a pointer's document is read once per counter value: logged each time
  if type(document) ~= "string" or document ~= rejected_document then
    rejected_document = type(document) == "string" and document or nil
    ngx_log(ERR, "could not apply backends data, the previous configuration ",
            "stays in force: ", err)
  end
  return false
end


-- yielding: called where ngx.sleep is allowed (the timer), not in init_worker
local function sync_backends(yielding)
  if not configuration_data then
    return
  end

  -- the counter is read before the document: a POST landing in between is seen
  -- again on the next run (and then recognised as identical by the core)
  local generation = configuration_data:get(GENERATION_KEY)
  if generation ~= nil then
    if generation == last_generation then
      return
    end
    last_generation = generation
    -- the document this worker's POST stored (and applied): nothing to read
    if core_counter_in_force(generation) then
      return
    end
    local document, len
    if yielding and raw_reads then
      -- into this worker's buffer, no Lua string (ingress_lb/shdict_raw.lua)
      document, len = read_raw(configuration_data, "backends")
      if document == nil and len ~= nil then
        -- len is a message: read it the usual way
        document, len = configuration_data:get("backends"), nil
      end
    else
      document = configuration_data:get("backends")
    end
    if apply_document(document, yielding, len) then
      -- read after the counter: this document, or a newer one
      core_note_in_force(generation)
    end
    return
  end

  -- stock configuration.lua: the timestamp has a one-second resolution
  last_generation = nil
  local synced_at = configuration_data:get(SYNCED_AT_KEY)
                    or configuration_data:get(SYNCED_AT_KEY_ALT)
                    or 1
  local now = ngx_now()
  if synced_at ~= last_synced_at then
    last_synced_at = synced_at
    recheck_until = now + RECHECK_WINDOW

  elseif now > recheck_until then
    return
  end

  apply_document(configuration_data:get("backends"), yielding)
end


-- a timer run still applying (it yields while a large change compiles) makes the
-- next runs return at once
local syncing = false

local function sync_timer(premature)
  if premature or syncing then
    return
  end
  syncing = true
  local ok, err = pcall(sync_backends, true)
  syncing = false
  if not ok then
    ngx_log(ERR, "backends sync failed: ", tostring(err))
  end
end


function _M.init_worker()
  if not configuration_data then
    ngx_log(ERR, "lua_shared_dict configuration_data is not defined, ",
            "backends cannot be synced")
  end

  -- use the stored configuration right away
  local ok, err = core.load()
  if not ok then
    ngx_log(ERR, err)
  end
  sync_backends()

  ok, err = ngx.timer.every(SYNC_INTERVAL, sync_timer)
  if not ok then
    ngx_log(ERR, "error when setting up timer.every for sync_backends: ", err)
  end

  -- certificates by SNI (certificate.lua, when installed): nginx.tmpl's
  -- init_worker only calls balancer.init_worker(), so the servers document's
  -- sync starts here
  local cert_ok, certificate = pcall(require, "certificate")
  if cert_ok and type(certificate) == "table" and certificate.init_worker then
    certificate.init_worker()
  elseif not cert_ok and not string_find(tostring(certificate),
                                         "module 'certificate' not found", 1, true) then
    ngx_log(ERR, "could not load certificate.lua: ", tostring(certificate))
  end
end


local function set_alternative_name(name)
  ngx_var.proxy_alternative_upstream_name = name
end
local alternative_name_declared


-- The backend serving this request: $proxy_upstream_name, or the alternative
-- (canary) backend the core routes the request to. Decided once per request (in
-- rewrite(), or in balance() when rewrite() is not wired) and kept in ngx.ctx, so
-- every retry goes to the same backend. Like stock, the chosen alternative's name
-- is put in $proxy_alternative_upstream_name when the location declares it.
local function request_backend(ctx, name, d)
  local chosen = ctx[BACKEND_KEY]
  if chosen then
    return chosen
  end

  name = name or ngx_var.proxy_upstream_name
  if not name then
    return nil
  end
  d = d or core_backend(name)
  if d.alternatives then
    local alternative, rc = core_route(d, ngx_var.http_cookie, ngx_var)
    if alternative then
      name = alternative
      if alternative_name_declared then
        ngx_var.proxy_alternative_upstream_name = alternative
      elseif alternative_name_declared == nil then
        alternative_name_declared = pcall(set_alternative_name, alternative)
      end
    elseif rc then
      ngx_log(WARN, "canary routing failed for backend ", name, " (",
              result_name(rc), "), using it")
    end
  end
  ctx[BACKEND_KEY] = name
  return name
end


function _M.rewrite()
  -- like stock (and the module's ingress_lb_route): the backend the ingress names
  -- must serve, whatever canary the request may then go to
  local name = ngx_var.proxy_upstream_name
  local d = core_backend(name)
  if not d.serves then
    ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
    return ngx.exit(ngx.status)
  end
  -- without canaries, balance() reads $proxy_upstream_name itself: nothing to keep
  if d.alternatives then
    request_backend(ngx.ctx, name, d)
  end
end


local function set_ewma_score(score)
  ngx_var.balancer_ewma_score = score
end


-- Add the Set-Cookie header value `value` to the response (nil: none), replacing
-- the one an earlier attempt of this request added; other Set-Cookie values stay.
local function apply_set_cookie(ctx, value)
  local previous = ctx[COOKIE_KEY]
  if previous == value then
    return
  end
  ctx[COOKIE_KEY] = value

  local current = ngx_header["Set-Cookie"]
  if current == nil and previous == nil then
    ngx_header["Set-Cookie"] = value
    return
  end

  local list
  if type(current) == "table" then
    list = current
  elseif current ~= nil then
    list = { current }
  else
    list = {}
  end

  if previous ~= nil then
    for i = #list, 1, -1 do
      if list[i] == previous then
        table_remove(list, i)
        break
      end
    end
  end

  if value ~= nil then
    list[#list + 1] = value
  end

  if #list == 0 then
    ngx_header["Set-Cookie"] = nil
  elseif #list == 1 then
    ngx_header["Set-Cookie"] = list[1]
  else
    ngx_header["Set-Cookie"] = list
  end
end


function _M.balance()
  local ctx = ngx.ctx
  local backend_name = request_backend(ctx)
  if not backend_name then
    return
  end

  local pick_ctx = ctx[CTX_KEY]
  if not pick_ctx then
    local err
    pick_ctx, err = core_new_ctx()
    if not pick_ctx then
      ngx_log(ERR, err)
      return
    end
    ctx[CTX_KEY] = pick_ctx
  end

  -- the request data this backend's algorithm needs, nothing else
  local backend = core_backend(backend_name)
  local hash_key, cookie, host, location_path, user_agent, https

  if backend.hash_key then
    local program = backend.hash_program
    if not program then
      program = compile_hash_by(backend.hash_by)
      backend.hash_program = program
    end
    hash_key = evaluate_hash_by(program, ngx_var)
  end

  if backend.cookie then
    cookie = ngx_var.http_cookie
    -- the key stock looks cookie `locations` up with
    if ngx_var.server_name == "_" then
      host = "_"
    else
      host = ngx_var.host
    end
    -- nil or "" when the location does not set it: the core then uses "/"
    location_path = ngx_var.location_path
    user_agent = ngx_var.http_user_agent
    https = ngx_var.https == "on"
  end

  local peer, rc = core_pick(backend_name, pick_ctx, hash_key, cookie, host,
                             location_path, user_agent, https, ngx_now())
  if not peer then
    ngx_log(WARN, "no peer was returned, backend: ", backend_name, " (",
            result_name(rc), ")")
    return
  end

  if backend.timing then
    local score = core_last_peer().score
    if ewma_score_declared then
      ngx_var.balancer_ewma_score = score
    elseif ewma_score_declared == nil then
      ewma_score_declared = pcall(set_ewma_score, score)
    end
  end

  if backend.cookie then
    local set_cookie = core_last_set_cookie()
    if set_cookie or ctx[COOKIE_KEY] then
      apply_set_cookie(ctx, set_cookie)
    end
  end

  -- "127." only: the pattern is not run for other peers
  if string_byte(peer, 1) == 49 and string_find(peer, PROHIBITED_PEER_PATTERN) then
    ngx_log(ERR, "attempted to proxy to self, backend: ", backend_name,
            ", peer: ", peer)
    return
  end

  set_more_tries(1)

  local ok, err = set_current_peer(peer)
  if not ok then
    ngx_log(ERR, "error while setting current upstream peer ", peer, ": ", err)
  end
end


function _M.log()
  local ctx = ngx.ctx
  local pick_ctx = ctx[CTX_KEY]
  if not pick_ctx then
    -- balance() did not run for this request: nothing to report
    return
  end
  ctx[CTX_KEY] = nil
  core_release_ctx(pick_ctx)

  local backend_name = ctx[BACKEND_KEY] or ngx_var.proxy_upstream_name
  if not core_backend(backend_name).timing then
    return
  end

  if stats_unshared_reason and not stats_warned then
    stats_warned = true
    ngx_log(WARN, "ewma statistics are kept per worker process, not shared: ",
            stats_unshared_reason)
  end

  -- raw texts: the core parses them
  core_observe(backend_name, ngx_var.upstream_addr, ngx_var.upstream_status,
               ngx_var.upstream_connect_time, ngx_var.upstream_response_time,
               ngx_now())
end


-- Helpers stock exposes through the metatable. Stock returns Lua balancer
-- objects; there are none here, so these return a descriptor { name = ... } of a
-- backend the core can serve, or nil.
local function get_balancer_by_upstream_name(upstream_name)
  if core_backend(upstream_name).serves then
    return { name = upstream_name }
  end
  return nil
end

local function get_balancer()
  return get_balancer_by_upstream_name(request_backend(ngx.ctx))
end

-- Not provided (they operate on stock's per-algorithm Lua objects):
-- get_implementation, sync_backend, route_to_alternative_balancer.
setmetatable(_M, {__index = {
  get_balancer = get_balancer,
  get_balancer_by_upstream_name = get_balancer_by_upstream_name,
  -- run one sync now (tests, debugging)
  sync_backends = sync_backends,
  SYNC_INTERVAL = SYNC_INTERVAL,
}})

return _M

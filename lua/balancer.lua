-- balancer.lua: drop-in replacement for ingress-nginx's rootfs/etc/nginx/lua/balancer.lua
-- whose decisions all come from the ingress-lb core (lua/ingress_lb/core.lua).
--
-- Wiring (as in ingress-nginx's nginx.tmpl):
--   init_by_lua_block        { balancer = require("balancer") }
--   init_worker_by_lua_block { balancer.init_worker() }
--   rewrite_by_lua_block     { balancer.rewrite() }
--   upstream upstream_balancer { server 0.0.0.1; balancer_by_lua_block { balancer.balance() } }
--   log_by_lua_block         { balancer.log() }
--
-- This module makes no balancing decision: rewrite() asks the core whether the
-- backend can serve, balance() asks it for the peer. The per-request pick state
-- (an ilb_pick_ctx) lives in ngx.ctx, so the retries nginx makes after a failed
-- attempt reach the core with the peers already tried; log() returns it to the
-- worker's free list.
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

local ngx = ngx
local ngx_var = ngx.var
local ngx_log = ngx.log
local ngx_now = ngx.now
local ERR = ngx.ERR
local WARN = ngx.WARN
local tostring = tostring
local type = type
local pcall = pcall
local require = require
local setmetatable = setmetatable
local string_byte = string.byte
local string_find = string.find

local core_has_backend = core.has_backend
local core_pick = core.pick
local core_new_ctx = core.new_ctx
local core_release_ctx = core.release_ctx
local core_apply = core.apply
local result_name = core.result_name
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

-- sync state (per worker)
local last_generation
local last_synced_at = 0
local recheck_until = 0
local rejected_document
local warned_generation


local function apply_document(document)
  if document == nil then
    -- like stock: no stored backends means no backend at all
    document = "[]"
  end

  local ok, err = core_apply(document)
  if ok then
    rejected_document = nil
    -- what the core could not honour (e.g. an algorithm not implemented yet),
    -- logged once per configuration change in each worker
    local generation = core.generation()
    if generation ~= warned_generation then
      warned_generation = generation
      local warnings = core.warnings()
      if warnings and warnings ~= "" then
        ngx_log(WARN, "backends configuration: ", warnings)
      end
    end
    return true
  end

  if document ~= rejected_document then
    rejected_document = document
    ngx_log(ERR, "could not apply backends data, the previous configuration ",
            "stays in force: ", err)
  end
  return false
end


local function sync_backends()
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
    apply_document(configuration_data:get("backends"))
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

  apply_document(configuration_data:get("backends"))
end


local function sync_timer(premature)
  if premature then
    return
  end
  sync_backends()
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
end


function _M.rewrite()
  local backend_name = ngx_var.proxy_upstream_name
  if not core_has_backend(backend_name) then
    ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
    return ngx.exit(ngx.status)
  end
end


function _M.balance()
  local backend_name = ngx_var.proxy_upstream_name
  if not backend_name then
    return
  end

  local ctx = ngx.ctx
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

  local peer, rc = core_pick(backend_name, pick_ctx)
  if not peer then
    ngx_log(WARN, "no peer was returned, backend: ", backend_name, " (",
            result_name(rc), ")")
    return
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
  if pick_ctx then
    ctx[CTX_KEY] = nil
    core_release_ctx(pick_ctx)
  end
end


-- Helpers stock exposes through the metatable. Stock returns Lua balancer
-- objects; there are none here, so these return a descriptor { name = ... } of a
-- backend the core can serve, or nil.
local function get_balancer_by_upstream_name(upstream_name)
  if core_has_backend(upstream_name) then
    return { name = upstream_name }
  end
  return nil
end

local function get_balancer()
  return get_balancer_by_upstream_name(ngx_var.proxy_upstream_name)
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

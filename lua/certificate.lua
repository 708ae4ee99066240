-- certificate.lua: drop-in replacement for ingress-nginx's
-- rootfs/etc/nginx/lua/certificate.lua whose hostname -> certificate decisions come
-- from the ingress-lb core (lua/ingress_lb/core.lua).
--
-- Wiring (as in ingress-nginx's nginx.tmpl):
--   init_by_lua_block        { certificate = require("certificate")
--                              certificate.is_ocsp_stapling_enabled = false }
--   init_worker_by_lua_block { balancer.init_worker() }   -- also runs
--                                                          -- certificate.init_worker()
--   server { listen 443 ssl; ssl_certificate <fallback>; ssl_certificate_key <...>;
--            ssl_certificate_by_lua_block { certificate.call() } }
--
-- Where the certificates come from: POST /configuration/servers (configuration.lua)
-- applies the document in its own core first (core.apply_servers: a rejected one is
-- answered 400 with the core's reason and changes nothing), stores it whole in
-- the shared dict configuration_data under the key "servers" and increments the
-- counter "servers_generation" there. Every worker applies the stored document to
-- its core (core.apply_accepted_servers: checked, but the PEMs are not parsed in
-- the core, this module parses what it serves) once per change of that counter: from a timer
-- (SYNC_INTERVAL) started by init_worker(), and, so that no handshake is answered
-- from an outdated set, at the start of call() when the counter moved. The
-- document is the whole truth: a hostname absent from the latest POST is no longer
-- served (stock ingress-nginx keeps serving it until it is listed with "-1").
--
-- call() (ssl_certificate_by_lua): the SNI name (ngx.ssl.server_name()) is looked up
-- in the core (exact name, then the name with its first label replaced by "*";
-- no SNI or no match: the server "_"), giving a certificate id. The id changes
-- whenever the certificate's content changes, so the cdata ngx.ssl needs
-- (parse_pem_cert, parse_pem_priv_key) is made once per id, on the first handshake
-- that needs it, and reused; ids the core no longer knows are dropped from the
-- cache when the core's servers generation changes. When nothing matches (not even
-- "_"), call() returns without touching the connection: nginx's static
-- ssl_certificate answers.
--
-- OCSP stapling (is_ocsp_stapling_enabled) is not implemented: when the flag is
-- set, init_worker() says so once (worker 0), and certificates are served
-- without stapled responses.

local ssl = require("ngx.ssl")
local core = require("ingress_lb.core")

local ngx = ngx
local ngx_log = ngx.log
local ERR = ngx.ERR
local WARN = ngx.WARN
local INFO = ngx.INFO
local pairs = pairs
local tostring = tostring

local ssl_server_name = ssl.server_name
local ssl_clear_certs = ssl.clear_certs
local ssl_set_cert = ssl.set_cert
local ssl_set_priv_key = ssl.set_priv_key
local parse_pem_cert = ssl.parse_pem_cert
local parse_pem_priv_key = ssl.parse_pem_priv_key

-- configuration_data keys written by configuration.lua
local SERVERS_KEY = "servers"
local GENERATION_KEY = "servers_generation"

-- seconds between two looks at GENERATION_KEY in each worker
local SYNC_INTERVAL = 0.25

-- the server whose certificate answers handshakes without SNI or without a match
local DEFAULT_CERT_HOSTNAME = "_"

local configuration_data = ngx.shared.configuration_data

local _M = {
  is_ocsp_stapling_enabled = false,
}

-- per worker --------------------------------------------------------------------

-- GENERATION_KEY value whose document this worker's core has (nil: none yet)
local applied_generation
-- a document the core rejected, logged once
local rejected_generation
-- certificate id -> { cert = cdata, key = cdata }
local cache = {}
local cache_count = 0
-- the core's servers generation the cache was last pruned for
local cache_generation
-- statistics (tests, debugging)
local parsed_count = 0
local pruned_count = 0


-- the core's certificate functions (nil with a library binding that predates them)
-- the stored document was accepted by the worker that took the POST: the core
-- need not parse the PEMs (certificate.call() makes the cdata it needs itself)
local core_apply_servers = core.apply_accepted_servers
local core_hostname_has_certificate = core.hostname_has_certificate
local core_certificate_id = core.certificate_id
local core_certificate_pem = core.certificate_pem
local core_servers_generation = core.servers_generation
local core_ready = core_apply_servers and core_certificate_id and core_certificate_pem
                   and core_hostname_has_certificate
                   and core_servers_generation and true or false
local MISSING_CORE = "ingress_lb.core has no certificate functions (apply_servers, "
                     .. "certificate_id, ...): certificates are not served"
local missing_core_logged = false


-- Drop the cached cdata of certificate ids the core no longer has.
local function prune_cache(generation)
  cache_generation = generation
  if cache_count == 0 then
    return
  end
  local exists = core.certificate_exists
  for id in pairs(cache) do
    local keep
    if exists then
      keep = exists(id)
    else
      keep = core_certificate_pem(id) ~= nil
    end
    if not keep then
      cache[id] = nil
      cache_count = cache_count - 1
      pruned_count = pruned_count + 1
    end
  end
end


local function check_cache_generation()
  local generation = core_servers_generation()
  if generation ~= cache_generation then
    prune_cache(generation)
  end
end


-- Apply `document` (the servers document stored under `generation`) to this
-- worker's core. Returns true, or nil and the core's message.
local function apply_document(document, generation)
  if not core_ready then
    return nil, MISSING_CORE
  end
  local ok, err = core_apply_servers(document)
  if not ok then
    if generation ~= rejected_generation then
      rejected_generation = generation
      ngx_log(ERR, "could not apply the servers (certificates) document, the ",
              "previous certificates stay in force: ", tostring(err))
    end
    return nil, err
  end
  applied_generation = generation
  rejected_generation = nil
  check_cache_generation()
  return true
end


-- Bring this worker's core up to the stored servers document when
-- GENERATION_KEY moved since it was last applied.
local function sync_servers()
  if not configuration_data then
    return
  end
  -- the counter first: a POST landing in between is seen again on the next look
  local generation = configuration_data:get(GENERATION_KEY)
  if generation == nil or generation == applied_generation
     or generation == rejected_generation then
    return
  end
  local document = configuration_data:get(SERVERS_KEY)
  if document == nil then
    return
  end
  apply_document(document, generation)
end


-- For configuration.lua: `document` was stored under counter value `generation`
-- by this worker; apply it now, without reading it back from the shared dict.
function _M.apply_servers(document, generation)
  return apply_document(document, generation)
end


local function sync_timer(premature)
  if premature then
    return
  end
  sync_servers()
end


local ocsp_warned = false

function _M.init_worker()
  if _M.is_ocsp_stapling_enabled and not ocsp_warned then
    ocsp_warned = true
    local id = ngx.worker.id()
    if id == nil or id == 0 then
      ngx_log(WARN, "OCSP stapling is enabled (certificate.is_ocsp_stapling_enabled) ",
              "but ingress-lb does not staple OCSP responses yet: certificates are ",
              "served without them")
    end
  end

  if not configuration_data then
    ngx_log(ERR, "lua_shared_dict configuration_data is not defined, ",
            "certificates cannot be synced")
    return
  end

  if not core_ready then
    -- said by call(), if certificates are ever asked for
    return
  end

  sync_servers()

  local ok, err = ngx.timer.every(SYNC_INTERVAL, sync_timer)
  if not ok then
    ngx_log(ERR, "error when setting up timer.every for the servers sync: ", err)
  end
end


-- The cdata of certificate `id`, parsed on first use.
local function get_entry(id, hostname)
  local entry = cache[id]
  if entry then
    return entry
  end

  local pem, err = core_certificate_pem(id)
  if not pem then
    ngx_log(ERR, "certificate ", tostring(id), " of ", tostring(hostname),
            " not found in the core: ", tostring(err))
    return nil
  end

  local cert
  cert, err = parse_pem_cert(pem)
  if not cert then
    ngx_log(ERR, "failed to parse PEM certificate chain: ", err)
    return nil
  end

  local key
  key, err = parse_pem_priv_key(pem)
  if not key then
    ngx_log(ERR, "failed to parse PEM private key: ", err)
    return nil
  end

  entry = { cert = cert, key = key }
  cache[id] = entry
  cache_count = cache_count + 1
  parsed_count = parsed_count + 1
  return entry
end


function _M.call()
  if not core_ready then
    if not missing_core_logged then
      missing_core_logged = true
      ngx_log(ERR, MISSING_CORE)
    end
    return
  end

  if configuration_data
     and configuration_data:get(GENERATION_KEY) ~= applied_generation then
    sync_servers()
  end

  local hostname, hostname_err = ssl_server_name()
  if hostname_err then
    ngx_log(ERR, "error while obtaining hostname: ", hostname_err)
  end

  local id = core_certificate_id(hostname)
  if id == nil then
    -- nothing for this name and no "_": nginx's static certificate answers
    ngx_log(INFO, "no certificate for ", hostname or "(no SNI)",
            ", using the static ssl_certificate")
    return
  end

  local generation = core_servers_generation()
  if generation ~= cache_generation then
    prune_cache(generation)
  end

  local entry = get_entry(id, hostname)
  if not entry then
    return ngx.exit(ngx.ERROR)
  end

  local ok, err = ssl_clear_certs()
  if not ok then
    ngx_log(ERR, "failed to clear existing (fallback) certificates: ", err)
    return ngx.exit(ngx.ERROR)
  end

  ok, err = ssl_set_cert(entry.cert)
  if not ok then
    ngx_log(ERR, "failed to set cert: ", err)
    return ngx.exit(ngx.ERROR)
  end

  ok, err = ssl_set_priv_key(entry.key)
  if not ok then
    ngx_log(ERR, "failed to set private key: ", err)
    return ngx.exit(ngx.ERROR)
  end
end


-- Whether the request's host ($host) has a certificate of its own (exact or
-- wildcard match, not the default server's), as stock; cached in ngx.ctx.
function _M.configured_for_current_request()
  local ctx = ngx.ctx
  if ctx.cert_configured_for_current_request == nil then
    if configuration_data
       and configuration_data:get(GENERATION_KEY) ~= applied_generation then
      sync_servers()
    end
    ctx.cert_configured_for_current_request = core_ready and core_hostname_has_certificate(ngx.var.host)
  end
  return ctx.cert_configured_for_current_request
end


-- Stock sizes an LRU cache of parsed certificates; here the cache holds the
-- certificates the core serves (dropped when they leave it): nothing to size.
function _M.set_cache_size(_)
end


function _M.flush_cache()
  cache = {}
  cache_count = 0
end


-- this worker's cache: certificates held, parsed so far, dropped so far
local function cache_stats()
  return { size = cache_count, parsed = parsed_count, pruned = pruned_count,
           applied_generation = applied_generation }
end


setmetatable(_M, { __index = {
  sync_servers = sync_servers,
  cache_stats = cache_stats,
  SERVERS_KEY = SERVERS_KEY,
  GENERATION_KEY = GENERATION_KEY,
  SYNC_INTERVAL = SYNC_INTERVAL,
  DEFAULT_CERT_HOSTNAME = DEFAULT_CERT_HOSTNAME,
}})

return _M

-- configuration.lua: the controller's dynamic-configuration endpoint, compatible
-- with ingress-nginx's rootfs/etc/nginx/lua/configuration.lua (same endpoints,
-- methods, status codes, response texts, shared dicts and keys), wired the same
-- way:  location /configuration { content_by_lua_block { configuration.call() } }
--
-- Differences from stock on POST /configuration/backends:
--   * the document is checked by the ingress-lb core before anything is stored:
--     a rejected document gets 400 with the core's message as the body, nothing is
--     stored and every worker keeps its configuration;
--   * it is applied in the worker that received it, which uses it at once;
--   * besides "backends" and "raw_backends_last_synced_at", the counter
--     "backends_generation" is incremented, so that balancer.lua in every worker
--     re-reads the document exactly once per accepted POST.
--
-- Differences from stock on POST /configuration/servers (certificates; read by
-- certificate.lua):
--   * the document is checked by the core first (core.apply_servers, which
--     changes nothing when it rejects a document, and parses each new
--     certificate once where validate + apply would parse it twice): a
--     rejected one (bad JSON, a PEM that does not parse, a key that does not
--     match its certificate, ...) gets 400 with the core's message as the body,
--     nothing is stored and every worker keeps its certificates;
--   * the document is the whole truth: it is stored as is under "servers" in
--     configuration_data (safe_set: it never evicts the backends; size the dict
--     for both), the counter "servers_generation" there is incremented, this
--     worker applies it at once and the others at their next look (every 0.25 s,
--     and before any handshake); a hostname absent from the latest POST is no
--     longer served (stock keeps serving it);
--   * certificate_servers and certificate_data are still written exactly as
--     stock writes them (so GET /configuration/certs answers as stock), after
--     the document is in force.
--
-- State on disk (require("ingress_lb.core").configure{ state_dir = "/dir" } before
-- this module is required in init_by_lua): each accepted backends or servers
-- document is also saved there (core.state_save, atomically); required in
-- init_by_lua, this module loads the saved documents into the shared dicts, as
-- if they had just been POSTed, when the dicts have none (a start, not a reload),
-- so every worker serves them from its first request. A corrupt or unreadable
-- file is logged and ignored.
--
-- Shared dicts: configuration_data (required), certificate_data and
-- certificate_servers (for /configuration/servers and /configuration/certs),
-- ocsp_response_cache (optional: entries of renewed certificates are dropped).

local core = require("ingress_lb.core")

local io = io
local ngx = ngx
local tostring = tostring
local string = string
local table = table
local pairs = pairs
local type = type
local pcall = pcall
local require = require

local configuration_data = ngx.shared.configuration_data
local certificate_data = ngx.shared.certificate_data
local certificate_servers = ngx.shared.certificate_servers
local ocsp_response_cache = ngx.shared.ocsp_response_cache

local EMPTY_UID = "-1"

local GENERATION_KEY = "backends_generation"

-- the servers document (POST /configuration/servers) and its change counter;
-- certificate.lua reads them in every worker
local SERVERS_KEY = "servers"
local SERVERS_GENERATION_KEY = "servers_generation"
-- what a worker has before any servers document: no certificate
local EMPTY_SERVERS = '{"servers":{},"certificates":{}}'

local _M = {}

-- cjson is only needed by /configuration/servers
local cjson
local function get_cjson()
  if cjson == nil then
    local ok, mod = pcall(require, "cjson.safe")
    cjson = ok and mod or false
  end
  return cjson
end

-- certificate.lua, when it can be loaded (it needs lua-resty-core's ngx.ssl)
local certificate
local function get_certificate()
  if certificate == nil then
    local ok, mod = pcall(require, "certificate")
    certificate = ok and type(mod) == "table" and mod or false
  end
  return certificate
end

function _M.get_backends_data()
  return configuration_data:get("backends")
end

function _M.get_general_data()
  return configuration_data:get("general")
end

function _M.get_raw_backends_last_synced_at()
  local raw_backends_last_synced_at = configuration_data:get("raw_backends_last_synced_at")
  if raw_backends_last_synced_at == nil then
    raw_backends_last_synced_at = 1
  end
  return raw_backends_last_synced_at
end

-- Number of backends documents accepted so far (nil before the first).
function _M.get_backends_generation()
  return configuration_data:get(GENERATION_KEY)
end

local function fetch_request_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then
    return body
  end

  -- larger than client_body_buffer_size: nginx wrote it to a temporary file
  local file_name = ngx.req.get_body_file()
  if not file_name then
    return nil
  end

  local file = io.open(file_name, "rb")
  if not file then
    return nil
  end

  body = file:read("*all")
  file:close()
  return body
end

local function get_pem_cert(hostname)
  local uid = certificate_servers:get(hostname)
  if not uid then
    return nil
  end

  return certificate_data:get(uid)
end

-- The servers document (hostname -> certificate uid, uid -> PEM) is the whole
-- truth: the core checks it first (400 with its message, nothing stored), then
-- it is stored under SERVERS_KEY, SERVERS_GENERATION_KEY is incremented and this
-- worker applies it at once (certificate.lua: the other workers within
-- SYNC_INTERVAL, or at their next handshake). certificate_servers and
-- certificate_data are then written exactly as stock writes them, for the tools
-- that read them (GET /configuration/certs).
local function store_stock_dicts(configuration, err_buf)
  for server, uid in pairs(configuration.servers or {}) do
    if uid == EMPTY_UID then
      -- the certificate itself stays: other servers may use it
      certificate_servers:delete(server)
    else
      local success, set_err, forcible = certificate_servers:set(server, uid)
      if not success then
        err_buf[#err_buf + 1] = string.format("error setting certificate for %s: %s\n",
                                              server, tostring(set_err))
      end
      if forcible then
        ngx.log(ngx.WARN, string.format("certificate_servers dictionary is full, "
          .. "LRU entry has been removed to store %s", server))
      end
    end
  end

  for uid, cert in pairs(configuration.certificates or {}) do
    local old_cert = certificate_data:get(uid)
    local renewed = old_cert ~= nil and old_cert ~= cert

    local success, set_err, forcible = certificate_data:set(uid, cert)
    if success then
      -- only once the new certificate is stored, so no OCSP response of the old
      -- one can be cached again afterwards
      if renewed and ocsp_response_cache then
        ocsp_response_cache:delete(uid)
      end
    else
      err_buf[#err_buf + 1] = string.format("error setting certificate for %s: %s\n",
                                            uid, tostring(set_err))
    end
    if forcible then
      ngx.log(ngx.WARN, string.format("certificate_data dictionary is full, "
        .. "LRU entry has been removed to store %s", uid))
    end
  end
end

-- Save the `kind` document ("backends", "servers") stored under `doc_key` in
-- configuration_data to configure{ state_dir }, once the core accepted it. What is
-- saved is what the dict holds: when another worker stored a newer document
-- meanwhile (the counter `generation_key` moved), it is saved again, so the file
-- ends with the latest accepted document whatever the order of the saves.
local function save_state(kind, doc_key, generation_key)
  local dir = core.state_dir()
  if not dir then
    return
  end
  for _ = 1, 8 do
    local generation = configuration_data:get(generation_key)
    local document = configuration_data:get(doc_key)
    if document == nil then
      return
    end
    local ok, err = core.state_save(dir, kind, document)
    if not ok then
      ngx.log(ngx.ERR, "dynamic-configuration: could not save the ", kind,
              " configuration: ", err)
      return
    end
    if configuration_data:get(generation_key) == generation then
      return
    end
  end
end

-- Put this worker's certificates back on the document the other workers use.
-- Apply a POSTed `kind` document ("backends", "servers") in this worker's core
-- with `apply` before anything is stored: true, or false after answering 400 with
-- the core's reason (500 when the library is missing or a bug was caught).
local function apply_or_reject(kind, apply, document)
  local ok, err, rc = apply(document)
  if ok then
    return true
  end
  if rc == core.CONFIG_REJECTED or rc == core.INVALID_ARGUMENT then
    ngx.log(ngx.WARN, "dynamic-configuration: ", kind, " rejected: ", err)
    ngx.status = ngx.HTTP_BAD_REQUEST
  else
    ngx.log(ngx.ERR, "dynamic-configuration: could not check ", kind, ": ", err)
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
  end
  ngx.print(err)
  return false
end

local function restore_stored_servers()
  local ok, err = core.apply_accepted_servers(configuration_data:get(SERVERS_KEY) or EMPTY_SERVERS)
  if not ok then
    ngx.log(ngx.ERR, "dynamic-configuration: could not restore the stored servers: ", err)
  end
end

local function handle_servers()
  if ngx.var.request_method ~= "POST" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("Only POST requests are allowed!")
    return
  end

  -- an empty body is refused by the core, with its message
  local raw_configuration = fetch_request_body() or ""

  -- checked by the core, and in use in this worker, before anything is stored:
  -- one parse of every new certificate (core.validate_servers and then
  -- core.apply_servers would parse each twice, seconds for thousands)
  if not apply_or_reject("servers", core.apply_servers, raw_configuration) then
    return
  end

  -- the whole document for every worker; safe_set: never evict the backends
  local success, err = configuration_data:safe_set(SERVERS_KEY, raw_configuration)
  if not success then
    ngx.log(ngx.ERR, "dynamic-configuration: could not store the servers document (",
            #raw_configuration, " bytes) in configuration_data: ", tostring(err),
            "; make lua_shared_dict configuration_data larger")
    restore_stored_servers()
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    return
  end

  -- last: a worker that sees the new counter finds the new document
  local generation
  generation, err = configuration_data:incr(SERVERS_GENERATION_KEY, 1, 0)
  if not generation then
    ngx.log(ngx.ERR, "dynamic-configuration: could not increment ",
            SERVERS_GENERATION_KEY, ": ", tostring(err))
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    return
  end

  -- this worker has it in force: certificate.lua notes the generation (the
  -- core recognises the document it already has without decoding it)
  local certificate = get_certificate()
  if certificate then
    certificate.apply_servers(raw_configuration, generation)
  end

  save_state("servers", SERVERS_KEY, SERVERS_GENERATION_KEY)

  -- the stock dicts, for the tools that read them
  local json = get_cjson()
  if not json then
    ngx.log(ngx.ERR, "could not parse configuration: the cjson module is not available")
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    return
  end

  local configuration
  configuration, err = json.decode(raw_configuration)
  if type(configuration) ~= "table" then
    -- the core accepted it: not expected
    ngx.log(ngx.ERR, "could not parse configuration: ", err)
    ngx.status = ngx.HTTP_BAD_REQUEST
    return
  end

  local err_buf = {}
  store_stock_dicts(configuration, err_buf)
  if #err_buf > 0 then
    ngx.log(ngx.ERR, table.concat(err_buf))
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    return
  end

  ngx.status = ngx.HTTP_CREATED
end

local function handle_general()
  if ngx.var.request_method == "GET" then
    ngx.status = ngx.HTTP_OK
    ngx.print(_M.get_general_data())
    return
  end

  if ngx.var.request_method ~= "POST" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("Only POST and GET requests are allowed!")
    return
  end

  local config = fetch_request_body()

  local success, err = configuration_data:safe_set("general", config)
  if not success then
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    ngx.log(ngx.ERR, "error setting general config: " .. tostring(err))
    return
  end

  ngx.status = ngx.HTTP_CREATED
end

local function handle_certs()
  if ngx.var.request_method ~= "GET" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("Only GET requests are allowed!")
    return
  end

  local query = ngx.req.get_uri_args()
  if not query["hostname"] then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("Hostname must be specified.")
    return
  end

  local key = get_pem_cert(query["hostname"])
  if key then
    ngx.status = ngx.HTTP_OK
    ngx.print(key)
    return
  end

  ngx.status = ngx.HTTP_NOT_FOUND
  ngx.print("No key associated with this hostname.")
end

-- Put this worker's core back on the document the other workers use.
local function restore_stored_backends()
  local ok, err = core.apply(configuration_data:get("backends") or "[]")
  if not ok then
    ngx.log(ngx.ERR, "dynamic-configuration: could not restore the stored backends: ", err)
  end
end

local function handle_backends()
  if ngx.var.request_method == "GET" then
    ngx.status = ngx.HTTP_OK
    ngx.print(_M.get_backends_data())
    return
  end

  local backends = fetch_request_body()
  if not backends and not ngx.req.get_body_file() then
    -- no body at all: the core refuses it with its message (stock: 400, no body)
    backends = ""
  end
  if not backends then
    ngx.log(ngx.ERR, "dynamic-configuration: unable to read valid request body")
    ngx.status = ngx.HTTP_BAD_REQUEST
    return
  end

  -- check (and use, in this worker) before storing anything
  -- a large change compiles on another thread while this request sleeps: the
  -- worker keeps serving meanwhile (core.apply_yielding)
  local in_force_before = core.generation()
  if not apply_or_reject("backends", core.apply_yielding, backends) then
    return
  end

  local warnings = core.new_warnings(configuration_data)
  if warnings then
    ngx.log(ngx.WARN, "backends configuration: ", warnings)
  end

  -- the document stored already (a controller reposting what is in force): the
  -- same string (LuaJIT interns strings, so this is one hash and one memcmp);
  -- nothing to store, so no worker reads it again. The timestamp moves, as stock's.
  -- Only a document the core found identical to the one in force here (no new
  -- configuration published) can be: any other is stored without reading the
  -- stored one back (at worst a document another worker stored meanwhile is
  -- stored again). And when the stored counter is the one whose document this
  -- worker has in force, nothing needs reading at all.
  if core.generation() == in_force_before
     and (core.counter_in_force(configuration_data:get(GENERATION_KEY))
          or configuration_data:get("backends") == backends) then
    ngx.update_time()
    configuration_data:set("raw_backends_last_synced_at", ngx.time())
    ngx.status = ngx.HTTP_CREATED
    return
  end

  local counter_before = configuration_data:get(GENERATION_KEY)
  local success, err = configuration_data:set("backends", backends)
  if not success then
    ngx.log(ngx.ERR, "dynamic-configuration: error updating configuration: " .. tostring(err))
    restore_stored_backends()
    ngx.status = ngx.HTTP_BAD_REQUEST
    return
  end

  ngx.update_time()
  local raw_backends_last_synced_at = ngx.time()
  success, err = configuration_data:set("raw_backends_last_synced_at", raw_backends_last_synced_at)
  if not success then
    ngx.log(ngx.ERR, "dynamic-configuration: error updating when backends sync, " ..
                     "new upstream peers waiting for force syncing: " .. tostring(err))
    ngx.status = ngx.HTTP_BAD_REQUEST
    return
  end

  -- last: a worker that sees the new counter finds the new document
  local generation
  generation, err = configuration_data:incr(GENERATION_KEY, 1, 0)
  if not generation then
    -- the workers still see the timestamp change (balancer.lua's fallback)
    ngx.log(ngx.WARN, "dynamic-configuration: could not increment ",
            GENERATION_KEY, ": ", tostring(err))
  elseif generation == (counter_before or 0) + 1 then
    -- nobody stored a document between this one and its counter (whoever
    -- stores increments after): this worker's sync need not read it back
    core.note_in_force(generation)
  end

  save_state("backends", "backends", GENERATION_KEY)

  ngx.status = ngx.HTTP_CREATED
end

-- At start (init_by_lua, in the master, before the workers exist): the documents
-- saved in configure{ state_dir }, checked by the core, into configuration_data as
-- an accepted POST stores them, unless the dict has a document already (a reload
-- keeps the dicts: they are newer).
local function load_state()
  local dir = core.state_dir()
  if not dir or not configuration_data then
    return
  end

  if configuration_data:get("backends") == nil then
    local document, err = core.state_load(dir, "backends")
    if document then
      configuration_data:set("backends", document)
      configuration_data:set("raw_backends_last_synced_at", ngx.time())
      configuration_data:incr(GENERATION_KEY, 1, 0)
      ngx.log(ngx.INFO, "dynamic-configuration: backends loaded from ", dir)
    elseif document == nil then
      ngx.log(ngx.ERR, "dynamic-configuration: the saved backends configuration is ",
              "ignored: ", err)
    end
  end

  if configuration_data:get(SERVERS_KEY) == nil then
    local document, err = core.state_load(dir, "servers")
    if document then
      local ok, set_err = configuration_data:safe_set(SERVERS_KEY, document)
      if not ok then
        ngx.log(ngx.ERR, "dynamic-configuration: could not store the saved servers ",
                "document in configuration_data: ", tostring(set_err))
        return
      end
      configuration_data:incr(SERVERS_GENERATION_KEY, 1, 0)
      -- the stock dicts, for the tools that read them
      local json = get_cjson()
      local configuration = json and json.decode(document)
      if type(configuration) == "table" and certificate_data and certificate_servers then
        local err_buf = {}
        store_stock_dicts(configuration, err_buf)
        if #err_buf > 0 then
          ngx.log(ngx.ERR, table.concat(err_buf))
        end
      end
      ngx.log(ngx.INFO, "dynamic-configuration: servers loaded from ", dir)
    elseif document == nil then
      ngx.log(ngx.ERR, "dynamic-configuration: the saved servers configuration is ",
              "ignored: ", err)
    end
  end
end

if ngx.get_phase() == "init" then
  load_state()
end

function _M.call()
  if ngx.var.request_method ~= "POST" and ngx.var.request_method ~= "GET" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("Only POST and GET requests are allowed!")
    return
  end

  if ngx.var.request_uri == "/configuration/servers" then
    handle_servers()
    return
  end

  if ngx.var.request_uri == "/configuration/general" then
    handle_general()
    return
  end

  if ngx.var.uri == "/configuration/certs" then
    handle_certs()
    return
  end

  if ngx.var.request_uri == "/configuration/backends" then
    handle_backends()
    return
  end

  ngx.status = ngx.HTTP_NOT_FOUND
  ngx.print("Not found!")
end

setmetatable(_M, {__index = { handle_servers = handle_servers }})

return _M

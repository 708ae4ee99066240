-- configuration.lua: the controller's dynamic-configuration endpoint, compatible
-- with ingress-nginx's rootfs/etc/nginx/lua/configuration.lua (same endpoints,
-- methods, status codes, response texts, shared dicts and keys), wired the same
-- way:  location /configuration { content_by_lua_block { configuration.call() } }
--
-- Differences from stock, all on POST /configuration/backends:
--   * the document is checked by the ingress-lb core before anything is stored:
--     a rejected document gets 400 with the core's message as the body, nothing is
--     stored and every worker keeps its configuration;
--   * it is applied in the worker that received it, which uses it at once;
--   * besides "backends" and "raw_backends_last_synced_at", the counter
--     "backends_generation" is incremented, so that balancer.lua in every worker
--     re-reads the document exactly once per accepted POST.
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

local function handle_servers()
  if ngx.var.request_method ~= "POST" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("Only POST requests are allowed!")
    return
  end

  local json = get_cjson()
  if not json then
    ngx.log(ngx.ERR, "could not parse configuration: the cjson module is not available")
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    return
  end

  local raw_configuration = fetch_request_body()

  local configuration, err = json.decode(raw_configuration)
  if type(configuration) ~= "table" then
    ngx.log(ngx.ERR, "could not parse configuration: ", err)
    ngx.status = ngx.HTTP_BAD_REQUEST
    return
  end

  local err_buf = {}

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
  if not backends then
    ngx.log(ngx.ERR, "dynamic-configuration: unable to read valid request body")
    ngx.status = ngx.HTTP_BAD_REQUEST
    return
  end

  -- check (and use, in this worker) before storing anything
  local ok, err, rc = core.apply(backends)
  if not ok then
    if rc == core.CONFIG_REJECTED or rc == core.INVALID_ARGUMENT then
      ngx.log(ngx.WARN, "dynamic-configuration: backends rejected: ", err)
      ngx.status = ngx.HTTP_BAD_REQUEST
    else
      -- library missing, or a bug caught by the core
      ngx.log(ngx.ERR, "dynamic-configuration: could not check backends: ", err)
      ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    end
    ngx.print(err)
    return
  end

  local success
  success, err = configuration_data:set("backends", backends)
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
  end

  ngx.status = ngx.HTTP_CREATED
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

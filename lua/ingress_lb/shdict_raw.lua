-- Read a string value of a lua_shared_dict into a buffer this worker keeps,
-- without making a Lua string of it.
--
-- dict:get() of a document of megabytes costs a worker, each time: a malloc'd
-- copy of the value (fresh pages: page faults), a Lua string made from it
-- (LuaJIT maps large strings on their own: page faults again, then an munmap
-- when the garbage collector frees it) and the free. The sync timer only hands
-- the document to the core, which reads bytes, so here the value is copied into
-- one buffer per worker, kept from one read to the next (its pages stay mapped),
-- and given to the core as a pointer and a length.
--
-- This uses the function resty.core's shdict binding calls,
-- ngx_http_lua_ffi_shdict_get, through the declarations resty.core made: the
-- same contract as dict:get(), with the value copied into the caller's buffer
-- when it fits, else into a malloc'd one the caller frees (adopted here as the
-- new buffer). Where that interface is missing (a stock ngx_lua without
-- resty.core, or other names), available() is false and callers use dict:get().

local ffi = require("ffi")

local C = ffi.C
local ffi_new = ffi.new
local ffi_gc = ffi.gc
local ffi_cast = ffi.cast
local type = type
local pcall = pcall
local tonumber = tonumber

local _M = {}

-- keep a buffer at most this many times larger than the last value read (a
-- document that shrank a lot gives its memory back)
local SHRINK_FACTOR = 4

-- lua-nginx-module's value types (ngx_http_lua_shdict.h)
local TYPE_NIL = 0
local TYPE_STRING = 4

local shdict_get, udata_to_zone

local function bind()
    -- resty.core.shdict declares the interface (and dict:get() uses it)
    local ok = pcall(require, "resty.core.shdict")
    if not ok then
        return false
    end
    ok = pcall(function()
        shdict_get = C.ngx_http_lua_ffi_shdict_get
        udata_to_zone = C.ngx_http_lua_ffi_shdict_udata_to_zone
    end)
    if not ok then
        shdict_get, udata_to_zone = nil, nil
        return false
    end
    -- malloc/free: resty.core declares free; malloc is declared here if needed
    pcall(ffi.cdef, "void *malloc(size_t size);")
    pcall(ffi.cdef, "void free(void *ptr);")
    return pcall(function() return C.malloc ~= nil and C.free ~= nil end)
end

local bound = ngx ~= nil and ngx.config ~= nil and ngx.config.subsystem == "http"
              and bind()

-- scratch out-parameters, allocated once
local value_type = bound and ffi_new("int[1]")
local str_value_buf = bound and ffi_new("unsigned char *[1]")
local value_len = bound and ffi_new("size_t[1]")
local num_value = bound and ffi_new("double[1]")
local user_flags = bound and ffi_new("int[1]")
local is_stale = bound and ffi_new("int[1]")
local errmsg = bound and ffi_new("char *[1]")

-- this worker's buffer (cdata owning malloc'd memory) and its capacity
local buf
local cap = 0

local function free_buf()
    if buf ~= nil then
        C.free(ffi_gc(buf, nil))
        buf = nil
        cap = 0
    end
end

-- take `p` (malloc'd, n bytes) as the buffer
local function adopt(p, n)
    free_buf()
    buf = ffi_gc(ffi_cast("unsigned char *", p), C.free)
    cap = n
end


-- true when read() can be used in this process
function _M.available()
    return bound and true or false
end


-- The string value of `key` in shared dict `dict` (an ngx.shared.DICT), copied
-- into this worker's buffer: pointer (cdata, valid until the next read() or
-- release()) and length; "", 0 for an empty string. nil when the key has no
-- value; nil, message when it holds another type or the interface is
-- unavailable.
function _M.read(dict, key)
    if not bound then
        return nil, "raw shared dict reads are not available"
    end
    if type(dict) ~= "table" or type(dict[1]) ~= "userdata" then
        return nil, "bad shared dict"
    end
    local zone = udata_to_zone(dict[1])
    if zone == nil then
        return nil, "bad shared dict"
    end

    str_value_buf[0] = buf
    value_len[0] = cap
    errmsg[0] = nil
    local rc = shdict_get(zone, key, #key, value_type, str_value_buf, value_len,
                          num_value, user_flags, 0, is_stale, errmsg)
    if rc ~= 0 then
        return nil, errmsg[0] ~= nil and ffi.string(errmsg[0]) or "shared dict read failed"
    end

    local typ = value_type[0]
    if typ == TYPE_NIL then
        return nil
    end
    if typ ~= TYPE_STRING then
        return nil, "not a string value"
    end

    local len = tonumber(value_len[0])
    if len == 0 then
        return "", 0
    end
    if str_value_buf[0] ~= buf then
        -- larger than the buffer: ngx_lua malloc'd one of the value's size
        adopt(str_value_buf[0], len)
    elseif len * SHRINK_FACTOR < cap and cap > 65536 then
        -- much smaller than the buffer: keep a copy of the right size
        local p = C.malloc(len)
        if p ~= nil then
            ffi.copy(p, buf, len)
            adopt(p, len)
        end
    end
    return buf, len
end


-- Give the buffer back (the next read() allocates again).
function _M.release()
    free_buf()
end


-- bytes held by this worker's buffer
function _M.capacity()
    return cap
end


return _M

-- Test helpers of the Test::Nginx suites t/lua-*.t and t/module-*.t: a client
-- for the ingress server over cosockets, backends documents as the controller
-- writes them, counting, and a resty.chash oracle. The suites only send requests
-- and count with them; every pick is the front end's under test.
--
-- Loaded in init_by_lua (t/IngressLbTest.pm writes that part of nginx.conf):
--
--     lua_package_path "$TEST_NGINX_ILB_TEST_LIB/?.lua;;";
--     init_by_lua_block {
--         T = require("ilb_test")
--         T.setup(front_port, { a = port, b = port, ... })
--     }
--
-- and used as the global T in the blocks.

local bit = require("bit")
local cjson = require("cjson")

local T = {}

-- T.FRONT: the ingress server's port; T.PORTS: endpoint name ("a", "dead", ...)
-- -> port; T.LETTER: "127.0.0.1:port" -> endpoint name
function T.setup(front, ports)
    T.FRONT = front
    T.PORTS = ports
    T.LETTER = {}
    for letter, port in pairs(T.PORTS) do
        T.LETTER["127.0.0.1:" .. port] = letter
    end
end

-- "127.0.0.1:port" of an endpoint, and the endpoint letter of such a text
function T.addr(which)
    return "127.0.0.1:" .. T.PORTS[which]
end
function T.letter(addr)
    return T.LETTER[addr] or addr
end

-- a request's body (and the end of its head) added to `req`, a list of strings
local function add_body(req, body)
    if body then
        req[#req + 1] = "Content-Length: " .. #body .. "\r\n\r\n"
        req[#req + 1] = body
    else
        req[#req + 1] = "\r\n"
    end
end

-- sends `req` (a list of strings) on a new connection to 127.0.0.1:`port` (over
-- TLS when `tls`: true for SNI "localhost", or the SNI, or "" for none) and reads
-- the response: its head and its body, or nil and an error text
local function exchange(port, tls, req, timeout)
    local sock = ngx.socket.tcp()
    sock:settimeout(timeout or 5000)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    if tls then
        local sni = tls == true and "localhost" or tls
        ok, err = sock:sslhandshake(false, sni ~= "" and sni or nil, false)
        if not ok then
            sock:close()
            return nil, "tls: " .. tostring(err)
        end
    end
    ok, err = sock:send(req)
    if not ok then
        sock:close()
        return nil, "send: " .. tostring(err)
    end
    local data
    data, err = sock:receive("*a")
    sock:close()
    if not data then
        return nil, "receive: " .. tostring(err)
    end
    local head, rest = data:match("^(.-)\r\n\r\n(.*)$")
    if not head then
        return nil, "malformed response: " .. data
    end
    return head, rest
end

-- one HTTP/1.0 exchange with the ingress server (or `port`); status, body
-- without its trailing newline, and the headers: lower-case name -> list
-- of values
function T.request(method, path, headers, body, port, tls)
    local req = { method, " ", path, " HTTP/1.0\r\n" }
    local has_host = false
    for k, v in pairs(headers or {}) do
        if k:lower() == "host" then
            has_host = true
        end
        if type(v) == "table" then
            for _, one in ipairs(v) do
                req[#req + 1] = k .. ": " .. one .. "\r\n"
            end
        else
            req[#req + 1] = k .. ": " .. v .. "\r\n"
        end
    end
    if not has_host then
        req[#req + 1] = "Host: localhost\r\n"
    end
    add_body(req, body)
    local head, rest = exchange(port or T.FRONT, tls, req)
    if not head then
        return nil, rest, {}
    end
    local hdrs = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        k = k:lower()
        hdrs[k] = hdrs[k] or {}
        table.insert(hdrs[k], v)
    end
    return tonumber(head:match("^HTTP/%d%.%d (%d+)")), (rest:gsub("\n$", "")), hdrs
end

-- GET `path` for backend `name` through the ingress server
function T.get(name, path, headers)
    local h = { ["X-Backend"] = name }
    for k, v in pairs(headers or {}) do
        h[k] = v
    end
    return T.request("GET", path or "/", h)
end

-- the first value of a response header, or nil
function T.header(hdrs, name)
    local list = hdrs[name:lower()]
    return list and list[1]
end

-- the endpoints an answered request tried, as letters: "dead,a"
function T.tried(hdrs)
    local out = {}
    for peer in (T.header(hdrs, "X-Upstream-Addr") or ""):gmatch("[^,%s]+") do
        out[#out + 1] = T.letter(peer)
    end
    return table.concat(out, ",")
end

function T.ep(which, address)
    return { address = address or "127.0.0.1", port = T.PORTS[which] or which }
end

-- one backend as the controller serialises it. opts:
--   alternatives = { name, ... }     alternativeBackends (its canaries)
--   policy = { weight = 20, header = "X-Canary", ... }
--                                    trafficShapingPolicy (and noServer: a canary)
--   hash_by, subset, subset_size     upstreamHashByConfig
--   load_balance                     "load-balance"
--   affinity = { mode = "balanced"|"persistent", cookie = {...} }
--                                    sessionAffinityConfig (name "cookie")
function T.backend(name, endpoints, opts)
    opts = opts or {}
    local eps = {}
    for i, ep in ipairs(endpoints) do
        eps[i] = { address = ep.address, port = tostring(ep.port),
                   target = { kind = "Pod", namespace = "default",
                              name = "pod-" .. i } }
    end
    local b = {
        name = name,
        service = { spec = { type = "ClusterIP", clusterIP = "10.96.0.10" } },
        port = 80,
        sslPassthrough = false,
        endpoints = eps,
        sessionAffinityConfig = { name = "", mode = "",
                                  cookieSessionAffinity = { name = "" } },
        upstreamHashByConfig = {
            ["upstream-hash-by"] = opts.hash_by,
            ["upstream-hash-by-subset"] = opts.subset,
            ["upstream-hash-by-subset-size"] = opts.subset_size or 3,
        },
        ["load-balance"] = opts.load_balance,
        noServer = false,
    }
    if opts.affinity then
        b.sessionAffinityConfig = {
            name = "cookie",
            mode = opts.affinity.mode or "balanced",
            cookieSessionAffinity = opts.affinity.cookie or { name = "INGRESSCOOKIE" },
        }
    end
    if opts.alternatives then
        b.alternativeBackends = opts.alternatives
    end
    if opts.policy then
        -- a canary, as the controller writes it
        b.noServer = true
        local p = opts.policy
        b.trafficShapingPolicy = {
            weight = p.weight or 0, weightTotal = p.weightTotal or 0,
            header = p.header or "", headerValue = p.headerValue or "",
            headerPattern = p.headerPattern or "", cookie = p.cookie or "",
        }
    end
    -- cjson writes an empty table as an object
    return (cjson.encode(b):gsub('"endpoints":{}', '"endpoints":[]'))
end

function T.doc(...)
    return "[" .. table.concat({ ... }, ",") .. "]"
end

-- POST /configuration/backends; "status [body]"
function T.post(doc)
    local status, body = T.request("POST", "/configuration/backends", nil, doc)
    return tostring(status) .. " [" .. tostring(body) .. "]"
end

-- the keys of a table, sorted
local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    return keys
end

-- "a=2 b=3" from a table of counts
function T.counts(counts)
    local keys = sorted_keys(counts)
    for i, k in ipairs(keys) do
        keys[i] = k .. "=" .. counts[k]
    end
    return table.concat(keys, " ")
end

-- GET backend `name` until every body in `wanted` ({ "slow", "slower" }) has
-- answered, at most `max` times: true when they all did, else what answered
function T.get_until_answered(name, wanted, max)
    local seen = {}
    for _ = 1, max do
        local status, body = T.get(name, "/")
        seen[status == 200 and body or ("status" .. tostring(status))] = true
        local all = true
        for _, w in ipairs(wanted) do
            all = all and seen[w] ~= nil
        end
        if all then
            return true
        end
    end
    return table.concat(sorted_keys(seen), ",")
end

-- `n` GETs of backend `name`, each answered 200 with an X-Ewma-Score within
-- (lo, hi): "n/n", or the count followed by the failures ("5/6 (502 nil)")
function T.scores_within(name, n, lo, hi)
    local fine, bad = 0, {}
    for _ = 1, n do
        local status, _, hdrs = T.get(name, "/")
        local score = tonumber(T.header(hdrs, "X-Ewma-Score"))
        if status == 200 and score and score > lo and score < hi then
            fine = fine + 1
        else
            bad[#bad + 1] = tostring(status) .. " " .. tostring(score)
        end
    end
    local out = fine .. "/" .. n
    if #bad > 0 then
        out = out .. " (" .. table.concat(bad, ", ") .. ")"
    end
    return out
end

-- The helpers of t/lua-core.t, t/lua-configuration.t, t/lua-round-robin.t and
-- t/lua-workers.t: responses as received, and backends with every field

-- one HTTP/1.0 exchange with the ingress server: status, the body as received
-- (trailing newline included) and the headers (lower-case name -> value, the
-- last one of a repeated header)
function T.request_raw(method, path, body, headers)
    local req = { method, " ", path, " HTTP/1.0\r\nHost: localhost\r\n" }
    for k, v in pairs(headers or {}) do
        req[#req + 1] = k .. ": " .. v .. "\r\n"
    end
    add_body(req, body)
    local head, rest = exchange(T.FRONT, false, req)
    if not head then
        return nil, rest
    end
    local hdrs = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        hdrs[k:lower()] = v
    end
    return tonumber(head:match("^HTTP/%d%.%d (%d+)")), rest, hdrs
end

-- one backend with every field the controller serialises (service metadata,
-- ports and status, trafficShapingPolicy, ...), as text
function T.full_backend(name, endpoints)
    local eps = {}
    for i, ep in ipairs(endpoints) do
        eps[i] = string.format('{"address":"%s","port":"%s",'
            .. '"target":{"kind":"Pod","namespace":"default","name":"pod-%d"}}',
            ep.address, tostring(ep.port), i)
    end
    return string.format('{"name":"%s","service":{"metadata":'
        .. '{"creationTimestamp":null},"spec":{"ports":[{"name":"http",'
        .. '"protocol":"TCP","port":80,"targetPort":8080}],'
        .. '"clusterIP":"10.96.0.10","type":"ClusterIP"},'
        .. '"status":{"loadBalancer":{}}},"port":80,"sslPassthrough":false,'
        .. '"endpoints":[%s],"sessionAffinityConfig":{"name":"","mode":"",'
        .. '"cookieSessionAffinity":{"name":""}},"upstreamHashByConfig":'
        .. '{"upstream-hash-by-subset-size":3},"noServer":false,'
        .. '"trafficShapingPolicy":{"weight":0,"weightTotal":0,"header":"",'
        .. '"headerValue":"","headerPattern":"","cookie":""}}',
        name, table.concat(eps, ","))
end

-- POST /configuration/backends with T.request_raw; "status [body as received]"
function T.post_raw(doc)
    local status, body = T.request_raw("POST", "/configuration/backends", doc)
    return tostring(status) .. " [" .. tostring(body) .. "]"
end

-- n requests for backend `name`: "a=2 b=2 status503=1" (response bodies,
-- or statuses), the number of distinct workers that answered, and the
-- number of requests in which one peer was tried twice
function T.stats(n, name)
    local counts, pids, repeated = {}, {}, 0
    for _ = 1, n do
        local status, body, hdrs = T.request_raw("GET", "/", nil, { ["X-Backend"] = name })
        local key
        if status == 200 then
            key = (body:gsub("\n$", ""))
        else
            key = "status" .. tostring(status or body)
        end
        counts[key] = (counts[key] or 0) + 1
        if hdrs then
            if hdrs["x-worker-pid"] then
                pids[hdrs["x-worker-pid"]] = true
            end
            local seen = {}
            for peer in (hdrs["x-upstream-addr"] or ""):gmatch("[^,%s]+") do
                if seen[peer] then
                    repeated = repeated + 1
                    break
                end
                seen[peer] = true
            end
        end
    end
    local workers = 0
    for _ in pairs(pids) do
        workers = workers + 1
    end
    return T.counts(counts), workers, repeated
end

function T.count(n, name)
    return (T.stats(n, name))
end

-- this worker's core: "generation=N free_ctx=N created_ctx=N"
function T.state()
    local _, body = T.request_raw("GET", "/ilb-state")
    return (tostring(body):gsub("\n$", ""))
end

-- Consistent hashing as lua-resty-balancer's resty.chash (v0.05, which stock
-- ingress-nginx uses): 160 points per node id; the first point's hash is
-- CRC32(id .. "\0\0\0\0"), each next one CRC32(id .. previous point's
-- hash as 4 bytes, little endian); a key goes to the first point whose hash
-- is not below CRC32(key), wrapping around to the first point. Checked
-- against the recorded reference decisions in t/lua-chash.t.
local band, bxor, rshift = bit.band, bit.bxor, bit.rshift
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) ~= 0 then
            c = bxor(rshift(c, 1), 0xEDB88320)
        else
            c = rshift(c, 1)
        end
    end
    crc_table[i] = c
end
local TWO32 = 4294967296
function T.chash_ring(ids)
    local points = {}
    for _, id in ipairs(ids) do
        -- the CRC32 state after the id, before the final inversion
        local base = bxor(ngx.crc32_short(id), 0xffffffff)
        local prev = 0
        for _ = 1, 160 do
            local c = base
            for k = 0, 3 do
                local byte = band(rshift(prev, 8 * k), 0xff)
                c = bxor(crc_table[band(bxor(c, byte), 0xff)], rshift(c, 8))
            end
            local h = bxor(c, 0xffffffff) % TWO32
            points[#points + 1] = { h, id }
            prev = h
        end
    end
    table.sort(points, function(x, y) return x[1] < y[1] end)
    return function(key)
        local h = ngx.crc32_short(key)
        if h > points[#points][1] then
            return points[1][2]
        end
        local lo, hi = 1, #points
        while lo < hi do
            local mid = math.floor((lo + hi) / 2)
            if points[mid][1] >= h then
                hi = mid
            else
                lo = mid + 1
            end
        end
        return points[lo][2]
    end
end

-- tests/data (shared/vectors/resty-chash-and-sticky.json), chash sets
-- "three" and "ten": case i has the key "/api/v<i % 7>/items/<i>", and
-- letter i of `choices` names the endpoint resty.chash chose for it ("a" =
-- the set's first endpoint)
T.VECTORS = {
    { name = "three", eps = { "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080" },
      choices = "abcbcbbcaaccbcccccacbabcabbcaacbcbbbccbbccbcacaccaacbaccaabcccbaccbaaaaabbbacaaaababacbbbcccabcccbbbbccbbaccbcccbcaccabcacbbccbbcabacbbabcaaccbbbaaccbbbbbbbccaabccbacbcbaabbbccacaabbccbccbbaababcccbccaacaaabccbaaabcbbcaababcaacccbcccabbccbabcccaabaaacbcabccbcacacbbaccbacbcabaaabbacbaabcbcccbacbbcbccbaaacabbabaaaabaacbcbacbccbbcbcbabbbacbbabacaaaacbbbcbaaccbbabbbaabcccabcaacabacaaabcabcbababcaacbccacabacbbcaccaccbaccbaababbcaabcccaccacbbabbcaacaaaabcbccaacbcacbacacabbacccbaaabbbbcaaccbbabbbbbcaca" },
    { name = "ten", eps = { "10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080",
                            "10.1.0.4:8080", "10.1.0.5:8080", "10.1.0.6:8080",
                            "10.1.0.7:8080", "10.1.0.8:8080", "10.1.0.9:8080",
                            "10.1.0.10:8080" },
      choices = "gaiahafehhhbdfcigcjhfaaifeeihfigeegcgedefgchffjhahggbdifgfcjbidecehegfgjefdaajjgfbicdgcfdaiebdfdhbedjahfjjffgfdaifdfibbbecddefidfacbijeagieeefdjdgficiddhhcjhieagbgfcfcgehecacdbaejfgadagdabdjajhbeeedidajgjcjegbjddbhgbddcgigdbgdgaiaiibhhdedjgfiaifedegbbjadffbfiagagigjjhbhaedbacbfidehbgjehfbbdahiccdabbijajidhhhcabajahhibffhfigadfjhggbbififffcgcdhhhaiabffgggbhgihchghiahahidfieiidbbiajfdjhfbbbcaiibbhcdigjhjhbgcgiddedaabjbdfjfaceiebhdjdeeedfafibhhbbebagfdbciegdfhahidjidhbigbgicabgabfgeaaeegjcgcgggebid" },
}
function T.vector_key(i)
    return "/api/v" .. (i % 7) .. "/items/" .. i
end

-- the subsets of `letters` (endpoint letters, in order) for subset size
-- `size`, and a function giving the subset (a set of letters) of a key
function T.subsets(letters, size)
    local n = #letters
    local sets = math.ceil(n / size)
    local names, members = {}, {}
    for s = 1, sets do
        names[s] = "set" .. s
        local m = {}
        for k = (s - 1) * size, s * size - 1 do
            m[letters[k % n + 1]] = true
        end
        members["set" .. s] = m
    end
    local find = T.chash_ring(names)
    return function(key)
        local set = find(key)
        return members[set], set
    end
end

-- "a b" from a set of letters
function T.set_text(set)
    return table.concat(sorted_keys(set), " ")
end

-- an ewma backend
function T.ewma(name, letters)
    local eps = {}
    for i, l in ipairs(letters) do
        eps[i] = T.ep(l)
    end
    return T.backend(name, eps, { load_balance = "ewma" })
end


-- TLS certificates (t/lua-certificates.t) ----------------------------------------

-- the contents of a file, or nil and a message
function T.read_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local data = f:read("*a")
    f:close()
    return data
end

-- tests/data/certs/<name>.pem (certificate, chain, key, as the controller sends
-- them); T.CERTS is that directory
function T.pem(name)
    return assert(T.read_file(T.CERTS .. "/" .. name .. ".pem"))
end

-- a servers document as the controller writes it: `servers` hostname -> uid
-- ("-1": none), `certificates` uid -> PEM
function T.servers_doc(servers, certificates)
    return cjson.encode({ servers = servers or {}, certificates = certificates or {} })
end

-- T.TLS_TIMEOUT: milliseconds the certificate helpers wait (a POST of thousands
-- of certificates takes seconds, and so does the first handshake with a worker
-- that applies it meanwhile)
T.TLS_TIMEOUT = 60000

-- one HTTP/1.0 exchange with 127.0.0.1:`port` waiting up to T.TLS_TIMEOUT:
-- status, body as received
local function slow_request(port, method, path, body)
    local req = { method, " ", path, " HTTP/1.0\r\nHost: localhost\r\n" }
    add_body(req, body)
    local head, rest = exchange(port, false, req, T.TLS_TIMEOUT)
    if not head then
        return nil, rest
    end
    return tonumber(head:match("^HTTP/%d%.%d (%d+)")), rest
end

-- POST /configuration/servers; "status [body]"
function T.post_servers(doc)
    local status, body = slow_request(T.FRONT, "POST", "/configuration/servers", doc)
    return tostring(status) .. " [" .. tostring(body) .. "]"
end

-- In a location whose lua_ssl_trusted_certificate is a single certificate (or
-- CA): a TLS handshake with 127.0.0.1:`port`, SNI `sni` (none when nil or ""),
-- verifying the certificate the server presents against that trust. Returns
--   "trusted <body>"  the server presented it and it matches `sni`: `path` (default
--                     "/") was then requested over the connection, <body> is the
--                     answer;
--   "trusted"         the server presented it (verified), for another name;
--   "untrusted"       the server presented another certificate;
--   "error: ..."      no handshake.
-- The error the last sslhandshake() of cosocket `sock` ended with (as
-- lua-resty-core words it), or nil
local ffi = require("ffi")
local hs_session = ffi.new("void *[1]")
local hs_errmsg = ffi.new("char *[1]")
local hs_code = ffi.new("int[1]")
local function handshake_error(sock)
    require("resty.core.socket")  -- declares the function
    local base = require("resty.core.base")
    hs_code[0] = 0
    hs_errmsg[0] = nil
    local rc = ffi.C.ngx_http_lua_ffi_socket_tcp_get_sslhandshake_result(
        base.get_request(), sock[1], hs_session, hs_errmsg, hs_code)
    if rc == base.FFI_OK then
        return nil
    end
    local msg = hs_errmsg[0] ~= nil and ffi.string(hs_errmsg[0]) or "unknown error"
    if hs_code[0] ~= 0 then
        return hs_code[0] .. ": " .. msg
    end
    return msg
end

local function tls_probe(port, sni, path)
    local sock = ngx.socket.tcp()
    sock:settimeout(T.TLS_TIMEOUT)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then
        return "error: connect: " .. tostring(err)
    end
    local done, session
    -- reused_session false, then the result fetched here: when the handshake
    -- completes at once, lua-resty-core 0.1.25 (Debian 12) reports success and
    -- then fails an assertion on the verification error (or, with false, says
    -- nothing of it)
    done, session, err = pcall(sock.sslhandshake, sock, false, sni, true)
    if not done then
        -- the caller tries again
        sock:close()
        return nil, session
    end
    if session then
        err = handshake_error(sock)
        session = err == nil
    end
    if not session then
        sock:close()
        err = tostring(err)
        -- lua-nginx-module checks the chain first ("<code>: <reason>"), then the
        -- name ("certificate host mismatch")
        if err:find("certificate host mismatch", 1, true) then
            return "trusted"
        end
        if err:find("^%d+: ") then
            return "untrusted"
        end
        return "error: " .. err
    end
    ok, err = sock:send("GET " .. (path or "/") .. " HTTP/1.0\r\nHost: "
                        .. (sni or "localhost") .. "\r\n\r\n")
    if not ok then
        sock:close()
        return "error: send: " .. tostring(err)
    end
    local data
    data, err = sock:receive("*a")
    sock:close()
    if not data then
        return "error: receive: " .. tostring(err)
    end
    return "trusted " .. (data:match("\r\n\r\n(.-)\n?$") or data)
end

function T.tls_probe(port, sni, path)
    if sni == "" then
        sni = nil
    end
    local result, err
    for _ = 1, 5 do
        result, err = tls_probe(port, sni, path)
        if result then
            return result
        end
    end
    return "error: " .. tostring(err)
end

-- The certificates (names of T.TLS_CANDIDATES) the TLS server T.PORTS.tls presents
-- for `sni` (nil or "": no SNI), asking each probe location /tls-probe/<name> of
-- the server at `probe_port` (default: this request's server): "exact",
-- "none", or "error: ..." (several names joined by "+").
function T.served(sni, probe_port)
    probe_port = probe_port or tonumber(ngx.var.server_port)
    local found = {}
    for _, name in ipairs(T.TLS_CANDIDATES) do
        local status, body = slow_request(probe_port, "GET", "/tls-probe/" .. name
                                          .. "?sni=" .. (sni or ""))
        body = tostring(body):gsub("\n$", "")
        if status ~= 200 then
            return "error: probe " .. name .. ": " .. tostring(status) .. " " .. tostring(body)
        end
        if body:find("^error") then
            return body
        end
        if body:find("^trusted") then
            found[#found + 1] = name
        end
    end
    if #found == 0 then
        return "none"
    end
    return table.concat(found, "+")
end

-- GET `path` over TLS from 127.0.0.1:T.PORTS.tls with SNI `sni` (not verified);
-- status, body (without its trailing newline)
function T.tls_get(sni, path, headers)
    local req = { "GET ", path or "/", " HTTP/1.0\r\n" }
    local has_host = false
    for k, v in pairs(headers or {}) do
        has_host = has_host or k:lower() == "host"
        req[#req + 1] = k .. ": " .. v .. "\r\n"
    end
    if not has_host then
        req[#req + 1] = "Host: " .. ((sni ~= nil and sni ~= "") and sni or "localhost") .. "\r\n"
    end
    req[#req + 1] = "\r\n"
    local head, body = exchange(T.PORTS.tls, sni or "", req, T.TLS_TIMEOUT)
    if not head then
        return nil, body
    end
    return tonumber(head:match("^HTTP/%d%.%d (%d+)")), (body:gsub("\n$", ""))
end

-- Canary routing: n requests for backend `name` with request headers `headers`
-- (a table; nil: none). "a/-=3 b/web-canary=7": the answering endpoint and the
-- $proxy_alternative_upstream_name the location saw ("-" when empty), counted.
function T.routes(n, name, headers)
    local counts = {}
    for _ = 1, n do
        local h = { ["X-Backend"] = name }
        for k, v in pairs(headers or {}) do
            h[k] = v
        end
        local status, body, hdrs = T.request("GET", "/", h)
        local key
        if status == 200 then
            local alt = T.header(hdrs, "X-Alternative")
            key = body .. "/" .. ((alt and alt ~= "") and alt or "-")
        else
            key = "status" .. tostring(status or body)
        end
        counts[key] = (counts[key] or 0) + 1
    end
    return T.counts(counts)
end

-- "ok" if `count` successes out of `n` are within `sds` standard deviations of
-- the binomial mean for probability `p`, else the count and the bounds
function T.binomial(count, n, p, sds)
    local mean, sd = n * p, math.sqrt(n * p * (1 - p))
    local lo, hi = mean - sds * sd, mean + sds * sd
    if count >= lo and count <= hi then
        return "ok"
    end
    return string.format("%d outside [%.0f, %.0f]", count, lo, hi)
end

-- Hostile configuration input (t/lua-hostile.t, t/module-hostile.t) ---------------

-- POST `body` to `path` of 127.0.0.1:`port` (default: the ingress server) in one
-- HTTP/1.0 exchange, waiting up to 60 s: status, body as received (nil and an
-- error text when the exchange failed)
function T.post_to(path, body, port)
    local req = { "POST ", path, " HTTP/1.0\r\nHost: localhost\r\n" }
    add_body(req, body)
    local head, rest = exchange(port or T.FRONT, false, req, 60000)
    if not head then
        return nil, rest
    end
    return tonumber(head:match("^HTTP/%d%.%d (%d+)")), rest
end

-- `text` as a Lua pattern matching it literally
function T.literal(text)
    return (text:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- nil when POSTing case = { label, document, pattern } to `path` (default
-- /configuration/backends) is answered 400 with a body matching `pattern`, else
-- "label: <status> [<body>]"
function T.refused(case, path, port)
    local label, doc, pattern = case[1], case[2], case[3]
    local status, body = T.post_to(path or "/configuration/backends", doc, port)
    if status == 400 and tostring(body):find(pattern) then
        return nil
    end
    return label .. ": " .. tostring(status) .. " [" .. tostring(body):sub(1, 300) .. "]"
end

-- POST every case, "all N refused" or the cases that were not
function T.refuse_all(cases, path, port)
    local out = {}
    for _, case in ipairs(cases) do
        out[#out + 1] = T.refused(case, path, port)
    end
    if #out == 0 then
        return "all " .. #cases .. " refused"
    end
    return table.concat(out, "\n")
end

-- the backend of the hostile documents: every field the model reads
local function victim()
    return {
        name = "victim",
        service = { metadata = { name = "svc" }, spec = { type = "ClusterIP" } },
        port = 80,
        sslPassthrough = false,
        endpoints = { { address = "127.0.0.1", port = tostring(T.PORTS.a) },
                      { address = "::1", port = T.PORTS.a } },
        sessionAffinityConfig = {
            name = "cookie", mode = "balanced",
            cookieSessionAffinity = {
                name = "route", expires = "3600", maxage = "60",
                locations = { ["example.com"] = { "/" } }, secure = true, path = "/",
                domain = "example.com", samesite = "Lax",
                conditional_samesite_none = true, change_on_failure = true,
            },
        },
        upstreamHashByConfig = { ["upstream-hash-by"] = "$request_uri",
                                 ["upstream-hash-by-subset"] = false,
                                 ["upstream-hash-by-subset-size"] = 3 },
        ["load-balance"] = "round_robin",
        noServer = false,
        trafficShapingPolicy = { weight = 0, weightTotal = 0, header = "X-Canary",
                                 headerValue = "yes", headerPattern = "^y", cookie = "c" },
        alternativeBackends = { "victim-canary" },
    }
end

-- [victim with `value` at `pointer` ("/a/0/b", 0-based indices), its canary]
local function victim_doc(pointer, value)
    local b = victim()
    if pointer then
        local parts = {}
        for part in pointer:gmatch("[^/]+") do
            parts[#parts + 1] = tonumber(part) and tonumber(part) + 1 or part
        end
        local t = b
        for i = 1, #parts - 1 do
            t = t[parts[i]]
        end
        t[parts[#parts]] = value
    end
    local canary = { name = "victim-canary", noServer = true,
                     endpoints = { { address = "127.0.0.1", port = tostring(T.PORTS.b) } } }
    return cjson.encode({ b, canary })
end
T.victim_doc = victim_doc

-- `a.b[0].c` from "/a/b/0/c"
local function field_text(pointer)
    local out = ""
    for part in pointer:gmatch("[^/]+") do
        if part:find("^%d+$") then
            out = out .. "[" .. part .. "]"
        else
            out = out .. (out == "" and "" or ".") .. part
        end
    end
    return out
end

-- The hostile backends documents, as { label, document, pattern of the 400 body }:
-- malformed and truncated JSON, a top-level object, a wrong type for every field
-- the model reads, duplicate names, bad alternatives, addresses and ports, deep
-- nesting, invalid UTF-8. (The empty body is answered differently by each front
-- end: not here.)
function T.hostile_backends()
    local cases = {}
    local function add(label, doc, pattern)
        cases[#cases + 1] = { label, doc, pattern }
    end
    local full = victim_doc()
    add("malformed", '[{"name":"x","endpoints":[', "^invalid JSON")
    add("malformed comma", '[{"name":"x",}]', "^invalid JSON")
    add("single quotes", "[{'name':'x'}]", "^invalid JSON")
    add("trailing text", full .. " x", "^invalid JSON")
    for _, n in ipairs({ 1, 2, 10, 100, 200, 300, 400, #full - 1 }) do
        add("truncated at " .. n, full:sub(1, n), "^invalid JSON")
    end
    add("whitespace only", " \n\t ", "^configuration is empty")
    for _, top in ipairs({ '{"name":"victim","endpoints":[]}', '"x"', "42", "null", "true" }) do
        add("top-level " .. top, top, "^invalid JSON: expected a JSON array of backend objects")
    end
    for _, item in ipairs({ "[1]", "[null]", '["x"]', "[[]]", '[["victim",null,80]]' }) do
        add("element " .. item, item, "^backend #0: field `%(backend%)`")
    end

    local strings = {
        "/service/spec/type", "/endpoints/0/address", "/sessionAffinityConfig/name",
        "/sessionAffinityConfig/mode", "/sessionAffinityConfig/cookieSessionAffinity/name",
        "/sessionAffinityConfig/cookieSessionAffinity/expires",
        "/sessionAffinityConfig/cookieSessionAffinity/maxage",
        "/sessionAffinityConfig/cookieSessionAffinity/path",
        "/sessionAffinityConfig/cookieSessionAffinity/domain",
        "/sessionAffinityConfig/cookieSessionAffinity/samesite",
        "/sessionAffinityConfig/cookieSessionAffinity/locations/example.com/0",
        "/upstreamHashByConfig/upstream-hash-by", "/load-balance",
        "/trafficShapingPolicy/header", "/trafficShapingPolicy/headerValue",
        "/trafficShapingPolicy/headerPattern", "/trafficShapingPolicy/cookie",
        "/alternativeBackends/0",
    }
    local bools = {
        "/sslPassthrough", "/noServer", "/sessionAffinityConfig/cookieSessionAffinity/secure",
        "/sessionAffinityConfig/cookieSessionAffinity/conditional_samesite_none",
        "/sessionAffinityConfig/cookieSessionAffinity/change_on_failure",
        "/upstreamHashByConfig/upstream-hash-by-subset",
    }
    local numbers = {
        "/upstreamHashByConfig/upstream-hash-by-subset-size", "/trafficShapingPolicy/weight",
        "/trafficShapingPolicy/weightTotal",
    }
    local arrays = { "/endpoints", "/alternativeBackends",
                     "/sessionAffinityConfig/cookieSessionAffinity/locations/example.com" }
    local objects = {
        "/service", "/service/spec", "/endpoints/0", "/sessionAffinityConfig",
        "/sessionAffinityConfig/cookieSessionAffinity",
        "/sessionAffinityConfig/cookieSessionAffinity/locations", "/upstreamHashByConfig",
        "/trafficShapingPolicy",
    }
    local function wrong(pointers, values)
        for _, p in ipairs(pointers) do
            for _, v in ipairs(values) do
                add(p .. " = " .. cjson.encode(v), victim_doc(p, v),
                    '^backend "victim": field `' .. T.literal(field_text(p)) .. "`: ")
            end
        end
    end
    wrong(strings, { 42, true, { 1 }, { x = 1 }, 1.5 })
    wrong(bools, { "true", 1, 0, { 1 }, { x = 1 } })
    wrong(numbers, { "20", -1, 1.5, 4294967296, true, { 1 }, { x = 1 } })
    wrong(arrays, { "x", { x = 1 }, 1, true })
    -- an array for an object is not read positionally
    wrong(objects, { "x", 1, true, { 1 }, { "a", "b" } })
    wrong({ "/port" }, { true, { 80 }, { x = 1 }, 1.5 })
    wrong({ "/endpoints/1/port" }, { true, { 80 }, { x = 1 }, 80.5 })
    for _, v in ipairs({ 42, true, { 1 }, { x = 1 } }) do
        add("/name = " .. cjson.encode(v), victim_doc("/name", v), "^backend #0: field `name`: ")
    end
    add('/name = ""', victim_doc("/name", ""), "^backend #0: field `name`: missing or empty")

    local function endpoint(address, port)
        return victim_doc("/endpoints/0", { address = address, port = port })
    end
    for _, port in ipairs({ "0", "65536", "abc", "", "-1", "+80", "0x50", 0, 65536, -1 }) do
        add("port " .. cjson.encode(port), endpoint("127.0.0.1", port),
            '^backend "victim": field `endpoints%[0%]%.port`: .* is not a port number in 1%-65535')
    end
    for _, address in ipairs({ "", " ", "example.com", "10.0.0.256", "10.0.0.1:80", "[::1",
                               "fe80::1%eth0", "::g" }) do
        add("address " .. cjson.encode(address), endpoint(address, "80"),
            '^backend "victim": field `endpoints%[0%]%.address`: .* is not an IPv4 or IPv6 address')
    end
    add("duplicate names", '[{"name":"x"},{"name":"y"},{"name":"x"}]',
        '^backend "x": duplicate backend name$')
    add("duplicate names with a NUL", '[{"name":"x\\u0000y"},{"name":"x\\u0000y"}]',
        '^backend "x\\0y": duplicate backend name$')
    add("missing alternative", '[{"name":"x","alternativeBackends":["ghost"]}]',
        '^backend "x": field `alternativeBackends%[0%]`: no backend named "ghost"$')
    add("own alternative", '[{"name":"x","alternativeBackends":["x"]}]',
        '^backend "x": field `alternativeBackends%[0%]`: a backend cannot be its own alternative$')
    add("nested 65 levels", '[{"name":"x","y":' .. ("["):rep(63) .. ("]"):rep(63) .. "}]",
        "^invalid JSON: nested deeper than 64 levels")
    add("nested a million levels", ("["):rep(1000000) .. ("]"):rep(1000000),
        "^invalid JSON: nested deeper than 64 levels")
    add("invalid UTF-8", '[{"name":"x\255y"}]', "^configuration is not valid UTF%-8 %(first bad byte at offset 11%)$")
    add("overlong UTF-8", '[{"name":"x","z":"\192\128"}]', "^configuration is not valid UTF%-8")
    add("lone surrogate", '[{"name":"\\ud800x"}]', "^invalid JSON")
    add("NUL byte", "\0[]", "^invalid JSON: expected a JSON array of backend objects, found '\\0'")
    return cases
end

-- The PEM of tests/data/certs/<name>.pem
function T.cert_pem(name)
    local dir = T.CERTS or (os.getenv("TEST_NGINX_ILB_LUA_DIR") or "") .. "/../tests/data/certs"
    return assert(T.read_file(dir .. "/" .. name .. ".pem"))
end

-- The hostile servers documents, as T.hostile_backends gives them
function T.hostile_servers()
    local cases = {}
    local function add(label, doc, pattern)
        cases[#cases + 1] = { label, doc, pattern }
    end
    local good = T.servers_doc({ ["exact.example.com"] = "e" }, { e = T.cert_pem("exact") })
    add("malformed", '{"certificates":{"e":', "^invalid servers JSON")
    add("malformed comma", '{"certificates":{},}', "^invalid servers JSON")
    add("trailing text", good .. " x", "^invalid servers JSON")
    for _, n in ipairs({ 1, 2, 50, 500, #good - 1 }) do
        add("truncated at " .. n, good:sub(1, n), "^invalid servers JSON")
    end
    add("whitespace only", " \n ", "^servers configuration is empty")
    for _, top in ipairs({ "[]", '"x"', "1", "null", "true" }) do
        add("top-level " .. top, top, "^invalid servers JSON")
    end
    for _, v in ipairs({ '"x"', "[]", "1", "true" }) do
        add("certificates " .. v, '{"certificates":' .. v .. ',"servers":{}}', "^invalid servers JSON")
        add("servers " .. v, '{"certificates":{},"servers":' .. v .. "}", "^invalid servers JSON")
    end
    for _, v in ipairs({ "[]", "1", "true", "{}" }) do
        add("certificate " .. v, '{"certificates":{"e":' .. v .. '},"servers":{"exact.example.com":"e"}}',
            '^certificate "e": expected the PEM text %(a string%)')
        add("uid " .. v, '{"certificates":{},"servers":{"exact.example.com":' .. v .. "}}",
            '^server "exact.example.com": expected a certificate uid %(a string%)')
    end
    local function pem_case(label, pem, pattern)
        add(label, T.servers_doc({ ["exact.example.com"] = "b" }, { b = pem }), '^certificate "b": ' .. pattern)
    end
    local exact = T.cert_pem("exact")
    pem_case("empty PEM", "", "no certificate in the PEM")
    pem_case("garbage PEM", "garbage", "no certificate in the PEM")
    pem_case("bad.pem", T.cert_pem("bad"), "")
    pem_case("key only", T.cert_pem("keyonly"), "no certificate in the PEM")
    pem_case("no key", exact:match("^(.-)%-%-%-%-%-BEGIN PRIVATE KEY"), "no private key in the PEM")
    pem_case("mismatched key", T.cert_pem("mismatched"), "the private key does not match")
    pem_case("corrupted base64", (exact:gsub("MII", "MIJ")), "")
    pem_case("cut PEM", exact:sub(1, 600), "")
    add("unknown uid", '{"certificates":{},"servers":{"a.example.com":"nope"}}',
        '^server "a.example.com": no certificate with uid "nope"')
    add("bad hostname", '{"certificates":{},"servers":{"bad_name.example.com":"x"}}',
        '^server "bad_name.example.com": not a valid DNS name')
    add("invalid UTF-8", '{"certificates":{"\255":"x"},"servers":{}}', "^invalid servers JSON")
    add("nested", '{"servers":' .. ("["):rep(100000) .. ("]"):rep(100000) .. "}", "^invalid servers JSON")
    return cases
end

-- `n` requests for backend `name`: "<body>=<count> ..." and the number of distinct
-- endpoints (X-Upstream-Addr) that answered
-- A large backends document as a list of backend texts (T.full_backend): `name`
-- on endpoint `which`, then n backends "default-svc-<i>-80" on endpoint "c";
-- about 600 bytes each, so 3000 make 1.8 MB.
function T.many_backends(name, which, n)
    local parts = { T.full_backend(name, { T.ep(which) }) }
    for i = 1, n do
        parts[#parts + 1] = T.full_backend("default-svc-" .. i .. "-80", { T.ep("c") })
    end
    return parts
end

-- POST T.many_backends(name, "b", 3000) with backend 1999 replaced by one whose
-- address is bad (structurally fine: found only when decoded, by the compilation
-- off the event loop); "bad: 400 naming backend and address" when refused so.
-- Returns that line and the parts (valid again).
function T.post_large_with_a_bad_address(name)
    local parts = T.many_backends(name, "b", 3000)
    parts[2000] = T.full_backend("default-svc-bad-80", { T.ep("c", "10.0.0.256") })
    local result = T.post_raw("[" .. table.concat(parts, ",") .. "]")
    parts[2000] = T.full_backend("default-svc-1999-80", { T.ep("c") })
    return (result:match("^400 %[.*default%-svc%-bad%-80.*10%.0%.0%.256.*%]$")
            and "bad: 400 naming backend and address" or ("bad: " .. result)), parts
end

-- POST `doc` to `path` on `port` (default: the ingress server) in pieces: the
-- request header with the first `first` bytes of the body, then the rest in `n`
-- pieces `delay` seconds apart, so that nginx reads the body in several reads.
-- "201 []" as T.post_raw, or what went wrong.
function T.post_in_pieces(path, doc, first, n, delay, port)
    local sock = ngx.socket.tcp()
    sock:settimeout(30000)
    local ok, err = sock:connect("127.0.0.1", port or T.FRONT)
    if not ok then
        return "connect: " .. tostring(err)
    end
    local pieces = { "POST " .. path .. " HTTP/1.0\r\nHost: localhost\r\nContent-Length: "
                     .. #doc .. "\r\n\r\n" .. doc:sub(1, first) }
    local step = math.ceil((#doc - first) / n)
    for at = first + 1, #doc, step do
        pieces[#pieces + 1] = doc:sub(at, at + step - 1)
    end
    for i, piece in ipairs(pieces) do
        if i > 1 then
            ngx.sleep(delay)
        end
        ok, err = sock:send(piece)
        if not ok then
            sock:close()
            return "send: " .. tostring(err)
        end
    end
    local data
    data, err = sock:receive("*a")
    sock:close()
    if not data then
        return "receive: " .. tostring(err)
    end
    local status, body = data:match("^HTTP/%d%.%d (%d+).-\r\n\r\n(.*)$")
    return tostring(status) .. " [" .. tostring(body) .. "]"
end

-- After a large POST: wait until every backend in `names` answers 200 to at
-- least 8 requests in a row (new connections) among which `workers` distinct
-- worker pids answered (the ingress server must listen with reuseport, so that
-- connections spread over the workers). The other workers compile a large
-- document off their event loops and serve the configuration in force meanwhile.
-- False after 30 s.
function T.await_served(names, workers)
    local deadline = ngx.now() + 30
    for _, name in ipairs(names) do
        local streak, pids, npids = 0, {}, 0
        while streak < 8 or npids < (workers or 1) do
            local status, _, hdrs = T.request_raw("GET", "/", nil, { ["X-Backend"] = name })
            local pid = hdrs and hdrs["x-worker-pid"]
            if status == 200 then
                streak = streak + 1
                if pid and not pids[pid] then
                    pids[pid] = true
                    npids = npids + 1
                end
            else
                streak, pids, npids = 0, {}, 0
            end
            if streak == 0 then
                ngx.update_time()
                if ngx.now() > deadline then
                    return false
                end
                ngx.sleep(0.02)
            end
        end
    end
    return true
end

function T.spread(n, name)
    local counts, addrs, distinct = {}, {}, 0
    for _ = 1, n do
        local status, body, hdrs = T.request_raw("GET", "/", nil, { ["X-Backend"] = name })
        local key = status == 200 and (body:gsub("\n$", "")) or ("status" .. tostring(status or body))
        counts[key] = (counts[key] or 0) + 1
        local addr = hdrs and hdrs["x-upstream-addr"]
        if addr and not addrs[addr] then
            addrs[addr] = true
            distinct = distinct + 1
        end
    end
    return T.counts(counts), distinct
end

return T

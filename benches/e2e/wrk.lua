-- wrk script of benches/e2e/run.py. wrk decides whether a script has request() and
-- delay() before init() sees the script's arguments, so the mode comes from the
-- environment:
--   E2E_WRK_URIS=N        cycle through N distinct URIs: <url path>1 .. <url path>N (chash)
--   E2E_WRK_COOKIES=FILE  cycle through the Cookie header values in FILE, one a line (sticky)
--   E2E_WRK_DELAY_MS=MS   wait MS before each request of a connection (a light, steady load)
-- Without them wrk sends its one precomputed request (round robin, ewma, canary).
-- done() prints one line "RESULT requests=... p99_us=..." that run.py parses.
local uris = tonumber(os.getenv("E2E_WRK_URIS") or "")
local cookies = os.getenv("E2E_WRK_COOKIES")
local delay_ms = tonumber(os.getenv("E2E_WRK_DELAY_MS") or "")
if cookies == "" then cookies = nil end

if uris or cookies then
    local reqs, n, i = {}, 0, 0
    function init(args)
        if uris then
            for k = 1, uris do reqs[k] = wrk.format(nil, wrk.path .. k) end
        else
            for line in io.lines(cookies) do
                if line ~= "" then
                    local h = {}
                    for k, v in pairs(wrk.headers) do h[k] = v end
                    h["Cookie"] = line
                    reqs[#reqs + 1] = wrk.format(nil, nil, h)
                end
            end
        end
        n = #reqs
        assert(n > 0, "wrk.lua: no requests to send")
        i = math.random(n) - 1
    end
    function request()
        i = i % n + 1
        return reqs[i]
    end
end

if delay_ms then
    function delay() return delay_ms end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d"
        .. " p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

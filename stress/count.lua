-- wrk script for scripts/stress.sh: counts responses by status and checks the
-- X-Ewma-Score header (when the first script argument is "ewma": every response
-- must carry a finite number). done() prints one "RESULT k=v ..." line.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    codes = {}
    ok, bad_score, scored = 0, 0, 0
    check_score = args[1] == "ewma"
end

function response(status, headers, body)
    codes[status] = (codes[status] or 0) + 1
    if status >= 200 and status < 300 then ok = ok + 1 end
    if check_score then
        scored = scored + 1
        local v = tonumber(headers["X-Ewma-Score"] or "")
        if v == nil or v ~= v or v == math.huge or v == -math.huge then
            bad_score = bad_score + 1
        end
    end
end

function done(summary, latency, requests)
    local agg, ok_n, bad, n = {}, 0, 0, 0
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("codes") or {}) do agg[k] = (agg[k] or 0) + v end
        ok_n = ok_n + (t:get("ok") or 0)
        bad = bad + (t:get("bad_score") or 0)
        n = n + (t:get("scored") or 0)
    end
    local parts = {}
    for k, v in pairs(agg) do table.insert(parts, k .. ":" .. v) end
    table.sort(parts)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d ok=%d non2xx=%d connect=%d read=%d write=%d timeout=%d badscore=%d scored=%d codes=%s\n",
        summary.requests, ok_n, summary.requests - ok_n, e.connect, e.read, e.write, e.timeout,
        bad, n, table.concat(parts, ",")))
end

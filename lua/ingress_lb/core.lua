-- ingress_lb.core: LuaJIT FFI binding of the ingress-lb core (libingress_lb.so).
--
-- The C contract is include/ingress_lb.h; the declarations below are the block
-- between its "begin cdef" and "end cdef" markers, copied byte for byte (a cargo
-- test compares the two). Change the header first, then paste the block again.
--
-- Locating the library (first match wins):
--   1. require("ingress_lb.core").configure{ library = "/abs/path/libingress_lb.so" }
--      called before the first use (typically in init_by_lua, before requiring
--      "configuration" and "balancer");
--   2. the environment variable INGRESS_LB_LIBRARY (nginx drops the environment
--      of its workers unless nginx.conf has "env INGRESS_LB_LIBRARY;");
--   3. package.searchpath("libingress_lb", package.cpath), i.e. a libingress_lb.so
--      in a directory listed in lua_package_cpath;
--   4. ffi.load("ingress_lb"), i.e. the dynamic linker's search path.
-- The library is loaded on first use (or by an explicit core.load(), which lets
-- init_by_lua fail fast); loading it in the master is fine, the workers inherit it.
--
-- Per worker process: one ilb_core (created lazily, released when the Lua VM is
-- closed), one error buffer, one size_t/uint64_t out cell, one ilb_request, one
-- ilb_peer, and a free list of ilb_pick_ctx so that steady-state requests allocate
-- no cdata. All of these are module locals: after fork() each worker has its own
-- copy.
--
-- Backend descriptors: backend(name) answers what a request for that backend
-- needs (ilb_core_backend_info, ilb_core_has_backend, ilb_core_backend_hash_by)
-- from a per-worker cache that apply() empties whenever the core publishes a new
-- configuration, so the request path makes no FFI call but the pick.
--
-- ewma statistics: init_stats() maps them (ilb_stats_new) in memory shared by every
-- process forked afterwards; call it in the master (balancer.lua does when it is
-- required in init_by_lua). Each worker's core then keeps its ewma statistics there
-- (ilb_core_use_stats), so all workers balance on the same response times.

local ffi = require("ffi")

local ffi_new = ffi.new
local ffi_gc = ffi.gc
local ffi_string = ffi.string
local ffi_typeof = ffi.typeof
local type = type
local tonumber = tonumber
local tostring = tostring
local pcall = pcall
local error = error
local os_getenv = os.getenv
local package = package
local math_floor = math.floor

local C_DECLARATIONS = [=[
/* -- begin cdef (this block is also bound by lua/ingress_lb/core.lua) -- */

typedef enum ilb_result {
    ILB_OK = 0,
    ILB_NULL_ARGUMENT = 1,      /* a required pointer was NULL */
    ILB_INVALID_ARGUMENT = 2,   /* a length above PTRDIFF_MAX, a misaligned or
                                   overflowing ilb_header array, too large a document */
    ILB_CONFIG_REJECTED = 3,    /* the configuration is invalid; see error text */
    ILB_UNKNOWN_BACKEND = 4,    /* no backend of that name in the configuration */
    ILB_NO_ENDPOINTS = 5,       /* the backend exists but has no endpoint */
    ILB_PANIC = 6,              /* internal bug caught at the boundary */
    ILB_NO_CERTIFICATE = 7      /* no certificate for that name or id */
} ilb_result;

/* Opaque. */
typedef struct ilb_core ilb_core;

/* Balancing algorithm of a backend (ingress-nginx's names in comments). */
typedef enum ilb_algorithm {
    ILB_ROUND_ROBIN = 0,        /* round_robin */
    ILB_EWMA = 1,               /* ewma */
    ILB_CHASH = 2,              /* chash */
    ILB_CHASHSUBSET = 3,        /* chashsubset */
    ILB_STICKY_BALANCED = 4,    /* sticky_balanced */
    ILB_STICKY_PERSISTENT = 5   /* sticky_persistent */
} ilb_algorithm;

/* Bits of ilb_backend_info.needs: what the front end must provide. */
enum {
    ILB_NEEDS_HASH_KEY = 1,     /* ilb_request.hash_key: upstream-hash-by, evaluated */
    ILB_NEEDS_COOKIE = 2,       /* ilb_request cookie, host, location_path, user_agent,
                                   https; apply ilb_peer.set_cookie */
    ILB_NEEDS_TIMING = 4,       /* ilb_core_observe() after the response */
    ILB_NEEDS_ROUTE = 8         /* the backend has alternatives: ilb_core_route()
                                   first, then pick in the backend it names */
};

typedef struct ilb_backend_info {
    uint32_t algorithm;         /* ilb_algorithm */
    uint32_t needs;             /* ILB_NEEDS_* bits */
} ilb_backend_info;

/* Request data for a pick. Pointers are borrowed for the call only; (NULL, 0) is an
 * empty value. Fill what ilb_backend_info.needs asks for; the rest may stay empty. */
typedef struct ilb_request {
    const char *hash_key;       /* the evaluated upstream-hash-by expression */
    size_t hash_key_len;
    const char *cookie;         /* the Cookie request header as received */
    size_t cookie_len;
    const char *host;           /* $host */
    size_t host_len;
    const char *location_path;  /* the ingress location path */
    size_t location_path_len;
    const char *user_agent;     /* the User-Agent request header */
    size_t user_agent_len;
    double now;                 /* seconds since the Unix epoch (ngx.now()) */
    uint32_t https;             /* 1 if the request came over TLS */
    uint32_t reserved;
} ilb_request;

/* Per-request pick state. Initialise with ilb_pick_ctx_init() before the first pick
 * of a request and pass the same struct to every retry of that request. Fields are
 * private to the core. */
typedef struct ilb_pick_ctx {
    uint32_t tried_len;
    uint32_t reserved;
    uint64_t tried[32];         /* ILB_MAX_TRIED */
} ilb_pick_ctx;

/* A picked endpoint. */
typedef struct ilb_peer {
    char addr[64];              /* "10.0.0.1:8080" or "[fd00::1]:8080", NUL-terminated */
    uint32_t addr_len;          /* bytes in addr before the NUL */
    uint16_t port;              /* port, host byte order */
    uint8_t family;             /* 4 or 6 */
    uint8_t reserved;
    uint32_t index;             /* position of the endpoint in the backend's list */
    double score;               /* ewma score of the endpoint ($balancer_ewma_score), else 0 */
    uint32_t set_cookie_len;    /* 0: no cookie to set */
    char set_cookie[1024];      /* ILB_COOKIE_MAX: Set-Cookie header value, NUL-terminated */
} ilb_peer;

/* Library version, e.g. "0.1.0". Static string. */
const char *ilb_version(void);

/* ABI version of the loaded library: a binding compiled for ILB_ABI_VERSION must
 * refuse a library that answers anything else. */
uint32_t ilb_abi_version(void);

/* Name of a result code, e.g. "ILB_CONFIG_REJECTED". Static string, never NULL. */
const char *ilb_result_name(ilb_result result);

/* Create an empty core (no backends). On ILB_OK *core_out owns the new core. */
ilb_result ilb_core_new(ilb_core **core_out);

/* Release a core created by ilb_core_new(). NULL is ignored. The core must not be
 * used by any thread after this call. */
void ilb_core_free(ilb_core *core);

/* Parse, validate and compile the controller's backends JSON array (the body of
 * POST /configuration/backends) and publish it atomically. A document identical to
 * the one in force is recognised without decoding it; backends whose JSON did not
 * change are reused. On failure nothing changes: ILB_CONFIG_REJECTED with a message
 * naming the backend and field, or ILB_INVALID_ARGUMENT if json_len exceeds
 * ILB_MAX_CONFIG_BYTES. */
ilb_result ilb_core_apply_backends(ilb_core *core, const uint8_t *json, size_t json_len,
                                   char *err, size_t err_cap, size_t *err_len);

/* Where a configuration given to ilb_core_apply_backends_or_start() is. */
typedef enum ilb_apply_state {
    ILB_APPLY_IDLE = 0,         /* collect: nothing was started (or it was collected) */
    ILB_APPLY_APPLIED = 1,      /* the document is in force now */
    ILB_APPLY_STARTED = 2,      /* compiling on a thread of the core's own: collect
                                 * it with ilb_core_collect_backends() */
    ILB_APPLY_BUSY = 3,         /* a compilation started earlier still runs: nothing
                                 * done; collect it, then call again */
    ILB_APPLY_RUNNING = 4,      /* collect: still compiling; the configuration in
                                 * force keeps serving */
    ILB_APPLY_SUPERSEDED = 5    /* collect: compiled, but another configuration was
                                 * applied meanwhile, so it was dropped: apply again */
} ilb_apply_state;

/* ilb_core_apply_backends() for an event loop: if the backends that changed (what
 * lies between the bytes json shares with the document in force at its start and
 * at its end) are at most inline_bytes of JSON, the document is applied here
 * (*state_out = ILB_APPLY_APPLIED; building costs about 30 ns per byte). Otherwise
 * the core copies json and compiles it on a thread of its own
 * (*state_out = ILB_APPLY_STARTED) and the configuration in force keeps serving;
 * ilb_core_collect_backends() publishes the result. The caller's buffer may be
 * released as soon as this returns. A document rejected here (too large, a small one
 * that is invalid) changes nothing: ILB_CONFIG_REJECTED / ILB_INVALID_ARGUMENT with
 * err as for ilb_core_apply_backends(), *state_out untouched. One compilation at a
 * time: while one runs, *state_out = ILB_APPLY_BUSY and nothing is done.
 * ilb_core_free() may be called while a compilation runs (its thread finishes on its
 * own and frees its result). */
ilb_result ilb_core_apply_backends_or_start(ilb_core *core, const uint8_t *json,
                                            size_t json_len, size_t inline_bytes,
                                            ilb_apply_state *state_out, char *err,
                                            size_t err_cap, size_t *err_len);

/* Publish a compilation started by ilb_core_apply_backends_or_start() if it is
 * done. *state_out: ILB_APPLY_IDLE, ILB_APPLY_RUNNING, ILB_APPLY_APPLIED or
 * ILB_APPLY_SUPERSEDED. A document rejected by the compilation: ILB_CONFIG_REJECTED
 * with the message in err (as for ilb_core_apply_backends()), *state_out untouched,
 * the configuration in force kept. Cheap (a lock and a flag) unless it publishes;
 * the configuration replaced is freed on another thread. */
ilb_result ilb_core_collect_backends(ilb_core *core, ilb_apply_state *state_out,
                                     char *err, size_t err_cap, size_t *err_len);

/* Same checks as ilb_core_apply_backends() without publishing anything. */
ilb_result ilb_core_validate_backends(const ilb_core *core, const uint8_t *json,
                                      size_t json_len, char *err, size_t err_cap,
                                      size_t *err_len);

/* Warnings about the configuration in force (an unknown load-balance name, a
 * skipped ExternalName endpoint, a full ewma statistics table), one per line,
 * written into buf truncated to buf_cap - 1 bytes and NUL-terminated; *len_out gets
 * the bytes written. Empty text when there is nothing to say. Not for the request
 * path: it allocates. */
ilb_result ilb_core_warnings(const ilb_core *core, char *buf, size_t buf_cap, size_t *len_out);

/* Number of configurations published so far (0 before the first). */
ilb_result ilb_core_generation(const ilb_core *core, uint64_t *generation_out);

/* ILB_OK if the configuration in force has a backend of that name, else
 * ILB_UNKNOWN_BACKEND. */
ilb_result ilb_core_has_backend(const ilb_core *core, const char *name, size_t name_len);

/* Reset a pick context for a new request. NULL is ignored. */
void ilb_pick_ctx_init(ilb_pick_ctx *ctx);

/* What the front end must provide for picks on backend `name` (see ilb_request). */
ilb_result ilb_core_backend_info(const ilb_core *core, const char *name, size_t name_len,
                                 ilb_backend_info *info_out);

/* Copy backend `name`'s upstream-hash-by expression into buf (truncated to
 * buf_cap - 1 bytes, NUL-terminated; *len_out gets its full length, so a caller can
 * retry with a larger buffer). For front ends that evaluate it themselves. */
ilb_result ilb_core_backend_hash_by(const ilb_core *core, const char *name, size_t name_len,
                                    char *buf, size_t buf_cap, size_t *len_out);

/* Canary routing (the README's "Canary routing" section has the rules). */

/* One request header: its name as received or as nginx's $http_<name> spells it
 * (names are compared case-insensitively, '-' and '_' alike), and its value.
 * Borrowed for the call only; (NULL, 0) is empty. */
typedef struct ilb_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} ilb_header;

/* Copy the names of backend `name`'s alternative backends into buf, each followed
 * by '\n', in the order ilb_core_route() numbers them (each name once). Truncation
 * and *len_out as ilb_core_backend_hash_by(). Empty for a backend without
 * alternatives. */
ilb_result ilb_core_backend_alternatives(const ilb_core *core, const char *name, size_t name_len,
                                         char *buf, size_t buf_cap, size_t *len_out);

/* Copy the request header names the canary decisions of backend `name` read, each
 * followed by '\n', spelled as nginx's $http_<name> variables (lower case, '_' for
 * '-'): the headers a front end passes to ilb_core_route(). Truncation and *len_out
 * as ilb_core_backend_hash_by(). */
ilb_result ilb_core_backend_route_headers(const ilb_core *core, const char *name, size_t name_len,
                                          char *buf, size_t buf_cap, size_t *len_out);

/* Decide whether a request for backend `name` goes to one of its alternatives:
 * *alternative_out = 0 for `name` itself, i >= 1 for the i-th line of
 * ilb_core_backend_alternatives() (same configuration generation). `cookie` is the
 * request's Cookie header as received; `headers` (NULL when headers_len is 0) holds
 * at least the headers ilb_core_backend_route_headers() lists that the request has
 * (absent headers are simply left out; other headers are ignored). Decide once per
 * request and keep the answer for its retries. Never allocates.
 * ILB_UNKNOWN_BACKEND if there is no backend `name`. */
ilb_result ilb_core_route(const ilb_core *core, const char *name, size_t name_len,
                          const char *cookie, size_t cookie_len,
                          const ilb_header *headers, size_t headers_len,
                          uint32_t *alternative_out);

/* Pick an endpoint of backend `name` for the request `req` (NULL: no request data)
 * whose state is `ctx`, and remember it in ctx. A peer already tried in this request
 * is not picked again while an untried one remains. Never allocates. */
ilb_result ilb_core_pick(const ilb_core *core, const char *name, size_t name_len,
                         const ilb_request *req, ilb_pick_ctx *ctx, ilb_peer *peer_out);

/* Report how the attempts of a finished request to backend `name` went, from
 * nginx's variables as they are: $upstream_addr, $upstream_status,
 * $upstream_connect_time, $upstream_response_time (one entry per attempt, ", "
 * between attempts, " : " between internal redirects); `now` as in ilb_request.
 * Feeds the ewma statistics; a no-op for other algorithms. */
ilb_result ilb_core_observe(const ilb_core *core, const char *name, size_t name_len,
                            const char *upstream_addr, size_t upstream_addr_len,
                            const char *upstream_status, size_t upstream_status_len,
                            const char *connect_time, size_t connect_time_len,
                            const char *response_time, size_t response_time_len,
                            double now);

/* Opaque: ewma statistics in memory shared by processes. */
typedef struct ilb_stats ilb_stats;

/* Create statistics for up to `slots` endpoints in anonymous shared memory
 * (mmap MAP_SHARED): call before the nginx workers fork (init_by_lua, in the master);
 * the workers inherit it. */
ilb_result ilb_stats_new(uint32_t slots, ilb_stats **stats_out);

/* Release statistics created by ilb_stats_new (cores using them keep their own
 * reference: the order of the releases does not matter). */
void ilb_stats_free(ilb_stats *stats);

/* Keep this core's ewma statistics in `stats` (shared with the other processes)
 * instead of process-local memory. The core keeps its own reference: `stats` may be
 * released before the core. */
ilb_result ilb_core_use_stats(ilb_core *core, ilb_stats *stats);

/* State on disk */

/* The last accepted backends and servers documents, kept in a directory so that a
 * restarted nginx serves at once, before the controller posts again. `kind` is
 * "backends" or "servers" (else ILB_INVALID_ARGUMENT); the file is dir/<kind>.json,
 * the document exactly as accepted. Errors (ILB_CONFIG_REJECTED, with text naming the
 * file and why) are the operating system's, or, for ilb_state_load(), a document the
 * core rejects. Neither function needs a core; neither allocates anything the caller
 * must free. */

/* Save `doc` (an accepted document; never an empty one: ILB_INVALID_ARGUMENT)
 * atomically: a temporary file in `dir` (mode 0600: servers documents hold private
 * keys), fsync, rename over dir/<kind>.json, fsync of the directory; `dir` is created
 * (mode 0700) when missing. Processes may save at once: the last rename wins, so save
 * what the shared store holds and save again if its generation moved meanwhile. */
ilb_result ilb_state_save(const char *dir, size_t dir_len, const char *kind, size_t kind_len,
                          const uint8_t *doc, size_t doc_len, char *err, size_t err_cap,
                          size_t *err_len);

/* Read dir/<kind>.json back. ILB_OK with *len = 0: nothing saved (no file, no
 * directory). A file larger than cap (ask with buf NULL and cap 0): nothing copied,
 * ILB_INVALID_ARGUMENT, *len = its size. Otherwise the core checks the document as it
 * would check a POST of it (nothing is published): ILB_OK, the document in buf and its
 * length in *len; or ILB_CONFIG_REJECTED (a corrupt, empty, unreadable or rejected
 * file: report it and start without it). len is required. */
ilb_result ilb_state_load(const char *dir, size_t dir_len, const char *kind, size_t kind_len,
                          uint8_t *buf, size_t cap, size_t *len, char *err, size_t err_cap,
                          size_t *err_len);

/* Certificates (SNI) */

/* The certificate store is separate from the backends: its own document, its own
 * generation, published the same way (atomically; a lookup sees the old or the new
 * store, never a mix). A certificate's id identifies its content (uid and PEM): it
 * changes when the PEM of a uid changes, is the same in every worker of the same
 * build, is never 0 and is below 2^53 (a Lua number holds it exactly). Nothing here
 * hands out a pointer into the store: ilb_core_certificate_pem() copies. */

/* Parse, validate and publish the controller's servers document (the body of
 * POST /configuration/servers): {"certificates": {"<uid>": "<PEM chain + key>"},
 * "servers": {"<hostname>": "<uid>" or "-1"}}. The document is the whole truth: a
 * hostname absent or mapped to "-1" is no longer served; "_" carries the default
 * certificate; "*.example.com" is a one-label wildcard. Each certificate a hostname
 * refers to is parsed once (all certificates of the PEM, the private key, which must
 * match the first certificate); one whose uid and PEM did not change is reused as
 * parsed; one no hostname refers to is dropped unparsed. A document identical to the
 * one in force is recognised without decoding it. On failure nothing changes:
 * ILB_CONFIG_REJECTED with a message naming the uid or hostname, or
 * ILB_INVALID_ARGUMENT if json_len exceeds ILB_MAX_CONFIG_BYTES. */
ilb_result ilb_core_apply_servers(ilb_core *core, const uint8_t *json, size_t json_len,
                                  char *err, size_t err_cap, size_t *err_len);

/* Publish a servers document that ilb_core_apply_servers() already accepted (in this
 * process or another: a worker applying the copy the receiving worker stored). The
 * same checks except the certificates' PEM, which is parsed only when its OpenSSL
 * objects are first needed (never for ilb_core_certificate_lookup() or
 * ilb_core_certificate_pem()): thousands of new certificates take milliseconds, not
 * seconds. Same parameters and results as ilb_core_apply_servers(). */
ilb_result ilb_core_apply_accepted_servers(ilb_core *core, const uint8_t *json, size_t json_len,
                                           char *err, size_t err_cap, size_t *err_len);

/* Same checks as ilb_core_apply_servers() without publishing anything. */
ilb_result ilb_core_validate_servers(const ilb_core *core, const uint8_t *json,
                                     size_t json_len, char *err, size_t err_cap,
                                     size_t *err_len);

/* Number of servers documents published so far (0 before the first, or for NULL). */
uint64_t ilb_core_servers_generation(const ilb_core *core);

/* The id of the certificate for a TLS handshake whose SNI is (sni, sni_len); (NULL, 0):
 * the client sent no SNI. The name is lower-cased and one trailing dot stripped; then
 * the exact hostname, else the wildcard of its first label (a.b.example.com ->
 * *.b.example.com, never *.example.com), else "_". ILB_NO_CERTIFICATE when nothing
 * matches (no "_" either). Never allocates; O(1) in the number of hostnames. */
ilb_result ilb_core_certificate_lookup(const ilb_core *core, const char *sni, size_t sni_len,
                                       uint64_t *id);

/* ILB_OK if `host` has a certificate listed for itself (its exact name, or the
 * wildcard of its first label; a name listed with the default's certificate counts,
 * the default `_` alone does not), else ILB_NO_CERTIFICATE: ingress-nginx's
 * certificate.configured_for_current_request() for $host. Never allocates. */
ilb_result ilb_core_hostname_has_certificate(const ilb_core *core, const char *host,
                                             size_t host_len);

/* Copy the PEM (chain and key, exactly as POSTed) of the certificate in force with
 * that id into buf, NUL-terminated; on ILB_OK *len gets its length (before the NUL).
 * When buf is too small (cap < length + 1; ask with buf NULL and cap 0 to get the
 * size) nothing is copied, the result is ILB_INVALID_ARGUMENT and *len gets the size
 * buf needs (length + 1). ILB_NO_CERTIFICATE when no certificate in force has that
 * id (a newer servers document replaced it: look it up again). len is required. */
ilb_result ilb_core_certificate_pem(const ilb_core *core, uint64_t id, char *buf, size_t cap,
                                    size_t *len);

/* -- end cdef -- */
]=]

-- ffi.cdef is global to the LuaJIT state: declare once even if this module is
-- loaded again (package.loaded cleared by a test).
if not pcall(ffi_typeof, "ilb_peer") then
    ffi.cdef(C_DECLARATIONS)
end

-- for releasing the ewma statistics only in the process that created them
pcall(ffi.cdef, "int getpid(void);")

local bit = require("bit")
local band = bit.band

local _M = {
    _VERSION = "0.2.0",

    -- ilb_result codes
    OK = 0,
    NULL_ARGUMENT = 1,
    INVALID_ARGUMENT = 2,
    CONFIG_REJECTED = 3,
    UNKNOWN_BACKEND = 4,
    NO_ENDPOINTS = 5,
    PANIC = 6,

    -- ilb_algorithm
    ROUND_ROBIN = 0,
    EWMA = 1,
    CHASH = 2,
    CHASHSUBSET = 3,
    STICKY_BALANCED = 4,
    STICKY_PERSISTENT = 5,

    -- ilb_backend_info.needs bits
    NEEDS_HASH_KEY = 1,
    NEEDS_COOKIE = 2,
    NEEDS_TIMING = 4,
    NEEDS_ROUTE = 8,

    -- ewma statistics slots (endpoints) when configure{ ewma_slots } is not given
    DEFAULT_EWMA_SLOTS = 65536,
}

local ILB_OK = 0
local ILB_UNKNOWN_BACKEND = 4
local ILB_NO_ENDPOINTS = 5

local ALGORITHM_NAMES = {
    [0] = "round_robin", "ewma", "chash", "chashsubset", "sticky_balanced",
    "sticky_persistent",
}

local RESULT_NAMES = {
    [0] = "ILB_OK",
    [1] = "ILB_NULL_ARGUMENT",
    [2] = "ILB_INVALID_ARGUMENT",
    [3] = "ILB_CONFIG_REJECTED",
    [4] = "ILB_UNKNOWN_BACKEND",
    [5] = "ILB_NO_ENDPOINTS",
    [6] = "ILB_PANIC",
}

-- ILB_ABI_VERSION of the header the declarations above come from
local ABI_VERSION = 1

local ERR_CAP = 4096
local MAX_FREE_CTX = 4096
local MAX_EWMA_SLOTS = 4294967295
-- backend descriptors cached per configuration; names come from nginx.conf
-- ($proxy_upstream_name), so this bound is only a guard against unbounded names
local MAX_DESCRIPTORS = 4096

local pick_ctx_type = ffi_typeof("ilb_pick_ctx")

-- scratch cdata, allocated once (per worker after fork)
local err_buf = ffi_new("char[?]", ERR_CAP)
local size_out = ffi_new("size_t[1]")
local u64_out = ffi_new("uint64_t[1]")
local core_out = ffi_new("ilb_core *[1]")
local stats_out = ffi_new("ilb_stats *[1]")
local info_out = ffi_new("ilb_backend_info")
local u32_out = ffi_new("uint32_t[1]")
local apply_state_out = ffi_new("ilb_apply_state[1]")
local req = ffi_new("ilb_request")
local peer = ffi_new("ilb_peer")

local settings = { library = nil, ewma_slots = nil, state_dir = nil }

-- set by load()
local lib
local lib_path
local C_version
local C_warnings
local C_result_name
local C_core_new
local C_core_free
local C_apply
local C_validate
-- nil when the library predates off-event-loop compilation
local C_apply_or_start
local C_collect
local C_generation
local C_has_backend
local C_ctx_init
local C_pick
local C_backend_info
local C_hash_by
local C_alternatives
local C_route_headers
local C_route
local C_observe
-- nil when the library predates the shared ewma statistics
local C_stats_new
local C_stats_free
local C_use_stats

-- the ilb_core of this process (cdata), created lazily
local core
local core_freed = false

-- the ewma statistics (cdata), created by init_stats(), and the pid that made them
local stats
local stats_pid

-- backend descriptors of the configuration in force, by name
local descriptors = {}
local n_descriptors = 0
local descriptors_generation

-- free list of ilb_pick_ctx
local free_ctx = {}
local n_free = 0
local n_created = 0


local function getpid()
    local ok, pid = pcall(function() return ffi.C.getpid() end)
    return ok and tonumber(pid) or nil
end


local function library_candidate()
    if settings.library then
        return settings.library, "configure{ library }"
    end

    local env = os_getenv("INGRESS_LB_LIBRARY")
    if env and env ~= "" then
        return env, "INGRESS_LB_LIBRARY"
    end

    local found = package.searchpath("libingress_lb", package.cpath)
    if found then
        return found, "package.cpath"
    end

    return "ingress_lb", "dynamic linker search path"
end


-- Record settings; must be called before the library is loaded.
--   library: absolute path of libingress_lb.so
--   ewma_slots: endpoints the shared ewma statistics can hold (default
--     DEFAULT_EWMA_SLOTS); only before they are created, i.e. before
--     require("balancer") in init_by_lua
--   state_dir: directory where the accepted backends and servers documents are
--     saved (absolute path; nil: nothing saved), loaded back at start: set it
--     before require("configuration") in init_by_lua
function _M.configure(opts)
    if type(opts) ~= "table" then
        error("ingress_lb.core.configure: expected a table", 2)
    end

    local library = opts.library
    if library ~= nil then
        if type(library) ~= "string" or library == "" then
            error("ingress_lb.core.configure: library must be a non-empty string", 2)
        end

        if lib and library ~= lib_path then
            error("ingress_lb.core.configure: library already loaded from "
                  .. lib_path, 2)
        end
    end

    local slots = opts.ewma_slots
    if slots ~= nil then
        if type(slots) ~= "number" or slots < 1 or slots > MAX_EWMA_SLOTS
           or slots ~= math_floor(slots)
        then
            error("ingress_lb.core.configure: ewma_slots must be an integer in 1-"
                  .. MAX_EWMA_SLOTS, 2)
        end

        if stats and slots ~= settings.ewma_slots then
            error("ingress_lb.core.configure: the ewma statistics already exist with "
                  .. tostring(settings.ewma_slots or _M.DEFAULT_EWMA_SLOTS) .. " slots", 2)
        end
    end

    local state_dir = opts.state_dir
    if state_dir ~= nil and (type(state_dir) ~= "string" or state_dir == "") then
        error("ingress_lb.core.configure: state_dir must be a non-empty string", 2)
    end

    if library ~= nil then
        settings.library = library
    end
    if slots ~= nil then
        settings.ewma_slots = slots
    end
    if state_dir ~= nil then
        settings.state_dir = state_dir
    end

    return true
end


-- Load the library once. Returns the clib, or nil and a message.
local function load()
    if lib then
        return lib
    end

    local path, origin = library_candidate()
    local ok, clib = pcall(ffi.load, path)
    if not ok then
        return nil, "ingress-lb: cannot load the core library " .. path
                    .. " (from " .. origin .. "): " .. tostring(clib)
    end

    local abi_ok, abi = pcall(function() return tonumber(clib.ilb_abi_version()) end)
    if not abi_ok or abi ~= ABI_VERSION then
        return nil, "ingress-lb: " .. path .. " has C ABI version "
                    .. tostring(abi_ok and abi or "unknown") .. ", this binding needs "
                    .. ABI_VERSION .. "; install matching lua/ and library files"
    end

    C_version = clib.ilb_version
    C_warnings = clib.ilb_core_warnings
    C_result_name = clib.ilb_result_name
    C_core_new = clib.ilb_core_new
    C_core_free = clib.ilb_core_free
    C_apply = clib.ilb_core_apply_backends
    C_validate = clib.ilb_core_validate_backends
    C_generation = clib.ilb_core_generation
    C_has_backend = clib.ilb_core_has_backend
    C_ctx_init = clib.ilb_pick_ctx_init
    C_pick = clib.ilb_core_pick
    C_backend_info = clib.ilb_core_backend_info
    C_hash_by = clib.ilb_core_backend_hash_by
    C_alternatives = clib.ilb_core_backend_alternatives
    C_route_headers = clib.ilb_core_backend_route_headers
    C_route = clib.ilb_core_route
    C_observe = clib.ilb_core_observe

    local function optional(sym)
        local found, fn = pcall(function() return clib[sym] end)
        return found and fn or nil
    end
    C_stats_new = optional("ilb_stats_new")
    C_stats_free = optional("ilb_stats_free")
    C_use_stats = optional("ilb_core_use_stats")
    C_apply_or_start = optional("ilb_core_apply_backends_or_start")
    C_collect = optional("ilb_core_collect_backends")

    lib = clib
    lib_path = path
    return lib
end

-- Load the library now (e.g. from init_by_lua, to fail at start-up rather than
-- in the workers). Returns true, or nil and a message.
function _M.load()
    local clib, err = load()
    if not clib then
        return nil, err
    end
    return true
end


function _M.library_path()
    return lib_path
end


function _M.result_name(rc)
    if C_result_name then
        return ffi_string(C_result_name(rc))
    end
    return RESULT_NAMES[rc] or ("ilb_result " .. tostring(rc))
end


-- ingress-nginx's name of an ilb_algorithm code ("chash", ...).
function _M.algorithm_name(code)
    return ALGORITHM_NAMES[code] or ("ilb_algorithm " .. tostring(code))
end


-- Finalizers. When the Lua VM is closed (worker exit, master exit or reload) the
-- core must go before the statistics it uses; the statistics are unmapped only by
-- the process that created them (a worker's inherited mapping ends with it).
local function free_core(c)
    if core_freed then
        return
    end
    core_freed = true
    C_core_free(c)
end

local function free_stats(s)
    if core and not core_freed then
        free_core(core)
    end
    if C_stats_free and stats_pid and stats_pid == getpid() then
        C_stats_free(s)
    end
end


local function use_stats(c)
    local rc = tonumber(C_use_stats(c, stats))
    if rc ~= ILB_OK then
        return nil, "ingress-lb: ilb_core_use_stats failed: " .. _M.result_name(rc)
    end
    return true
end


local function get_core()
    if core then
        return core
    end

    local clib, err = load()
    if not clib then
        return nil, err
    end

    core_out[0] = nil
    local rc = C_core_new(core_out)
    if rc ~= ILB_OK then
        return nil, "ingress-lb: ilb_core_new failed: " .. _M.result_name(tonumber(rc))
    end

    local c = ffi_gc(core_out[0], free_core)
    core_out[0] = nil

    if stats then
        local ok
        ok, err = use_stats(c)
        if not ok then
            ffi_gc(c, nil)
            C_core_free(c)
            return nil, err
        end
    end

    core = c
    core_freed = false
    return core
end


-- Map the ewma statistics shared by the processes forked afterwards: call it in
-- the master, before the workers exist (balancer.lua does at load time in
-- init_by_lua). slots: endpoints they can hold (default: configure{ ewma_slots },
-- else DEFAULT_EWMA_SLOTS). Returns true (also when they exist already), or nil
-- and a message.
function _M.init_stats(slots)
    if stats then
        return true
    end

    local clib, err = load()
    if not clib then
        return nil, err
    end

    if not (C_stats_new and C_use_stats) then
        return nil, "ingress-lb: " .. lib_path .. " has no shared ewma statistics "
                    .. "(ilb_stats_new); ewma statistics stay per worker"
    end

    slots = slots or settings.ewma_slots or _M.DEFAULT_EWMA_SLOTS
    stats_out[0] = nil
    local rc = tonumber(C_stats_new(slots, stats_out))
    if rc ~= ILB_OK then
        return nil, "ingress-lb: ilb_stats_new(" .. tostring(slots) .. ") failed: "
                    .. _M.result_name(rc)
    end

    stats = ffi_gc(stats_out[0], free_stats)
    stats_out[0] = nil
    stats_pid = getpid()
    settings.ewma_slots = slots

    if core then
        -- a core made before (this process): switch it over
        return use_stats(core)
    end
    return true
end


-- Number of slots of the shared ewma statistics, or nil when there are none (each
-- core then keeps its own, per process).
function _M.stats_slots()
    if stats then
        return settings.ewma_slots
    end
    return nil
end


function _M.version()
    local clib, err = load()
    if not clib then
        return nil, err
    end
    return ffi_string(C_version())
end


-- The message written by the last failed call, or the name of rc.
local function last_error(rc)
    local len = tonumber(size_out[0])
    if len and len > 0 then
        if len > ERR_CAP - 1 then
            len = ERR_CAP - 1
        end
        return ffi_string(err_buf, len)
    end
    return _M.result_name(rc)
end


-- Forget the backend descriptors when the core has published another
-- configuration.
local function refresh_descriptors(c)
    local rc = C_generation(c, u64_out)
    local generation = rc == ILB_OK and tonumber(u64_out[0]) or nil
    if generation == nil or generation ~= descriptors_generation then
        descriptors = {}
        n_descriptors = 0
        descriptors_generation = generation
    end
end


-- this worker's core for a backends document and the document's length, or
-- nil, message, rc. A document is a Lua string, or a pointer (cdata) to `len`
-- bytes (what shdict_raw.read() gives).
local function core_for_document(json, len)
    local t = type(json)
    if t == "string" then
        len = #json
    elseif t ~= "cdata" or type(len) ~= "number" or len < 0 then
        return nil, "backends document must be a string (or a pointer and a length), got "
                    .. t, _M.INVALID_ARGUMENT
    end
    local c, err = get_core()
    if not c then
        return nil, err
    end
    return c, len
end


local function check_document(fn, json, publishes, len)
    local c, n, err_rc = core_for_document(json, len)
    if not c then
        return nil, n, err_rc
    end

    size_out[0] = 0
    local rc = tonumber(fn(c, json, n, err_buf, ERR_CAP, size_out))
    if rc == ILB_OK then
        if publishes then
            refresh_descriptors(c)
        end
        return true
    end

    return nil, last_error(rc), rc
end


-- Parse, validate and publish a backends document (the body of
-- POST /configuration/backends; a Lua string, or a pointer and its length) in
-- this worker's core.
-- Returns true, or nil, message, rc (rc is nil when the library or the core
-- could not be set up).
function _M.apply(json, len)
    if not C_apply then
        local clib, err = load()
        if not clib then
            return nil, err
        end
    end
    return check_document(C_apply, json, true, len)
end


-- Changed backends (JSON bytes) a worker builds on its event loop; a larger
-- change is compiled on a thread of the core's own (apply_or_start()). The
-- header's ILB_INLINE_APPLY_BYTES, the core's default for both front ends
-- (tests/lua_cdef.rs checks they agree).
_M.INLINE_APPLY_BYTES = 65536

local APPLY_STATES = {
    [0] = "idle", "applied", "started", "busy", "running", "superseded",
}

-- compilations started in this worker, and the outcome of the last one collected
-- (whoever collected it: the sync timer or a POST handler)
local build_seq = 0
local done_seq = 0
local done_state, done_err

-- apply() for an event loop: a change of at most inline_bytes (default
-- INLINE_APPLY_BYTES) of backends is applied at once and "applied" returned; a
-- larger one is compiled on another thread: "started", n (collect(n) publishes
-- it), while the configuration in force keeps serving. "busy" when a compilation
-- started earlier still runs (nothing done). nil, message, rc when the document is
-- rejected at once. json: a Lua string, or a pointer and its length `len` (the
-- core copies what it compiles elsewhere: the bytes may change once this returns).
function _M.apply_or_start(json, inline_bytes, len)
    local c, n, err_rc = core_for_document(json, len)
    if not c then
        return nil, n, err_rc
    end
    if not C_apply_or_start then
        local ok, apply_err, rc = check_document(C_apply, json, true, n)
        if not ok then
            return nil, apply_err, rc
        end
        return "applied"
    end

    size_out[0] = 0
    local rc = tonumber(C_apply_or_start(c, json, n,
                                         inline_bytes or _M.INLINE_APPLY_BYTES,
                                         apply_state_out, err_buf, ERR_CAP, size_out))
    if rc ~= ILB_OK then
        return nil, last_error(rc), rc
    end
    local state = APPLY_STATES[tonumber(apply_state_out[0])]
    if state == "applied" then
        refresh_descriptors(c)
    elseif state == "started" then
        build_seq = build_seq + 1
        return state, build_seq
    end
    return state
end


-- Publish compilation n (from apply_or_start()) if it is done. Returns
-- "running", "applied" or "superseded" (compiled, but another configuration was
-- applied meanwhile: apply again), or nil, message, rc if it was rejected (the
-- configuration in force stays). "idle" when nothing was started.
function _M.collect(n)
    n = n or build_seq
    if n <= done_seq then
        if n == done_seq then
            return done_state, done_err, done_state == nil and _M.CONFIG_REJECTED or nil
        end
        return "idle"
    end
    local c, err = get_core()
    if not c then
        return nil, err
    end
    if not C_collect then
        return "idle"
    end

    size_out[0] = 0
    local rc = tonumber(C_collect(c, apply_state_out, err_buf, ERR_CAP, size_out))
    if rc ~= ILB_OK then
        done_seq, done_state, done_err = build_seq, nil, last_error(rc)
        return nil, done_err, rc
    end
    local state = APPLY_STATES[tonumber(apply_state_out[0])]
    if state == "running" or state == "idle" then
        return state
    end
    if state == "applied" then
        refresh_descriptors(c)
    end
    done_seq, done_state, done_err = build_seq, state, nil
    return state
end


-- apply() in a context that may yield (content handler, timer): a large change is
-- compiled on another thread while this request or timer sleeps, so the worker
-- keeps serving. json as for apply_or_start() (a pointer's bytes must stay as they
-- are until this returns). Returns true, or nil, message, rc.
local APPLY_POLL = 0.002
-- times a compilation may be found overtaken by another configuration
local APPLY_TRIES = 20
-- seconds to wait for another compilation of this worker to end (a fresh
-- 20 000-backend document takes well under a second)
local APPLY_BUSY_WAIT = 60
function _M.apply_yielding(json, inline_bytes, len)
    local sleep = ngx and ngx.sleep
    local tries, busy_until = 0, nil
    while tries < APPLY_TRIES do
        local state, n, rc = _M.apply_or_start(json, inline_bytes, len)
        if state == "started" then
            local seq = n
            repeat
                sleep(APPLY_POLL)
                state, n, rc = _M.collect(seq)
            until state ~= "running"
        end
        if not state then
            return nil, n, rc
        end
        if state == "applied" then
            return true
        end
        if state == "busy" then
            -- another compilation of this worker (the sync timer's) runs: wait
            -- for it, without counting it as a try
            ngx.update_time()
            busy_until = busy_until or ngx.now() + APPLY_BUSY_WAIT
            if ngx.now() > busy_until then
                return nil, "configuration not applied: another compilation did not end", _M.CONFIG_REJECTED
            end
            sleep(APPLY_POLL)
        else
            -- superseded: another configuration was applied meanwhile; again
            tries = tries + 1
        end
    end
    return nil, "configuration not applied: other configurations kept replacing it",
           _M.CONFIG_REJECTED
end


-- Same checks as apply() without publishing anything.
function _M.validate(json)
    if not C_validate then
        local clib, err = load()
        if not clib then
            return nil, err
        end
    end
    return check_document(C_validate, json, false)
end


-- Number of configurations this worker's core has published (0 before the
-- first), or nil and a message.
function _M.generation()
    local c, err = get_core()
    if not c then
        return nil, err
    end

    local rc = C_generation(c, u64_out)
    if rc ~= ILB_OK then
        return nil, _M.result_name(tonumber(rc))
    end
    return tonumber(u64_out[0])
end


-- The shared dict's backends counter (configuration.lua's "backends_generation")
-- whose document this worker's core has in force, and the core generation it was
-- noted at: while both still hold, the stored document is the one in force, so
-- the sync timer need not read it and a POST of the document in force need not
-- compare it with the stored one.
local counter_noted, noted_at_generation

-- The document stored at dict counter `counter` (or a later one) is in force:
-- noted by configuration.lua after storing the document it applied (when nobody
-- stored another in between) and by balancer.lua after applying one it read.
function _M.note_in_force(counter)
    counter_noted, noted_at_generation = counter, _M.generation()
end

-- true when the dict's counter is `counter` and its document is the one in force
-- here (noted so, nothing applied since)
function _M.counter_in_force(counter)
    return counter ~= nil and counter == counter_noted
           and noted_at_generation ~= nil and _M.generation() == noted_at_generation
end


-- Warnings about the configuration in force (one per line, "" when none), or nil
-- and a message. Allocates: call it after an apply, not per request.
function _M.warnings()
    local c, err = get_core()
    if not c then
        return nil, err
    end

    local rc = C_warnings(c, err_buf, ERR_CAP, size_out)
    if rc ~= ILB_OK then
        return nil, _M.result_name(tonumber(rc))
    end
    return ffi_string(err_buf, size_out[0])
end


-- The warnings of the configuration in force ("" when none) when they differ
-- from the ones last reported through `dict` (a shared dict: key
-- "backends_warnings", shared by the workers), else nil: each distinct set of
-- warnings is logged once, not once per worker or per update.
function _M.new_warnings(dict)
    local warnings = _M.warnings()
    if not warnings or not dict then
        return warnings ~= "" and warnings or nil
    end
    if dict:get("backends_warnings") == warnings then
        return nil
    end
    dict:set("backends_warnings", warnings)
    if warnings == "" then
        return nil
    end
    return warnings
end


-- A text about backend `name` copied out by `fn` (ilb_core_backend_hash_by and
-- the other functions with its buffer convention), or nil and the ilb_result code.
local function fetch_text(fn, c, name)
    size_out[0] = 0
    local rc = tonumber(fn(c, name, #name, err_buf, ERR_CAP, size_out))
    if rc ~= ILB_OK then
        return nil, rc
    end

    local len = tonumber(size_out[0])
    if len < ERR_CAP then
        return ffi_string(err_buf, len)
    end

    -- longer than the scratch buffer: once more with room for all of it
    local buf = ffi_new("char[?]", len + 1)
    rc = tonumber(fn(c, name, #name, buf, len + 1, size_out))
    if rc ~= ILB_OK then
        return nil, rc
    end
    return ffi_string(buf, len)
end


local function lines(text)
    local out = {}
    for line in string.gmatch(text or "", "[^\n]+") do
        out[#out + 1] = line
    end
    return out
end


-- The canary routing data of a backend with alternatives: the alternatives'
-- names (in the core's numbering), the $http_ variables the decision reads, and
-- an ilb_header array with their names filled in.
local function describe_routes(c, name, d)
    local alternatives = lines(fetch_text(C_alternatives, c, name))
    if #alternatives == 0 then
        return
    end
    local names = lines(fetch_text(C_route_headers, c, name))
    local vars = {}
    local headers = ffi_new("ilb_header[?]", #names + 1)
    for i, h in ipairs(names) do
        vars[i] = "http_" .. h
        headers[i - 1].name = h
        headers[i - 1].name_len = #h
    end
    d.alternatives = alternatives
    d.route_names = names       -- keeps the strings the name pointers point to
    d.route_vars = vars
    d.route_headers = headers
    d.route_values = {}         -- keeps the values alive during ilb_core_route
end


-- descriptor of names that are not backends (or before any configuration)
local UNKNOWN = {
    serves = false, rc = ILB_UNKNOWN_BACKEND, algorithm = 0, needs = 0,
    hash_key = false, cookie = false, timing = false,
}


local function describe(c, name)
    local rc = tonumber(C_has_backend(c, name, #name))
    if rc ~= ILB_OK and rc ~= ILB_NO_ENDPOINTS then
        return {
            name = name, serves = false, rc = rc, algorithm = 0, needs = 0,
            hash_key = false, cookie = false, timing = false,
        }
    end

    local info_rc = tonumber(C_backend_info(c, name, #name, info_out))
    if info_rc ~= ILB_OK then
        return {
            name = name, serves = false, rc = info_rc, algorithm = 0, needs = 0,
            hash_key = false, cookie = false, timing = false,
        }
    end

    local needs = tonumber(info_out.needs)
    local d = {
        name = name,
        serves = rc == ILB_OK,
        rc = rc,
        algorithm = tonumber(info_out.algorithm),
        needs = needs,
        hash_key = band(needs, _M.NEEDS_HASH_KEY) ~= 0,
        cookie = band(needs, _M.NEEDS_COOKIE) ~= 0,
        timing = band(needs, _M.NEEDS_TIMING) ~= 0,
        -- the upstream-hash-by expression, when the core needs its value
        hash_by = nil,
    }
    if d.hash_key then
        d.hash_by = fetch_text(C_hash_by, c, name) or ""
    end
    describe_routes(c, name, d)
    return d
end


-- What a request for backend `name` needs, for the configuration in force:
--   serves     the backend exists and has endpoints
--   rc         ilb_result of that check (OK, UNKNOWN_BACKEND, NO_ENDPOINTS)
--   algorithm  ilb_algorithm code
--   hash_key, cookie, timing   the ILB_NEEDS_* bits as booleans (needs: the bits)
--   hash_by    the upstream-hash-by expression (when hash_key)
-- Cached per configuration: the first request for a backend after a change asks
-- the core, the others make no FFI call. Callers may add fields (balancer.lua
-- keeps its compiled expression there); they are dropped with the configuration.
function _M.backend(name)
    local d = descriptors[name]
    if d then
        return d
    end

    local c = core
    if not c or type(name) ~= "string" then
        -- no configuration was ever applied in this worker
        return UNKNOWN
    end

    d = describe(c, name)
    if n_descriptors < MAX_DESCRIPTORS then
        descriptors[name] = d
        n_descriptors = n_descriptors + 1
    end
    return d
end


-- true when the configuration in force has a backend of that name with
-- endpoints; otherwise false and the ilb_result code.
function _M.has_backend(name)
    local d = _M.backend(name)
    if d.serves then
        return true
    end
    return false, d.rc
end


-- The upstream-hash-by expression of backend `name`, or nil and the ilb_result
-- code (not cached: see backend() for the request path).
function _M.hash_by(name)
    local c = core
    if not c or type(name) ~= "string" then
        return nil, ILB_UNKNOWN_BACKEND
    end
    return fetch_text(C_hash_by, c, name)
end


-- Canary routing for a request to the backend described by `d` (backend(name)):
-- the name of the alternative backend the core sends it to, or nil for the
-- backend itself (also when it has no alternatives, or on error: then nil and the
-- ilb_result code). `cookie` is the Cookie request header as received (nil:
-- none); `var` is ngx.var (or any table with the $http_ values by variable name).
function _M.route(d, cookie, var)
    local alternatives = d.alternatives
    local c = core
    if not alternatives or not c then
        return nil
    end

    -- Only present headers are passed; their values are anchored in a table so the
    -- collector (which may run while the next variable is fetched) keeps them.
    local headers, values, vars = d.route_headers, d.route_values, d.route_vars
    local n = 0
    for i = 1, #vars do
        local v = var[vars[i]]
        if v then
            values[i] = v
            local h = headers[n]
            h.name = d.route_names[i]
            h.name_len = #d.route_names[i]
            h.value = v
            h.value_len = #v
            n = n + 1
        end
    end

    local rc = C_route(c, d.name, #d.name, cookie, cookie and #cookie or 0,
                       headers, n, u32_out)

    for i = 1, #vars do
        values[i] = nil
    end
    for i = 0, n - 1 do
        headers[i].value = nil
        headers[i].value_len = 0
    end

    if rc ~= ILB_OK then
        return nil, tonumber(rc)
    end
    local which = tonumber(u32_out[0])
    if which == 0 then
        return nil
    end
    return alternatives[which]
end


-- A reset ilb_pick_ctx for a new request, from the free list when possible.
-- Returns nil and a message if the library cannot be loaded.
function _M.new_ctx()
    local ctx
    if n_free > 0 then
        ctx = free_ctx[n_free]
        free_ctx[n_free] = nil
        n_free = n_free - 1

    else
        if not C_ctx_init then
            local clib, err = load()
            if not clib then
                return nil, err
            end
        end
        ctx = ffi_new(pick_ctx_type)
        n_created = n_created + 1
    end

    C_ctx_init(ctx)
    return ctx
end


-- Give a context back to the free list; the caller must not use it afterwards.
function _M.release_ctx(ctx)
    if ctx == nil or n_free >= MAX_FREE_CTX then
        return
    end
    n_free = n_free + 1
    free_ctx[n_free] = ctx
end


-- Number of contexts in the free list, and number allocated so far by this
-- worker (for tests and monitoring).
function _M.free_ctx_count()
    return n_free, n_created
end


-- Pick an endpoint of backend `name` for the request whose state is `ctx`.
-- The request data are optional (nil: empty), as ilb_request:
--   hash_key       the evaluated upstream-hash-by expression
--   cookie         the Cookie request header as received
--   host           $host
--   location_path  the ingress location path
--   user_agent     the User-Agent request header
--   https          true when the request came over TLS
--   now            seconds since the epoch (ngx.now())
-- Returns "ip:port" ("[ipv6]:port" for IPv6), or nil and the ilb_result code. The
-- rest of the outcome (score, Set-Cookie) is in last_peer() / last_set_cookie().
function _M.pick(name, ctx, hash_key, cookie, host, location_path, user_agent,
                 https, now)
    local c = core
    if not c then
        return nil, ILB_UNKNOWN_BACKEND
    end

    -- The strings are borrowed by the core for the call only. Nothing between
    -- these stores and the call allocates, so the collector cannot run and every
    -- string stays where the pointers say; the pointers are dropped after.
    local r = req
    if hash_key then
        r.hash_key = hash_key
        r.hash_key_len = #hash_key
    end
    if cookie then
        r.cookie = cookie
        r.cookie_len = #cookie
    end
    if host then
        r.host = host
        r.host_len = #host
    end
    if location_path then
        r.location_path = location_path
        r.location_path_len = #location_path
    end
    if user_agent then
        r.user_agent = user_agent
        r.user_agent_len = #user_agent
    end
    r.https = https and 1 or 0
    r.now = now or 0

    local rc = C_pick(c, name, #name, r, ctx, peer)

    if hash_key then
        r.hash_key = nil
        r.hash_key_len = 0
    end
    if cookie then
        r.cookie = nil
        r.cookie_len = 0
    end
    if host then
        r.host = nil
        r.host_len = 0
    end
    if location_path then
        r.location_path = nil
        r.location_path_len = 0
    end
    if user_agent then
        r.user_agent = nil
        r.user_agent_len = 0
    end

    if rc ~= ILB_OK then
        -- the enum comes back as cdata: a plain number for callers
        return nil, tonumber(rc)
    end

    return ffi_string(peer.addr, peer.addr_len)
end


-- The ilb_peer written by the last successful pick (port, family, index, score,
-- set_cookie); scratch memory, overwritten by the next pick.
function _M.last_peer()
    return peer
end


-- The Set-Cookie header value the last successful pick asks for, or nil.
function _M.last_set_cookie()
    local n = peer.set_cookie_len
    if n > 0 then
        return ffi_string(peer.set_cookie, n)
    end
    return nil
end


-- Report how the attempts of a finished request to backend `name` went, from
-- nginx's variables as they are ($upstream_addr, $upstream_status,
-- $upstream_connect_time, $upstream_response_time; nil for an empty one), at
-- `now`. Returns true, or nil and the ilb_result code.
function _M.observe(name, upstream_addr, upstream_status, connect_time,
                    response_time, now)
    local c = core
    if not c or type(name) ~= "string" then
        return nil, ILB_UNKNOWN_BACKEND
    end

    -- the arguments stay referenced by this frame for the duration of the call
    local rc = C_observe(c, name, #name,
                         upstream_addr, upstream_addr and #upstream_addr or 0,
                         upstream_status, upstream_status and #upstream_status or 0,
                         connect_time, connect_time and #connect_time or 0,
                         response_time, response_time and #response_time or 0,
                         now or 0)
    if rc ~= ILB_OK then
        return nil, tonumber(rc)
    end
    return true
end


-- Certificates (SNI) ---------------------------------------------------------
--
-- The servers document (POST /configuration/servers) goes to the core like the
-- backends document; lookups answer a certificate id, which certificate_pem()
-- turns into the PEM text. Ids are Lua numbers: the core keeps them below 2^53,
-- so they are exact, and usable as table keys (e.g. to cache parsed
-- certificates: an id names one content, and changes when a uid's PEM does).

_M.NO_CERTIFICATE = 7

local ILB_INVALID_ARGUMENT = 2
local ILB_NO_CERTIFICATE = 7

-- set by load_certificates(); nil when the library predates the certificate store
local C_apply_servers
local C_apply_accepted_servers
local C_validate_servers
local C_servers_generation
local C_certificate_lookup
local C_hostname_has_certificate
local C_certificate_pem

-- scratch buffer for certificate_pem(), grown (once per larger size) when a PEM
-- does not fit
local pem_cap = 16384
local pem_buf = ffi_new("char[?]", pem_cap)


local function load_certificates()
    if C_certificate_pem then
        return true
    end

    local clib, err = load()
    if not clib then
        return nil, err
    end

    local ok, e = pcall(function()
        C_apply_servers = clib.ilb_core_apply_servers
        C_apply_accepted_servers = clib.ilb_core_apply_accepted_servers
        C_validate_servers = clib.ilb_core_validate_servers
        C_servers_generation = clib.ilb_core_servers_generation
        C_certificate_lookup = clib.ilb_core_certificate_lookup
        C_hostname_has_certificate = clib.ilb_core_hostname_has_certificate
        C_certificate_pem = clib.ilb_core_certificate_pem
    end)
    if not ok then
        C_certificate_pem = nil
        return nil, "ingress-lb: " .. tostring(lib_path) .. " has no certificate store: "
                    .. tostring(e)
    end
    return true
end


local function check_servers(fn_name, json)
    local ok, err = load_certificates()
    if not ok then
        return nil, err
    end

    if type(json) ~= "string" then
        return nil, "servers document must be a string, got " .. type(json),
               _M.INVALID_ARGUMENT
    end

    local c
    c, err = get_core()
    if not c then
        return nil, err
    end

    local fn = (fn_name == "apply" and C_apply_servers)
               or (fn_name == "accepted" and C_apply_accepted_servers)
               or C_validate_servers
    size_out[0] = 0
    local rc = tonumber(fn(c, json, #json, err_buf, ERR_CAP, size_out))
    if rc == ILB_OK then
        return true
    end
    return nil, last_error(rc), rc
end


-- Parse, validate and publish a servers document (the body of
-- POST /configuration/servers: {"certificates": {uid: PEM}, "servers":
-- {hostname: uid or "-1"}}) in this worker's core; the whole truth each time.
-- Returns true, or nil, message, rc (rc is nil when the library or the core
-- could not be set up).
function _M.apply_servers(json)
    return check_servers("apply", json)
end


-- Publish a servers document that apply_servers() already accepted (here or in
-- another worker: the stored copy). Same checks except the PEMs, which the core
-- parses only if its OpenSSL objects are ever needed (the Lua front end never
-- needs them: it makes its own cdata from the PEM), so thousands of new
-- certificates take milliseconds. Same results as apply_servers().
function _M.apply_accepted_servers(json)
    return check_servers("accepted", json)
end


-- Same checks as apply_servers() without publishing anything.
function _M.validate_servers(json)
    return check_servers("validate", json)
end


-- Number of servers documents this worker's core has published (0 before the
-- first, or when the library cannot be loaded).
function _M.servers_generation()
    local c = core
    if not c or not load_certificates() then
        return 0
    end
    return tonumber(C_servers_generation(c))
end


-- The id (a Lua number) of the certificate for a handshake whose SNI is `sni`
-- (nil: the client sent none), by the exact hostname, then the one-label
-- wildcard, then "_"; or nil and the ilb_result code (NO_CERTIFICATE when
-- nothing matches). Allocates nothing.
function _M.certificate_id(sni)
    local c = core
    if not c then
        return nil, ILB_NO_CERTIFICATE
    end
    if not C_certificate_lookup and not load_certificates() then
        return nil, ILB_NO_CERTIFICATE
    end
    if sni ~= nil and type(sni) ~= "string" then
        return nil, ILB_INVALID_ARGUMENT
    end

    -- sni stays referenced by this frame for the duration of the call
    local rc = C_certificate_lookup(c, sni, sni and #sni or 0, u64_out)
    if rc ~= ILB_OK then
        return nil, tonumber(rc)
    end
    return tonumber(u64_out[0])
end


-- true if `host` has a certificate listed for itself (its exact name or the
-- wildcard of its first label; listed with the default's certificate counts, the
-- default "_" alone does not): certificate.configured_for_current_request().
function _M.hostname_has_certificate(host)
    local c = core
    if not c or type(host) ~= "string" then
        return false
    end
    if not C_hostname_has_certificate and not load_certificates() then
        return false
    end
    return C_hostname_has_certificate(c, host, #host) == ILB_OK
end


-- The PEM text (certificates and key, as POSTed) of the certificate with that
-- id, or nil and a message (when a newer servers document replaced it, the
-- message starts with "no certificate": look the SNI up again). Allocates the
-- string.
function _M.certificate_pem(id)
    local c = core
    if not c then
        return nil, "no certificate: no servers document applied"
    end
    local ok, err = load_certificates()
    if not ok then
        return nil, err
    end
    if type(id) ~= "number" and type(id) ~= "cdata" then
        return nil, "certificate id must be a number, got " .. type(id)
    end

    size_out[0] = 0
    local rc = tonumber(C_certificate_pem(c, id, pem_buf, pem_cap, size_out))
    if rc == ILB_INVALID_ARGUMENT then
        local need = tonumber(size_out[0])
        if need and need > pem_cap then
            pem_cap = need
            pem_buf = ffi_new("char[?]", pem_cap)
            rc = tonumber(C_certificate_pem(c, id, pem_buf, pem_cap, size_out))
        end
    end

    if rc == ILB_OK then
        return ffi_string(pem_buf, size_out[0])
    end
    if rc == ILB_NO_CERTIFICATE then
        return nil, "no certificate with id " .. tostring(id) .. " in force"
    end
    return nil, _M.result_name(rc)
end


-- true when a certificate with that id is in force (asks for its size: copies
-- nothing, allocates nothing), else false.
function _M.certificate_exists(id)
    local c = core
    if not c or not load_certificates()
       or (type(id) ~= "number" and type(id) ~= "cdata")
    then
        return false
    end
    size_out[0] = 0
    local rc = tonumber(C_certificate_pem(c, id, nil, 0, size_out))
    return rc == ILB_OK or rc == ILB_INVALID_ARGUMENT
end


-- State on disk ----------------------------------------------------------------
--
-- The accepted backends and servers documents saved in configure{ state_dir }
-- (ilb_state_save, ilb_state_load), so that a restarted nginx serves them before
-- the controller posts again. configuration.lua saves after each accepted POST
-- and loads them in init_by_lua.

-- set by load_state_functions(); nil when the library predates them
local C_state_save
local C_state_load

-- the error text length of state_load() (size_out holds the document's)
local err_len_out = ffi_new("size_t[1]")


local function load_state_functions()
    if C_state_load then
        return true
    end

    local clib, err = load()
    if not clib then
        return nil, err
    end

    local ok, e = pcall(function()
        C_state_save = clib.ilb_state_save
        C_state_load = clib.ilb_state_load
    end)
    if not ok then
        C_state_load = nil
        return nil, "ingress-lb: " .. tostring(lib_path) .. " has no state functions "
                    .. "(ilb_state_save, ilb_state_load): " .. tostring(e)
    end
    return true
end


-- The directory given as configure{ state_dir }, or nil.
function _M.state_dir()
    return settings.state_dir
end


-- Save `doc`, an accepted document of `kind` ("backends" or "servers"), as
-- <dir>/<kind>.json, atomically. Returns true, or nil, message, rc.
function _M.state_save(dir, kind, doc)
    local ok, err = load_state_functions()
    if not ok then
        return nil, err
    end
    if type(dir) ~= "string" or type(kind) ~= "string" or type(doc) ~= "string" then
        return nil, "state_save: dir, kind and doc must be strings", _M.INVALID_ARGUMENT
    end

    size_out[0] = 0
    local rc = tonumber(C_state_save(dir, #dir, kind, #kind, doc, #doc, err_buf, ERR_CAP,
                                     size_out))
    if rc == ILB_OK then
        return true
    end
    return nil, last_error(rc), rc
end


-- The saved document of `kind` in `dir`, checked by the core as a POST of it would
-- be: the document; false when nothing is saved; or nil, message, rc (a corrupt,
-- unreadable or rejected file: the message names the file and why).
function _M.state_load(dir, kind)
    local ok, err = load_state_functions()
    if not ok then
        return nil, err
    end
    if type(dir) ~= "string" or type(kind) ~= "string" then
        return nil, "state_load: dir and kind must be strings", _M.INVALID_ARGUMENT
    end

    local cap, buf = 0, nil
    -- the size first; again if the file grew in between
    for _ = 1, 4 do
        size_out[0] = 0
        err_len_out[0] = 0
        local rc = tonumber(C_state_load(dir, #dir, kind, #kind, buf, cap, size_out,
                                         err_buf, ERR_CAP, err_len_out))
        local n = tonumber(size_out[0])
        if rc == ILB_OK then
            if n == 0 then
                return false
            end
            return ffi_string(buf, n)
        end
        if rc ~= ILB_INVALID_ARGUMENT or n <= cap then
            local len = tonumber(err_len_out[0])
            if len > 0 then
                return nil, ffi_string(err_buf, len), rc
            end
            return nil, _M.result_name(rc), rc
        end
        cap = n
        buf = ffi_new("uint8_t[?]", cap)
    end
    return nil, "state file of " .. kind .. " in " .. dir .. " keeps changing size",
           _M.INVALID_ARGUMENT
end


return _M

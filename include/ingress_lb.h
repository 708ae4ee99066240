/*
 * ingress_lb.h -- C ABI of the ingress-lb core (libingress_lb.so / libingress_lb.a).
 *
 * Conventions (see README.md, "C API conventions"):
 *
 *  - Names are `ilb_<type>_<verb>`. Types are opaque handles (ilb_core) or plain
 *    structs with a documented, fixed layout that the caller allocates (ilb_pick_ctx,
 *    ilb_peer): no call on the per-request path allocates.
 *  - Every fallible function returns an ilb_result. Out-parameters are written only
 *    when the function returns ILB_OK, except error text, which is written only on
 *    failure (see "Error text" below).
 *  - Every pointer argument is checked: NULL where a value is required gives
 *    ILB_NULL_ARGUMENT; a (pointer, length) pair may be (NULL, 0) for an empty value.
 *    Lengths are in bytes; strings are not required to be NUL-terminated.
 *  - No Rust panic ever unwinds into the caller: every export catches it and returns
 *    ILB_PANIC (the handle stays usable; the configuration in force is unchanged).
 *
 * Error text: functions taking (char *err, size_t err_cap, size_t *err_len) write a
 * human-readable message on failure into err, truncated to err_cap - 1 bytes (on a
 * UTF-8 character boundary) and NUL-terminated; *err_len receives the number of bytes
 * written before the NUL. err may be NULL (nothing is written, whatever err_cap);
 * err_len may be NULL.
 *
 * Ownership and lifetimes:
 *  - ilb_core_new() creates a core; the caller owns it and releases it exactly once
 *    with ilb_core_free(). Likewise ilb_stats_new() / ilb_stats_free() (ewma
 *    statistics in shared memory; a core given them by ilb_core_use_stats() keeps its
 *    own reference, so the order of the two frees does not matter). Nothing else
 *    needs releasing: no other function returns memory the caller must free. Strings
 *    returned by ilb_version()/ilb_result_name() are static.
 *  - ilb_pick_ctx and ilb_peer are owned by the caller (stack, nginx request pool,
 *    LuaJIT cdata); the core keeps no pointer to them after a call returns.
 *  - Input buffers (JSON, names) are only read during the call.
 *  - Use after release. The API's shape prevents it where it can: every output is a
 *    copy (ilb_peer.addr/set_cookie, the texts of ilb_core_backend_*, the PEM of
 *    ilb_core_certificate_pem), so nothing a call returns points into a
 *    configuration a later apply replaces; certificates are named by id, and an id no
 *    longer in force gives ILB_NO_CERTIFICATE, never stale memory; an ilb_pick_ctx
 *    holds address hashes, no pointers, so it stays valid across applies and even
 *    across cores; ilb_stats is reference-counted. It is only documented, and cannot
 *    be detected, that: a handle (ilb_core, ilb_stats) must not be used or released
 *    again after its release; ilb_core_free() must not run while another thread is
 *    inside a call on that core; input buffers must not change during a call; one
 *    ilb_pick_ctx must not be used by two threads at once. Any of these is undefined
 *    behaviour.
 *
 * Threads and processes: an ilb_core may be used from any number of threads at once.
 * Picks are lock-free reads of an immutable snapshot; applying a configuration builds
 * a new snapshot and publishes it atomically (a concurrent pick sees the old or the
 * new one, never a mix). Each nginx worker process has its own core (or its own copy
 * after fork); keeping workers in step is the front end's job (shared dict / zone).
 * The one thing workers share directly is ewma statistics created by ilb_stats_new()
 * before they fork: lock-free atomics in a MAP_SHARED mapping.
 */
#ifndef INGRESS_LB_H
#define INGRESS_LB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this ABI; bumped on any incompatible change of a type or function. */
#define ILB_ABI_VERSION 1

/* Peers remembered per request; a request retried more often than this keeps
 * excluding its first ILB_MAX_TRIED peers. */
#define ILB_MAX_TRIED 32

/* Size of ilb_peer.addr, enough for "[IPv6]:port" and the NUL. */
#define ILB_ADDR_MAX 64

/* Size of ilb_peer.set_cookie: the longest Set-Cookie value and the NUL. */
#define ILB_COOKIE_MAX 1024

/* Largest configuration document accepted (bytes). */
#define ILB_MAX_CONFIG_BYTES (48u * 1024u * 1024u)

/* The inline_bytes both front ends give ilb_core_apply_backends_or_start(): changed
 * backends of at most this much JSON are built on the event loop (about 2 ms). */
#define ILB_INLINE_APPLY_BYTES 65536

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

#ifdef __cplusplus
}
#endif

#endif /* INGRESS_LB_H */

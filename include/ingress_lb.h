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
 * written before the NUL. err may be NULL when err_cap is 0; err_len may be NULL.
 *
 * Ownership and lifetimes:
 *  - ilb_core_new() creates a core; the caller owns it and releases it exactly once
 *    with ilb_core_free(). Nothing else needs releasing: no function returns memory
 *    the caller must free. Strings returned by ilb_version()/ilb_result_name() are
 *    static.
 *  - ilb_pick_ctx and ilb_peer are owned by the caller (stack, nginx request pool,
 *    LuaJIT cdata); the core keeps no pointer to them after a call returns.
 *  - Input buffers (JSON, names) are only read during the call.
 *
 * Threads and processes: an ilb_core may be used from any number of threads at once.
 * Picks are lock-free reads of an immutable snapshot; applying a configuration builds
 * a new snapshot and publishes it atomically (a concurrent pick sees the old or the
 * new one, never a mix). Each nginx worker process has its own core (or its own copy
 * after fork); keeping workers in step is the front end's job (shared dict / zone).
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

/* Largest configuration document accepted (bytes). */
#define ILB_MAX_CONFIG_BYTES (48u * 1024u * 1024u)

/* -- begin cdef (this block is also bound by lua/ingress_lb/core.lua) -- */

typedef enum ilb_result {
    ILB_OK = 0,
    ILB_NULL_ARGUMENT = 1,      /* a required pointer was NULL */
    ILB_INVALID_ARGUMENT = 2,   /* bad length, non-UTF-8 name, too large a document */
    ILB_CONFIG_REJECTED = 3,    /* the configuration is invalid; see error text */
    ILB_UNKNOWN_BACKEND = 4,    /* no backend of that name in the configuration */
    ILB_NO_ENDPOINTS = 5,       /* the backend exists but has no endpoint */
    ILB_PANIC = 6               /* internal bug caught at the boundary */
} ilb_result;

/* Opaque. */
typedef struct ilb_core ilb_core;

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

/* Same checks as ilb_core_apply_backends() without publishing anything. */
ilb_result ilb_core_validate_backends(const ilb_core *core, const uint8_t *json,
                                      size_t json_len, char *err, size_t err_cap,
                                      size_t *err_len);

/* Warnings about the configuration in force (an unknown load-balance name, an
 * algorithm not implemented yet, a skipped ExternalName endpoint), one per line,
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

/* Pick an endpoint of backend `name` for the request whose state is `ctx`, and
 * remember it in ctx. A peer already tried in this request is not picked again while
 * an untried one remains. Never allocates. */
ilb_result ilb_core_pick(const ilb_core *core, const char *name, size_t name_len,
                         ilb_pick_ctx *ctx, ilb_peer *peer_out);

/* -- end cdef -- */

#ifdef __cplusplus
}
#endif

#endif /* INGRESS_LB_H */

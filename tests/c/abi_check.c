/* A C program built against include/ingress_lb.h and linked to libingress_lb.so:
 * exercises every export as a C caller would. Exit status 0 = all checks passed. */
#define _POSIX_C_SOURCE 200809L /* fork, waitpid: the ewma statistics check */
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ingress_lb.h"

static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

_Static_assert(sizeof(ilb_pick_ctx) == 8 + 8 * ILB_MAX_TRIED, "ilb_pick_ctx layout");
_Static_assert(sizeof(((ilb_peer *)0)->addr) == ILB_ADDR_MAX, "ilb_peer.addr size");
_Static_assert(offsetof(ilb_peer, addr_len) == ILB_ADDR_MAX, "ilb_peer layout");

static const char GOOD[] =
    "[{\"name\":\"web\",\"endpoints\":[{\"address\":\"10.0.0.1\",\"port\":\"80\"},"
    "{\"address\":\"10.0.0.2\",\"port\":\"80\"},{\"address\":\"fd00::3\",\"port\":\"8080\"}]}]";

/* Ewma statistics shared across fork: created before it, as nginx's master does;
 * the child (a "worker") observes, the parent (another worker) picks by it. */
static void check_ewma_stats(void) {
    static const char EWMA[] =
        "[{\"name\":\"e\",\"load-balance\":\"ewma\",\"endpoints\":["
        "{\"address\":\"10.0.0.1\",\"port\":\"80\"},{\"address\":\"10.0.0.2\",\"port\":\"80\"}]}]";
    ilb_stats *stats = NULL;
    ilb_core *core = NULL;
    ilb_pick_ctx ctx;
    ilb_peer peer;
    ilb_backend_info info;

    CHECK(ilb_stats_new(16, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_stats_new(0, &stats) == ILB_INVALID_ARGUMENT && stats == NULL);
    CHECK(ilb_stats_new(1024, &stats) == ILB_OK && stats != NULL);
    CHECK(ilb_core_new(&core) == ILB_OK);
    CHECK(ilb_core_use_stats(NULL, stats) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_use_stats(core, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_use_stats(core, stats) == ILB_OK);
    CHECK(ilb_core_apply_backends(core, (const uint8_t *)EWMA, strlen(EWMA), NULL, 0, NULL) == ILB_OK);
    CHECK(ilb_core_backend_info(core, "e", 1, &info) == ILB_OK);
    CHECK(info.algorithm == ILB_EWMA && (info.needs & ILB_NEEDS_TIMING) != 0);
    ilb_stats_free(NULL); /* ignored */

    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* 10.0.0.1 is slow; 10.0.0.2 failed once, then answered fast on a retry. */
        ilb_result r1 = ilb_core_observe(core, "e", 1, "10.0.0.1:80", 11, "200", 3, "0.001", 5, "2.000", 5, 0);
        ilb_result r2 = ilb_core_observe(core, "e", 1, "10.0.0.9:80, 10.0.0.2:80", 24, "502, 200", 8,
                                         "-, 0.001", 8, "0.000, 0.010", 12, 0);
        _exit(r1 == ILB_OK && r2 == ILB_OK ? 0 : 1);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 20; i++) {
        ilb_pick_ctx_init(&ctx);
        CHECK(ilb_core_pick(core, "e", 1, NULL, &ctx, &peer) == ILB_OK);
        CHECK(strcmp(peer.addr, "10.0.0.2:80") == 0 && peer.score > 0.009 && peer.score <= 0.0101);
    }
    CHECK(ilb_core_observe(NULL, "e", 1, NULL, 0, NULL, 0, NULL, 0, NULL, 0, 0) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_observe(core, "e", 1, NULL, 3, NULL, 0, NULL, 0, NULL, 0, 0) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_observe(core, "e", 1, NULL, 0, NULL, 0, NULL, 0, NULL, 0, 0) == ILB_OK);
    CHECK(ilb_core_observe(core, "nope", 4, "10.0.0.1:80", 11, "200", 3, "0.001", 5, "2.0", 3, 0) == ILB_OK);
    /* The handle may go before the cores using it: they keep the memory alive. */
    ilb_stats_free(stats);
    CHECK(ilb_core_pick(core, "e", 1, NULL, &ctx, &peer) == ILB_OK);
    ilb_core_free(core);
}

/* Certificates (SNI): argv[1] is tests/data/certs. */
static size_t append_pem_json(char *out, size_t at, size_t cap, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.pem", dir, name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL) return at;
    out[at++] = '"';
    int ch;
    while ((ch = fgetc(f)) != EOF && at + 4 < cap) {
        if (ch == '\n') { out[at++] = '\\'; out[at++] = 'n'; }
        else if (ch == '"' || ch == '\\') { out[at++] = '\\'; out[at++] = (char)ch; }
        else out[at++] = (char)ch;
    }
    fclose(f);
    out[at++] = '"';
    out[at] = '\0';
    return at;
}

static void check_certificates(const char *dir) {
    static char doc[32768];
    static const char *const names[][2] = { { "d", "default" }, { "e", "exact" }, { "w", "wildcard" }, { "v2", "exact-v2" } };
    ilb_core *core = NULL;
    char err[256];
    size_t err_len = 0, len = 0;
    uint64_t id = 0, id2 = 0, d_id = 0;
    char pem[8192];

    size_t at = (size_t)snprintf(doc, sizeof doc, "{\"certificates\":{");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        at += (size_t)snprintf(doc + at, sizeof doc - at, "%s\"%s\":", i ? "," : "", names[i][0]);
        at = append_pem_json(doc, at, sizeof doc - 256, dir, names[i][1]);
    }
    size_t certs_end = at;
    at += (size_t)snprintf(doc + at, sizeof doc - at,
                           "},\"servers\":{\"_\":\"d\",\"exact.example.com\":\"e\",\"*.b.example.com\":\"w\"}}");

    CHECK(ilb_core_new(&core) == ILB_OK);
    CHECK(ilb_core_servers_generation(core) == 0);
    CHECK(ilb_core_servers_generation(NULL) == 0);
    CHECK(ilb_core_certificate_lookup(core, "exact.example.com", 17, &id) == ILB_NO_CERTIFICATE);
    CHECK(strcmp(ilb_result_name(ILB_NO_CERTIFICATE), "ILB_NO_CERTIFICATE") == 0);

    /* Rejections: nothing published. */
    const char *bad = "{\"certificates\":{},\"servers\":{\"x.example.com\":\"nope\"}}";
    CHECK(ilb_core_validate_servers(core, (const uint8_t *)bad, strlen(bad), err, sizeof err, &err_len) == ILB_CONFIG_REJECTED);
    CHECK(ilb_core_apply_servers(core, (const uint8_t *)bad, strlen(bad), err, sizeof err, &err_len) == ILB_CONFIG_REJECTED);
    CHECK(err_len == strlen(err) && strstr(err, "x.example.com") != NULL && strstr(err, "nope") != NULL);
    CHECK(ilb_core_apply_servers(core, NULL, 0, err, sizeof err, &err_len) == ILB_CONFIG_REJECTED);
    CHECK(ilb_core_apply_servers(core, NULL, 5, err, sizeof err, &err_len) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_apply_servers(NULL, (const uint8_t *)doc, at, NULL, 0, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_servers_generation(core) == 0);

    /* Accept. */
    CHECK(ilb_core_validate_servers(core, (const uint8_t *)doc, at, err, sizeof err, &err_len) == ILB_OK);
    CHECK(ilb_core_servers_generation(core) == 0);
    CHECK(ilb_core_apply_servers(core, (const uint8_t *)doc, at, err, sizeof err, &err_len) == ILB_OK);
    CHECK(ilb_core_servers_generation(core) == 1);

    /* Lookups. */
    CHECK(ilb_core_certificate_lookup(core, NULL, 0, &d_id) == ILB_OK && d_id != 0);
    CHECK(ilb_core_certificate_lookup(core, "unknown.test", 12, &id) == ILB_OK && id == d_id);
    CHECK(ilb_core_certificate_lookup(core, "Exact.Example.Com.", 18, &id) == ILB_OK && id != d_id);
    CHECK(ilb_core_certificate_lookup(core, "a.b.example.com", 15, &id2) == ILB_OK && id2 != id && id2 != d_id);
    CHECK(ilb_core_certificate_lookup(core, "x.a.b.example.com", 17, &id2) == ILB_OK && id2 == d_id);
    CHECK(id < ((uint64_t)1 << 53));
    CHECK(ilb_core_certificate_lookup(NULL, NULL, 0, &id2) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_certificate_lookup(core, NULL, 3, &id2) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_certificate_lookup(core, "x", 1, NULL) == ILB_NULL_ARGUMENT);

    /* PEM: ask for the size, then copy. */
    len = 0;
    CHECK(ilb_core_certificate_pem(core, id, NULL, 0, &len) == ILB_INVALID_ARGUMENT && len > 100);
    size_t need = len;
    memset(pem, 0x5a, sizeof pem);
    CHECK(ilb_core_certificate_pem(core, id, pem, need - 1, &len) == ILB_INVALID_ARGUMENT && len == need);
    CHECK((unsigned char)pem[0] == 0x5a);
    CHECK(ilb_core_certificate_pem(core, id, pem, need, &len) == ILB_OK && len == need - 1);
    CHECK(pem[len] == '\0' && strlen(pem) == len);
    CHECK(strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28) == 0 && strstr(pem, "PRIVATE KEY-----") != NULL);
    CHECK(ilb_core_certificate_pem(core, id ^ 1, pem, sizeof pem, &len) == ILB_NO_CERTIFICATE);
    CHECK(ilb_core_certificate_pem(core, id, pem, sizeof pem, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_certificate_pem(core, id, NULL, 10, &len) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_certificate_pem(NULL, id, pem, sizeof pem, &len) == ILB_NULL_ARGUMENT);

    /* New content for uid "e": a new id; the old one is gone. "-1" unserves. */
    at = certs_end + (size_t)snprintf(doc + certs_end, sizeof doc - certs_end,
                                      "},\"servers\":{\"_\":\"d\",\"exact.example.com\":\"v2\","
                                      "\"*.b.example.com\":\"-1\"}}");
    CHECK(ilb_core_apply_servers(core, (const uint8_t *)doc, at, err, sizeof err, &err_len) == ILB_OK);
    CHECK(ilb_core_servers_generation(core) == 2);
    CHECK(ilb_core_certificate_lookup(core, "exact.example.com", 17, &id2) == ILB_OK && id2 != id && id2 != d_id);
    CHECK(ilb_core_certificate_pem(core, id, pem, sizeof pem, &len) == ILB_NO_CERTIFICATE);
    CHECK(ilb_core_certificate_pem(core, id2, pem, sizeof pem, &len) == ILB_OK && len == strlen(pem));
    CHECK(ilb_core_certificate_lookup(core, "a.b.example.com", 15, &id2) == ILB_OK && id2 == d_id);

    /* Without "_": a miss is ILB_NO_CERTIFICATE, out-parameter untouched. */
    const char *none = "{\"certificates\":{},\"servers\":{}}";
    CHECK(ilb_core_apply_servers(core, (const uint8_t *)none, strlen(none), NULL, 0, NULL) == ILB_OK);
    id = 42;
    CHECK(ilb_core_certificate_lookup(core, NULL, 0, &id) == ILB_NO_CERTIFICATE && id == 42);

    /* A document accepted elsewhere: the same lookups and PEMs, no parsing needed. */
    ilb_core *other = NULL;
    CHECK(ilb_core_new(&other) == ILB_OK);
    CHECK(ilb_core_apply_accepted_servers(other, (const uint8_t *)doc, at, err, sizeof err, &err_len) == ILB_OK);
    CHECK(ilb_core_servers_generation(other) == 1);
    CHECK(ilb_core_certificate_lookup(other, "exact.example.com", 17, &id) == ILB_OK && id != 0);
    CHECK(ilb_core_certificate_lookup(other, "a.b.example.com", 15, &id2) == ILB_OK && id2 == d_id);
    CHECK(ilb_core_hostname_has_certificate(other, "exact.example.com", 17) == ILB_OK);
    CHECK(ilb_core_hostname_has_certificate(other, "unknown.test", 12) == ILB_NO_CERTIFICATE);
    CHECK(ilb_core_hostname_has_certificate(other, NULL, 3) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_hostname_has_certificate(NULL, "x", 1) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_certificate_pem(other, id, pem, sizeof pem, &len) == ILB_OK && len == strlen(pem));
    CHECK(ilb_core_apply_accepted_servers(other, (const uint8_t *)"{", 1, err, sizeof err, &err_len)
          == ILB_CONFIG_REJECTED);
    CHECK(ilb_core_apply_accepted_servers(NULL, (const uint8_t *)doc, at, NULL, 0, NULL) == ILB_NULL_ARGUMENT);
    ilb_core_free(other);
    ilb_core_free(core);
}

/* State on disk: save, read back (size first), a corrupt file, an unusable directory. */
static void check_state(void) {
    char dir[64], path[256], err[512], buf[512];
    size_t len = 77, err_len = 0;

    /* Not there yet: the first save creates it. */
    snprintf(dir, sizeof dir, "/tmp/ilb-abi-state-%ld", (long)getpid());
    size_t dir_len = strlen(dir);

    CHECK(ilb_state_load(dir, dir_len, "backends", 8, NULL, 0, &len, err, sizeof err, &err_len) == ILB_OK && len == 0);
    CHECK(ilb_state_load(dir, dir_len, "backends", 8, NULL, 0, NULL, NULL, 0, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_state_save(NULL, 4, "backends", 8, (const uint8_t *)GOOD, strlen(GOOD), NULL, 0, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_state_save(dir, dir_len, "general", 7, (const uint8_t *)GOOD, strlen(GOOD), err, sizeof err, &err_len)
          == ILB_INVALID_ARGUMENT);
    CHECK(err_len == strlen(err) && strstr(err, "backends") != NULL);
    CHECK(ilb_state_save(dir, dir_len, "backends", 8, NULL, 0, NULL, 0, NULL) == ILB_INVALID_ARGUMENT);

    CHECK(ilb_state_save(dir, dir_len, "backends", 8, (const uint8_t *)GOOD, strlen(GOOD), err, sizeof err, &err_len)
          == ILB_OK);
    /* The size first, then the document. */
    CHECK(ilb_state_load(dir, dir_len, "backends", 8, NULL, 0, &len, NULL, 0, NULL) == ILB_INVALID_ARGUMENT
          && len == strlen(GOOD));
    memset(buf, 0, sizeof buf);
    CHECK(ilb_state_load(dir, dir_len, "backends", 8, (uint8_t *)buf, sizeof buf, &len, err, sizeof err, &err_len)
          == ILB_OK);
    CHECK(len == strlen(GOOD) && memcmp(buf, GOOD, len) == 0);

    /* Corrupt content: read, checked by the core, rejected with the file's name. */
    snprintf(path, sizeof path, "%s/backends.json", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs("[{\"name\":", f);
        fclose(f);
    }
    len = 77;
    CHECK(ilb_state_load(dir, dir_len, "backends", 8, (uint8_t *)buf, sizeof buf, &len, err, sizeof err, &err_len)
          == ILB_CONFIG_REJECTED);
    CHECK(len == 77 && strstr(err, path) != NULL && strstr(err, "rejected") != NULL);

    /* A directory that is a file: reported by both. */
    CHECK(ilb_state_save(path, strlen(path), "servers", 7, (const uint8_t *)"{}", 2, err, sizeof err, &err_len)
          == ILB_CONFIG_REJECTED);
    CHECK(err_len > 0 && strstr(err, "servers.json") != NULL);
    CHECK(ilb_state_load(path, strlen(path), "servers", 7, NULL, 0, &len, err, sizeof err, &err_len)
          == ILB_CONFIG_REJECTED);

    CHECK(remove(path) == 0 && rmdir(dir) == 0);
}

int main(int argc, char **argv) {
    ilb_core *core = NULL;
    char err[256];
    size_t err_len = 12345;
    uint64_t gen = 99;

    CHECK(strlen(ilb_version()) > 0);
    CHECK(ilb_abi_version() == ILB_ABI_VERSION);
    CHECK(strcmp(ilb_result_name(ILB_CONFIG_REJECTED), "ILB_CONFIG_REJECTED") == 0);
    CHECK(strcmp(ilb_result_name((ilb_result)77), "ILB_UNKNOWN_RESULT") == 0);

    CHECK(ilb_core_new(NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_new(&core) == ILB_OK && core != NULL);
    CHECK(ilb_core_generation(core, &gen) == ILB_OK && gen == 0);
    CHECK(ilb_core_generation(NULL, &gen) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_generation(core, NULL) == ILB_NULL_ARGUMENT);

    /* Rejections: code, message, nothing published. */
    const char *bad = "[{\"name\":\"web\",\"endpoints\":[{\"address\":\"10.0.0.1\",\"port\":\"70000\"}]}]";
    CHECK(ilb_core_apply_backends(core, (const uint8_t *)bad, strlen(bad), err, sizeof err, &err_len) == ILB_CONFIG_REJECTED);
    CHECK(err_len == strlen(err) && strstr(err, "endpoints[0].port") != NULL && strstr(err, "\"web\"") != NULL);
    CHECK(ilb_core_apply_backends(core, NULL, 10, err, sizeof err, &err_len) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_apply_backends(core, NULL, 0, err, sizeof err, &err_len) == ILB_CONFIG_REJECTED); /* empty */
    CHECK(ilb_core_apply_backends(NULL, (const uint8_t *)GOOD, strlen(GOOD), NULL, 0, NULL) == ILB_NULL_ARGUMENT);
    /* Truncated error text stays NUL-terminated. */
    char tiny[8];
    CHECK(ilb_core_apply_backends(core, (const uint8_t *)bad, strlen(bad), tiny, sizeof tiny, &err_len) == ILB_CONFIG_REJECTED);
    CHECK(err_len == 7 && tiny[7] == '\0');
    CHECK(ilb_core_validate_backends(core, (const uint8_t *)bad, strlen(bad), NULL, 0, NULL) == ILB_CONFIG_REJECTED);
    CHECK(ilb_core_generation(core, &gen) == ILB_OK && gen == 0);

    /* Accept. */
    CHECK(ilb_core_validate_backends(core, (const uint8_t *)GOOD, strlen(GOOD), err, sizeof err, NULL) == ILB_OK);
    CHECK(ilb_core_generation(core, &gen) == ILB_OK && gen == 0);
    CHECK(ilb_core_apply_backends(core, (const uint8_t *)GOOD, strlen(GOOD), err, sizeof err, &err_len) == ILB_OK);
    CHECK(ilb_core_generation(core, &gen) == ILB_OK && gen == 1);
    CHECK(ilb_core_has_backend(core, "web", 3) == ILB_OK);
    CHECK(ilb_core_has_backend(core, "nope", 4) == ILB_UNKNOWN_BACKEND);
    CHECK(ilb_core_has_backend(core, NULL, 3) == ILB_NULL_ARGUMENT);

    /* A request with three attempts sees three different peers. */
    ilb_pick_ctx ctx;
    ilb_peer peer;
    char seen[3][ILB_ADDR_MAX];
    ilb_pick_ctx_init(&ctx);
    for (int i = 0; i < 3; i++) {
        CHECK(ilb_core_pick(core, "web", 3, NULL, &ctx, &peer) == ILB_OK);
        CHECK(peer.addr_len == strlen(peer.addr));
        CHECK(peer.family == 4 || peer.family == 6);
        CHECK(peer.family == 6 ? (strcmp(peer.addr, "[fd00::3]:8080") == 0 && peer.port == 8080) : peer.port == 80);
        strcpy(seen[i], peer.addr);
    }
    CHECK(strcmp(seen[0], seen[1]) != 0 && strcmp(seen[1], seen[2]) != 0 && strcmp(seen[0], seen[2]) != 0);

    /* Out-parameters are left alone on failure. */
    memset(&peer, 0x5a, sizeof peer);
    CHECK(ilb_core_pick(core, "nope", 4, NULL, &ctx, &peer) == ILB_UNKNOWN_BACKEND);
    CHECK(((unsigned char *)&peer)[0] == 0x5a && peer.addr_len == 0x5a5a5a5a);
    CHECK(ilb_core_pick(core, "web", 3, NULL, NULL, &peer) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_pick(core, "web", 3, NULL, &ctx, NULL) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_pick(NULL, "web", 3, NULL, &ctx, &peer) == ILB_NULL_ARGUMENT);
    /* A garbage context is clamped, not trusted. */
    memset(&ctx, 0xff, sizeof ctx);
    CHECK(ilb_core_pick(core, "web", 3, NULL, &ctx, &peer) == ILB_OK);

    /* Warnings of the configuration in force. */
    const char *warn = "[{\"name\":\"w\",\"load-balance\":\"least_conn\"}]";
    CHECK(ilb_core_apply_backends(core, (const uint8_t *)warn, strlen(warn), err, sizeof err, &err_len) == ILB_OK);
    CHECK(ilb_core_warnings(core, err, sizeof err, &err_len) == ILB_OK);
    CHECK(err_len == strlen(err) && strstr(err, "least_conn") != NULL);
    CHECK(ilb_core_warnings(core, NULL, 0, &err_len) == ILB_OK && err_len == 0);
    CHECK(ilb_core_warnings(core, NULL, 5, &err_len) == ILB_NULL_ARGUMENT);

    /* Off the caller's thread: started, busy, collected; a rejection by the
     * compilation; out-params untouched on failure. */
    ilb_apply_state state = (ilb_apply_state)99;
    CHECK(ilb_core_apply_backends_or_start(core, (const uint8_t *)GOOD, strlen(GOOD), 0, &state, err, sizeof err, &err_len) == ILB_OK);
    CHECK(state == ILB_APPLY_STARTED);
    CHECK(ilb_core_apply_backends_or_start(core, (const uint8_t *)GOOD, strlen(GOOD), 0, &state, err, sizeof err, &err_len) == ILB_OK);
    CHECK(state == ILB_APPLY_BUSY);
    for (int i = 0; i < 60000; i++) {
        CHECK(ilb_core_collect_backends(core, &state, err, sizeof err, &err_len) == ILB_OK);
        if (state != ILB_APPLY_RUNNING) break;
        nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = 1000000 }, NULL);
    }
    CHECK(state == ILB_APPLY_APPLIED);
    CHECK(ilb_core_has_backend(core, "web", 3) == ILB_OK && ilb_core_has_backend(core, "w", 1) == ILB_UNKNOWN_BACKEND);
    CHECK(ilb_core_collect_backends(core, &state, NULL, 0, NULL) == ILB_OK && state == ILB_APPLY_IDLE);
    CHECK(ilb_core_apply_backends_or_start(core, (const uint8_t *)bad, strlen(bad), 0, &state, err, sizeof err, &err_len) == ILB_OK);
    CHECK(state == ILB_APPLY_STARTED);
    ilb_result rc = ILB_OK;
    for (int i = 0; i < 60000; i++) {
        state = (ilb_apply_state)99;
        rc = ilb_core_collect_backends(core, &state, err, sizeof err, &err_len);
        if (rc != ILB_OK || state != ILB_APPLY_RUNNING) break;
        nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = 1000000 }, NULL);
    }
    CHECK(rc == ILB_CONFIG_REJECTED && state == (ilb_apply_state)99 && strstr(err, "endpoints[0].port") != NULL);
    CHECK(ilb_core_apply_backends_or_start(core, (const uint8_t *)GOOD, strlen(GOOD), 1 << 20, &state, err, sizeof err, &err_len) == ILB_OK);
    CHECK(state == ILB_APPLY_APPLIED);
    CHECK(ilb_core_apply_backends_or_start(core, (const uint8_t *)GOOD, strlen(GOOD), 0, NULL, err, sizeof err, &err_len) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_collect_backends(core, NULL, err, sizeof err, &err_len) == ILB_NULL_ARGUMENT);
    CHECK(ilb_core_collect_backends(NULL, &state, err, sizeof err, &err_len) == ILB_NULL_ARGUMENT);

    check_ewma_stats();
    check_state();
    CHECK(argc > 1);
    if (argc > 1) check_certificates(argv[1]);

    ilb_pick_ctx_init(NULL);
    ilb_core_free(core);
    ilb_core_free(NULL);
    if (failures == 0) printf("c abi: all checks passed\n");
    return failures == 0 ? 0 : 1;
}

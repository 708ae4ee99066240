/* A C program built against include/ingress_lb.h and linked to libingress_lb.so:
 * exercises every export as a C caller would. Exit status 0 = all checks passed. */
#define _POSIX_C_SOURCE 200809L /* fork, waitpid: the ewma statistics check */
#include <stdio.h>
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

int main(void) {
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

    check_ewma_stats();

    ilb_pick_ctx_init(NULL);
    ilb_core_free(core);
    ilb_core_free(NULL);
    if (failures == 0) printf("c abi: all checks passed\n");
    return failures == 0 ? 0 : 1;
}

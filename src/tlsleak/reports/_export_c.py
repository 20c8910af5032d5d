"""The C driver of standalone reproducers, for ``c:`` targets (the tls_init_once ABI).

``tlsleak export`` (:mod:`tlsleak.reports.export`) fills it in with
:func:`tlsleak.reports._export_templates.fill`: the blobs as arrays, the
library's default path and symbol, and for an allocation-failure finding
which allocation to fail (docs/c-abi.md, docs/export.md).  Its own malloc
family counts live blocks and fails that allocation, so the count is exact
(unlike ``mallinfo2``) and needs no preloaded library.
"""

from __future__ import annotations

from typing import Final

__all__ = ["C_DRIVER"]

C_DRIVER: Final = r"""/* Standalone reproducer: @@TITLE@@.
 *
 * Exported by tlsleak @@VERSION@@ from finding @@FINDING@@.  It loads the
 * library (first argument; default the one the finding came from), calls its
 * @@SYMBOL@@() on the blobs below ATTEMPTS times per round, and prints how
 * much the heap has grown since a warm-up: glibc's bytes in use (mallinfo2)
 * and live malloc blocks (counted by the wrappers below).  A leak grows every
 * round; correct code stays flat.  Exit status 1 when live blocks grew in
 * every round (a leak), 0 otherwise.  Linux and glibc (2.33 or later) only.
 *
 * With FAIL_FROM_END >= 0 (a finding that needs an allocation to fail), each
 * attempt makes one allocation fail: the one FAIL_FROM_END before the last
 * of a clean attempt, counted as tlsleak counts them (any malloc-family call
 * with a size, a realloc of NULL or one that grows the block).
 *
 *   cc -O1 -rdynamic -o reproduce reproduce.c -ldl
 *   ./reproduce [LIBRARY [ROUNDS [ATTEMPTS]]]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* The blobs of the finding (also in this folder as files). */
@@BLOBS@@
#define BLOB(b) ((b##_LEN) ? (b) : NULL), (b##_LEN)

/* This program's malloc family wraps glibc's, counts live blocks and
 * allocations, and can fail one allocation; the library and its OpenSSL use
 * it (the executable comes first in the dynamic linker's search). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
static long live_blocks, allocations, fail_at; /* fail_at: 0, or the allocation to fail */

static int inject(void) {
    long n = __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    if (fail_at == 0 || n != fail_at)
        return 0;
    errno = ENOMEM;
    return 1;
}
static void *counted(void *p) {
    if (p != NULL)
        __atomic_add_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
    return p;
}
void *malloc(size_t n) { return inject() ? NULL : counted(__libc_malloc(n)); }
void *calloc(size_t k, size_t n) { return inject() ? NULL : counted(__libc_calloc(k, n)); }
void *memalign(size_t a, size_t n) { return inject() ? NULL : counted(__libc_memalign(a, n)); }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    void *p = memalign(a, n);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}
void free(void *p) {
    if (p != NULL)
        __atomic_sub_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
    __libc_free(p);
}
void *realloc(void *p, size_t n) {
    if (p == NULL)
        return malloc(n);
    if (n > malloc_usable_size(p) && inject())
        return NULL; /* p is still there */
    void *q = __libc_realloc(p, n);
    if (n == 0 && q == NULL) /* glibc freed p */
        __atomic_sub_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
    return q;
}

static long heap_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return (long)(info.uordblks + info.hblkhd);
}

typedef int (*init_fn)(const unsigned char *, size_t, const unsigned char *, size_t,
                       const unsigned char *, size_t, int);
typedef const char *(*error_fn)(void);
static init_fn init;

/* One attempt; with fail_from_end >= 0, failing that allocation from the end. */
static int attempt(long fail_from_end, long clean_count) {
    __atomic_store_n(&allocations, 0, __ATOMIC_RELAXED);
    fail_at = fail_from_end >= 0 ? clean_count - fail_from_end : 0;
    int rc = init(BLOB(CA), BLOB(CERT), BLOB(KEY), IS_CLIENT);
    fail_at = 0;
    return rc;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 && argv[1][0] ? argv[1] : @@LIBRARY@@; /* "": the default */
    long rounds = argc > 2 ? atol(argv[2]) : 5;
    long attempts = argc > 3 ? atol(argv[3]) : 1000;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "reproduce: %s\n", dlerror());
        return 2;
    }
    init = (init_fn)dlsym(lib, "@@SYMBOL@@");
    error_fn last_error = (error_fn)dlsym(lib, "tls_last_error");
    if (init == NULL) {
        fprintf(stderr, "reproduce: %s has no @@SYMBOL@@\n", path);
        return 2;
    }
    printf("library: %s (%s mode)\n", path, IS_CLIENT ? "client" : "server");
    for (int i = 0; i < 200; i++) /* warm-up: one-time initialisation */
        attempt(-1, 0);
    attempt(-1, 0);
    long clean = allocations; /* what a clean attempt allocates */
    if (FAIL_FROM_END >= 0) {
        if (FAIL_FROM_END >= clean) {
            fprintf(stderr, "reproduce: a clean attempt makes %ld allocations, fewer than the "
                    "%d from the end to fail\n", clean, FAIL_FROM_END);
            return 2;
        }
        printf("failing allocation %ld of %ld in each attempt (tlsleak: %d of %d)\n",
               clean - FAIL_FROM_END, clean, TLSLEAK_FAIL_AT, TLSLEAK_WARMUP);
        for (int i = 0; i < 200; i++) /* the failure path's own one-time initialisation */
            attempt(FAIL_FROM_END, clean);
    }
    int rc = attempt(FAIL_FROM_END, clean);
    printf("outcome: returned %d%s%s\n", rc, last_error ? ": " : "",
           last_error ? last_error() : "");
    long heap0 = heap_in_use(), blocks0 = __atomic_load_n(&live_blocks, __ATOMIC_RELAXED);
    printf("growth since the warm-up (heap = mallinfo2 bytes in use; blocks = live mallocs):\n");
    printf("%5s %9s %12s %9s %12s %10s\n", "round", "attempts", "heap", "blocks", "heap/1000",
           "blocks/1000");
    long last = 0, blocks = 0;
    int grows = rounds > 0; /* a leak adds blocks every round */
    for (long r = 1; r <= rounds; r++) {
        for (long i = 0; i < attempts; i++)
            attempt(FAIL_FROM_END, clean);
        long done = r * attempts;
        long heap = heap_in_use() - heap0;
        blocks = __atomic_load_n(&live_blocks, __ATOMIC_RELAXED) - blocks0;
        grows = grows && blocks > last;
        last = blocks;
        printf("%5ld %9ld %+12ld %+9ld %+12ld %+10ld\n", r, done, heap, blocks,
               heap * 1000 / done, blocks * 1000 / done);
        fflush(stdout);
    }
    if (grows) {
        printf("verdict: grows every round (%+ld blocks per 1000 attempts): exit status 1\n",
               blocks * 1000 / (rounds * attempts));
        return 1;
    }
    printf("verdict: no steady growth: exit status 0\n");
    return 0;
}
"""

/*
 * libtlsleak_malloc: counts every heap block of the process, whoever allocates it.
 *
 * Loaded with LD_PRELOAD, it defines malloc, calloc, realloc, reallocarray,
 * free, memalign, aligned_alloc, posix_memalign, valloc and pvalloc, so every
 * caller in the process reaches them first: the system libcrypto, the OpenSSL
 * linked into cryptography's wheel, BoringSSL, mbedTLS, a C library's own
 * allocations, and glibc itself (its internal calls go through the same
 * symbols).  Each forwards to glibc's own implementation (__libc_malloc and
 * friends, which glibc exports for exactly this: no dlsym bootstrap, no
 * allocation before the real allocator is known) and counts.  Block sizes
 * come from malloc_usable_size, so no header is added and a pointer that
 * reached free without passing through here is still handled right.
 *
 * What is counted, per thread (see "Slots"):
 *
 *   blocks, bytes  live blocks and their usable bytes;
 *   allocs         allocation calls: a call that must get new memory (any
 *                  malloc-family call with a size, a realloc of NULL or one
 *                  that grows past the block's usable size).  A failed one
 *                  counts too, so a run without injection numbers its
 *                  allocations as tlsleak_malloc_fail_at() does.
 *
 * tlsleak_malloc_fail_at(k) makes the k-th allocation from then on, in any
 * thread, return NULL with errno ENOMEM, once.
 *
 * tlsleak_malloc_quiet_call wraps a Python callable (a fuzzer's coverage
 * hooks) so that the allocations made while it runs are neither numbered
 * nor failed (see "Quiet calls").
 *
 * tlsleak_malloc_sites_begin() records, until tlsleak_malloc_sites_end(),
 * the distinct call sites of allocations and how many each made (see
 * "Allocation sites"): coverage
 * for fuzzing C code that was built without any.
 *
 * Only the allocator symbols and the tlsleak_malloc_ API are exported (built
 * with -fvisibility=hidden).  Nothing here prints, and nothing here allocates.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define API __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* glibc's own allocator, exported under these names (GLIBC_2.2.5). */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t count, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);
extern void *__libc_valloc(size_t n);
extern void *__libc_pvalloc(size_t n);

/* ------------------------------------------------------------------------ */
/* Slots                                                                    */

/*
 * A thread takes a slot of its own on its first allocation and updates it
 * with plain loads and stores (relaxed atomics, no lock prefix): the hooks
 * cost a few adds.  A block freed on another thread than the one that made it
 * makes that thread's slot go down: only the sum over slots (the process)
 * means a live count, which is why the process scope is the default.
 * Slots are cache-line sized so that two threads never write one line.
 *
 * When a thread exits, a pthread key destructor folds its slot into `shared`
 * and recycles the slot.  `shared` also serves threads that find no free
 * slot, a thread's allocations after its slot was retired (later key
 * destructors still free memory), and allocations made while a slot is being
 * taken (the re-entrancy guard below): those update it with atomic adds.
 */
typedef struct {
    alignas(64) int64_t blocks;
    int64_t bytes;
    uint64_t allocs;
} slot;

#define MAX_SLOTS 256

static slot slots[MAX_SLOTS];
static slot shared;
static int slots_used;            /* high-water mark, under slots_lock */
static int free_slots[MAX_SLOTS]; /* recycled slot indexes, under slots_lock */
static int nfree;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t slot_key;
static int have_key;

/* Base of tlsleak_malloc_allocations(), moved by reset (under slots_lock). */
static uint64_t allocs_base;

/*
 * initial-exec: a TLS access is one %fs-relative load and never allocates
 * (a global-dynamic access may call malloc through __tls_get_addr, which
 * would re-enter the hooks before the slot exists).
 */
static __thread slot *my_slot __attribute__((tls_model("initial-exec")));

static slot *acquire_slot(void)
{
    /*
     * The re-entrancy guard: pthread_setspecific allocates the key's second
     * level array on some threads, which calls malloc, which would come back
     * here.  Until the slot is ready this thread counts in `shared`.
     */
    my_slot = &shared;
    slot *s = &shared;
    pthread_mutex_lock(&slots_lock);
    if (nfree > 0)
        s = &slots[free_slots[--nfree]];
    else if (slots_used < MAX_SLOTS)
        s = &slots[slots_used++];
    pthread_mutex_unlock(&slots_lock);
    /* Without the key the slot is never recycled, which keeps every count
     * right.  The main thread's destructor never runs (exit() does not run
     * key destructors), which is fine for the same reason. */
    if (s != &shared && have_key)
        pthread_setspecific(slot_key, s);
    my_slot = s;
    return s;
}

static void retire_slot(void *arg)
{
    slot *s = arg;
    my_slot = &shared; /* first: later hooks on this thread count in `shared` */
    pthread_mutex_lock(&slots_lock);
    __atomic_fetch_add(&shared.blocks, s->blocks, __ATOMIC_RELAXED);
    __atomic_fetch_add(&shared.bytes, s->bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&shared.allocs, s->allocs, __ATOMIC_RELAXED);
    __atomic_store_n(&s->blocks, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->allocs, 0, __ATOMIC_RELAXED);
    free_slots[nfree++] = (int)(s - slots);
    pthread_mutex_unlock(&slots_lock);
}

static inline slot *self_slot(void)
{
    slot *s = my_slot;
    return LIKELY(s != NULL) ? s : acquire_slot();
}

static inline void add(slot *s, int64_t blocks, int64_t bytes, uint64_t allocs)
{
    if (UNLIKELY(s == &shared)) {
        __atomic_fetch_add(&s->blocks, blocks, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->bytes, bytes, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->allocs, allocs, __ATOMIC_RELAXED);
        return;
    }
    /* Single writer: load, add, store; the relaxed store only keeps the
     * reader's concurrent load well defined. */
    __atomic_store_n(&s->blocks, s->blocks + blocks, __ATOMIC_RELAXED);
    __atomic_store_n(&s->bytes, s->bytes + bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&s->allocs, s->allocs + allocs, __ATOMIC_RELAXED);
}

/* Caller holds slots_lock.  Exact when no other thread allocates meanwhile. */
static void sum_slots(int64_t *blocks, int64_t *bytes, uint64_t *allocs)
{
    int64_t b = __atomic_load_n(&shared.blocks, __ATOMIC_RELAXED);
    int64_t n = __atomic_load_n(&shared.bytes, __ATOMIC_RELAXED);
    uint64_t a = __atomic_load_n(&shared.allocs, __ATOMIC_RELAXED);
    for (int i = 0; i < slots_used; i++) {
        b += __atomic_load_n(&slots[i].blocks, __ATOMIC_RELAXED);
        n += __atomic_load_n(&slots[i].bytes, __ATOMIC_RELAXED);
        a += __atomic_load_n(&slots[i].allocs, __ATOMIC_RELAXED);
    }
    *blocks = b;
    *bytes = n;
    *allocs = a;
}

/* ------------------------------------------------------------------------ */
/* Quiet calls                                                              */

/*
 * A fuzz worker's coverage hooks (atheris's _trace_branch, _trace_cmp, ...)
 * run inside the traced code of the target, in the middle of an attempt, and
 * allocate (pybind11 builds argument vectors with operator new on every call).
 * Those allocations are the fuzzer's, not the target's: numbered, they shift
 * the numbers of the target's own; failed, the hook returns NULL without an
 * exception or throws std::bad_alloc (a SystemError or a crash that is no bug
 * of the target's, and that no untraced replay reproduces).
 *
 * So the worker replaces each hook by a wrapper made from
 * tlsleak_malloc_quiet_call (a METH_FASTCALL function whose `self` is the
 * hook): while the hook runs, `quiet` is non-zero on its thread, and that
 * thread's allocations are not counted in `allocs`, never fail, and leave no
 * allocation site.  Their blocks and bytes are still counted: a block made
 * quiet and freed loud must balance.  Other threads are not affected.
 *
 * No Python header is needed: the wrapper calls the hook through
 * PyObject_VectorcallDict, whose address tlsleak_malloc_quiet_setup() is
 * given (from ctypes.pythonapi), and PyObject is opaque here.  A counter, not
 * a flag: a hook may run Python code whose own hooks nest.
 */
static __thread int quiet __attribute__((tls_model("initial-exec")));

typedef void *(*vectorcall_dict)(void *callable, void *const *args, size_t nargsf,
                                 void *kwargs);
static vectorcall_dict call_python;

/* 1 for an allocation that counts (this thread is not inside a quiet call). */
static inline uint64_t numbered(void) { return LIKELY(quiet == 0); }

/* ------------------------------------------------------------------------ */
/* Failure injection                                                        */

static uint64_t fail_target; /* k of fail_at(k); 0 when disarmed */
static uint64_t armed_count; /* allocations since arming, in every thread */
static uint64_t injected;    /* failures injected since the process started */

/*
 * Whether this allocation is the one to fail.  The counter is one atomic for
 * the whole process, so exactly one allocation, in whichever thread, sees it
 * reach k; that one disarms (one failure per fail_at).  Unarmed, this is one
 * relaxed load.  A quiet allocation is not one of the k.
 */
static inline int inject(void)
{
    uint64_t k = __atomic_load_n(&fail_target, __ATOMIC_ACQUIRE);
    if (LIKELY(k == 0))
        return 0;
    if (quiet)
        return 0;
    if (__atomic_add_fetch(&armed_count, 1, __ATOMIC_RELAXED) != k)
        return 0;
    __atomic_store_n(&fail_target, 0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&injected, 1, __ATOMIC_RELAXED);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Caller stacks (attribution)                                              */

/*
 * While attribution is on (the oracle's one extra replay of a confirmed
 * leak), every new block gets the return addresses of its allocation
 * (backtrace(3)), kept in a table keyed by the block's address until the
 * block is freed; tlsleak_malloc_stacks() then groups the live ones by stack
 * for tlsleak/ledgers/symbols.py to name.  Off, the table is empty and the
 * hooks pay one relaxed load each (`recording` on allocation, `stacks_len` on
 * free and realloc).
 *
 * Re-entrancy: glibc's backtrace loads libgcc_s on its first use, which
 * allocates; tlsleak_malloc_stacks_begin() calls it once outside any hook,
 * and `in_stack` makes an allocation made by backtrace itself go unrecorded.
 * The table's own memory comes from __libc_calloc, outside the hooks.  Open
 * addressing with linear probing and backward-shift deletion (no
 * tombstones); one mutex: a slow diagnostic mode.
 */
#ifndef STACK_DEPTH
#define STACK_DEPTH 18 /* 16 of the caller's frames, plus the interposer's own two */
#endif

typedef struct {
    void *p; /* NULL: empty */
    uint64_t size;
    uint64_t seq;
    int64_t depth;
    void *frames[STACK_DEPTH];
} stack_entry;

/* One group of tlsleak_malloc_stacks(): live blocks with one stack. */
typedef struct {
    uint64_t blocks;
    uint64_t bytes;
    uint64_t first; /* sequence number of the earliest of these blocks */
    int64_t depth;
    void *frames[STACK_DEPTH];
} stack_group;

static int recording;      /* attribution on: new blocks get a stack */
static uint64_t stacks_len; /* blocks in the table (read unlocked by the hooks) */
static stack_entry *stacks;
static size_t stacks_cap; /* power of two, or 0 */
static uint64_t stack_seq; /* last sequence number given out */
static pthread_mutex_t stacks_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int in_stack __attribute__((tls_model("initial-exec")));

static inline size_t stack_bucket(const void *p, size_t cap)
{
    /* Fibonacci hashing; the low 4 bits of a malloc pointer are always 0. */
    return (size_t)((((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL) >> 16) & (cap - 1);
}

/* Caller holds stacks_lock.  0 if the table could not grow (the block goes unnamed). */
static int stack_put(const stack_entry *e)
{
    if ((stacks_len + 1) * 2 > stacks_cap) {
        size_t cap = stacks_cap ? stacks_cap * 2 : 4096;
        stack_entry *t = __libc_calloc(cap, sizeof *t);
        if (t == NULL)
            return 0;
        for (size_t i = 0; i < stacks_cap; i++) {
            if (stacks[i].p == NULL)
                continue;
            size_t j = stack_bucket(stacks[i].p, cap);
            while (t[j].p != NULL)
                j = (j + 1) & (cap - 1);
            t[j] = stacks[i];
        }
        __libc_free(stacks);
        stacks = t;
        stacks_cap = cap;
    }
    size_t i = stack_bucket(e->p, stacks_cap);
    while (stacks[i].p != NULL && stacks[i].p != e->p)
        i = (i + 1) & (stacks_cap - 1);
    if (stacks[i].p == NULL)
        __atomic_store_n(&stacks_len, stacks_len + 1, __ATOMIC_RELAXED);
    stacks[i] = *e;
    return 1;
}

/* Caller holds stacks_lock.  Removes p and returns its entry (p NULL if absent). */
static stack_entry stack_take(const void *p)
{
    stack_entry out = {0};
    if (stacks_cap == 0)
        return out;
    size_t i = stack_bucket(p, stacks_cap);
    while (stacks[i].p != NULL && stacks[i].p != p)
        i = (i + 1) & (stacks_cap - 1);
    if (stacks[i].p == NULL)
        return out;
    out = stacks[i];
    __atomic_store_n(&stacks_len, stacks_len - 1, __ATOMIC_RELAXED);
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & (stacks_cap - 1);
        if (stacks[j].p == NULL)
            break;
        size_t home = stack_bucket(stacks[j].p, stacks_cap);
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        stacks[hole] = stacks[j];
        hole = j;
    }
    stacks[hole].p = NULL;
    return out;
}

/* A new block while attribution is on: keep its stack.  No caller can free p
 * before this returns (malloc has not returned it yet). */
__attribute__((noinline, cold)) static void stack_record(void *p, size_t size)
{
    if (in_stack)
        return; /* an allocation of backtrace() itself */
    stack_entry e;
    in_stack = 1;
    e.depth = backtrace(e.frames, STACK_DEPTH);
    in_stack = 0;
    e.p = p;
    e.size = size;
    pthread_mutex_lock(&stacks_lock);
    e.seq = ++stack_seq;
    stack_put(&e);
    pthread_mutex_unlock(&stacks_lock);
}

__attribute__((noinline, cold)) static void stack_forget(void *p)
{
    pthread_mutex_lock(&stacks_lock);
    stack_take(p);
    pthread_mutex_unlock(&stacks_lock);
}

/*
 * glibc's realloc, moving p's entry (stack, sequence number: it is still the
 * same block) to the new address.  The lock is held across the call: once
 * glibc has released the old address another thread may get it from malloc
 * and record it, and our entry for it must have left by then.
 */
static inline void *moving_realloc(void *p, size_t n)
{
    if (LIKELY(__atomic_load_n(&stacks_len, __ATOMIC_RELAXED) == 0))
        return __libc_realloc(p, n);
    pthread_mutex_lock(&stacks_lock);
    void *q = __libc_realloc(p, n);
    if (q != NULL || n == 0) { /* p is gone (moved, or freed by realloc(p, 0)) */
        stack_entry e = stack_take(p);
        if (q != NULL && e.p != NULL) {
            e.p = q;
            e.size = malloc_usable_size(q);
            stack_put(&e);
        }
    }
    pthread_mutex_unlock(&stacks_lock);
    return q;
}

/* ------------------------------------------------------------------------ */
/* Allocation sites (fuzz guidance)                                         */

/*
 * While site recording is on (a fuzz worker, one attempt at a time), every
 * allocation call notes where it came from, once per distinct
 * (site, caller, depth) in a fixed-size table the worker reads after the
 * attempt: which allocations a parser made says which of its paths an input
 * took, in code that has no coverage instrumentation of its own.
 *
 *   site    the return address of the malloc call: the allocating line.  When
 *           that is inside a registered allocator wrapper (OpenSSL's
 *           CRYPTO_malloc and CRYPTO_zalloc, strdup: every OpenSSL allocation
 *           would otherwise have one and the same site), the first frame
 *           above the wrappers instead, found with backtrace(3);
 *   caller  for such a site, the frame above it (generic helpers such as
 *           ASN1_STRING_set or the ASN.1 template code allocate for many
 *           callers); 0 for a direct malloc call, whose site says enough;
 *   depth   stack bytes between tlsleak_malloc_sites_begin() and the call,
 *           in SITE_DEPTH_UNIT steps, on the thread that began (SITE_OTHER
 *           elsewhere): a recursive-descent parser (ASN.1) allocates at the
 *           same site at every nesting level, and the depth says which.
 *
 * Cost: off, one relaxed load per allocation.  On, a hash and a probe; only
 * an allocation from a wrapper pays for a backtrace (a few microseconds).
 * The table is lock-free (a compare-and-swap claims an entry); entries past
 * three quarters of it are counted in `sites_lost`, not kept.
 */
#define SITES_CAP 8192 /* power of two */
#define SITES_MAX (SITES_CAP / 4 * 3)
#define SITE_FRAMES 7 /* this one, malloc, the shim, CRYPTO_malloc, CRYPTO_zalloc, site, caller */
#define SITE_DEPTH_UNIT 9 /* log2 of the depth step: 512 bytes */
#define SITE_OTHER 0xffffffffu
#define MAX_WRAPPERS 32

typedef struct {
    uint64_t key; /* 0: empty */
    uint64_t site;
    uint64_t caller;
    uint64_t depth;
    uint64_t hits; /* allocations made there this attempt */
} site_entry;

static int sites_on;
static site_entry site_table[SITES_CAP];
static uint32_t site_used[SITES_MAX]; /* indexes of claimed entries, in claim order */
static uint64_t sites_len;
static uint64_t sites_lost;
static uintptr_t sites_base; /* stack pointer of tlsleak_malloc_sites_begin()'s caller */
static __thread int sites_thread __attribute__((tls_model("initial-exec")));

/* [lo, hi) of each registered allocator wrapper (written before recording starts). */
static uintptr_t wrap_lo[MAX_WRAPPERS], wrap_hi[MAX_WRAPPERS];
static int nwrappers;

static inline int is_wrapper(uintptr_t a)
{
    for (int i = 0; i < nwrappers; i++)
        if (a > wrap_lo[i] && a <= wrap_hi[i]) /* a return address is past the call */
            return 1;
    return 0;
}

static void site_put(uint64_t site, uint64_t caller, uint64_t depth)
{
    uint64_t key = (site * 0x9E3779B97F4A7C15ULL) ^ (caller * 0xC2B2AE3D27D4EB4FULL) ^
                   (depth * 0x165667B19E3779F9ULL);
    key |= 1; /* never 0, which marks an empty entry */
    size_t i = (size_t)(key >> 17) & (SITES_CAP - 1);
    for (;;) {
        uint64_t seen = __atomic_load_n(&site_table[i].key, __ATOMIC_ACQUIRE);
        if (seen == key) { /* known (two sites whose keys collide merge: harmless) */
            __atomic_fetch_add(&site_table[i].hits, 1, __ATOMIC_RELAXED);
            return;
        }
        if (seen == 0) {
            if (__atomic_load_n(&sites_len, __ATOMIC_RELAXED) >= SITES_MAX) {
                __atomic_fetch_add(&sites_lost, 1, __ATOMIC_RELAXED);
                return; /* full: probes stay short */
            }
            if (__atomic_compare_exchange_n(&site_table[i].key, &seen, key, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                site_table[i].site = site;
                site_table[i].caller = caller;
                site_table[i].depth = depth;
                __atomic_store_n(&site_table[i].hits, 1, __ATOMIC_RELAXED);
                uint64_t n = __atomic_fetch_add(&sites_len, 1, __ATOMIC_RELEASE);
                if (n < SITES_MAX)
                    site_used[n] = (uint32_t)i;
                else /* another thread filled the list meanwhile: in the table, unlisted */
                    __atomic_fetch_add(&sites_lost, 1, __ATOMIC_RELAXED);
                return;
            }
            continue; /* another thread took this entry: look at it again */
        }
        i = (i + 1) & (SITES_CAP - 1);
    }
}

/*
 * Fast unwinding through wrappers, for the thread that began recording.
 * backtrace(3) interprets DWARF call-frame information frame by frame, and
 * an attempt makes thousands of allocations through CRYPTO_malloc.  But for
 * a given return address the distance from its stack slot to the slot of the
 * next return address up is fixed (the frame size of its function at that
 * instruction), so once learned from one backtrace, the next walk through the
 * same code is a few loads: `pc_offs` maps a return address to that distance
 * (or to "seen, distance unknown" for the last frame of a walk), and a key
 * with FIRST_SLOT set maps the malloc caller's return address to the distance
 * from site_note's frame to its slot.  Every value read on the fast path must
 * be a return address seen before in a real backtrace, and every slot below
 * sites_base (the recording thread's stack above the attempt), or the walk
 * falls back to backtrace(3) and learns.  A function whose frame size varies
 * (alloca) makes its walks fall back, never name a wrong site.
 * Written and read by the recording thread only; other threads backtrace.
 */
#define PC_CAP 8192 /* power of two */
#define PC_MAX (PC_CAP / 4 * 3)
#define FIRST_SLOT (1ULL << 63) /* user-space addresses never have it */
#define OFF_UNKNOWN INT64_MIN
#define OFF_ABSENT (INT64_MIN + 1)
#define SCAN_WORDS 2048 /* how far up one frame's return address is looked for */

typedef struct {
    uint64_t pc; /* 0: empty */
    int64_t off;
} pc_off;

static pc_off pc_offs[PC_CAP];
static size_t pc_len;

static inline size_t pc_bucket(uint64_t pc)
{
    return (size_t)((pc * 0x9E3779B97F4A7C15ULL) >> 40) & (PC_CAP - 1);
}

static int64_t off_get(uint64_t pc)
{
    for (size_t i = pc_bucket(pc);; i = (i + 1) & (PC_CAP - 1)) {
        if (pc_offs[i].pc == pc)
            return pc_offs[i].off;
        if (pc_offs[i].pc == 0)
            return OFF_ABSENT;
    }
}

/* Learn pc's distance; an unknown one never overwrites a known one. */
static void off_put(uint64_t pc, int64_t off)
{
    size_t i = pc_bucket(pc);
    while (pc_offs[i].pc != 0 && pc_offs[i].pc != pc)
        i = (i + 1) & (PC_CAP - 1);
    if (pc_offs[i].pc == 0) {
        if (pc_len >= PC_MAX)
            return; /* full: later walks of new code take the slow path */
        pc_len++;
        pc_offs[i].pc = pc;
    } else if (off == OFF_UNKNOWN) {
        return;
    }
    pc_offs[i].off = off;
}

/* The walk from `ra` (its slot found from site_note's frame `fp`) to the
 * first frame outside every wrapper and the one above it; 0 when unsure. */
static int fast_walk(uintptr_t ra, uintptr_t fp, uintptr_t *site, uintptr_t *caller)
{
    int64_t off = off_get(ra | FIRST_SLOT);
    if (off == OFF_ABSENT || off == OFF_UNKNOWN)
        return 0;
    uintptr_t slot = fp + (uintptr_t)off, pc = ra;
    if (slot >= sites_base || *(const uintptr_t *)slot != ra)
        return 0;
    while (is_wrapper(pc)) {
        off = off_get(pc);
        if (off == OFF_ABSENT || off == OFF_UNKNOWN || (slot += (uintptr_t)off) >= sites_base)
            return 0;
        pc = *(const uintptr_t *)slot;
    }
    off = off_get(pc);
    if (off == OFF_ABSENT || off == OFF_UNKNOWN || slot + (uintptr_t)off >= sites_base)
        return 0;
    uintptr_t up = *(const uintptr_t *)(slot + (uintptr_t)off);
    if (off_get(up) == OFF_ABSENT)
        return 0;
    *site = pc;
    *caller = up;
    return 1;
}

/* Where on the stack each of frames[from..n) sits, looking up from `slot`:
 * learn the distances between consecutive ones. */
static void learn(void *const *frames, int from, int n, uintptr_t fp)
{
    uintptr_t slot = fp, prev = 0;
    for (int k = from; k < n; k++) {
        uintptr_t want = (uintptr_t)frames[k], at = 0;
        for (uintptr_t a = slot + sizeof(void *), i = 0;
             i < SCAN_WORDS && a + sizeof(void *) <= sites_base; a += sizeof(void *), i++)
            if (*(const uintptr_t *)a == want) {
                at = a;
                break;
            }
        if (at == 0)
            return;
        if (k == from)
            off_put(want | FIRST_SLOT, (int64_t)(at - fp));
        else
            off_put((uintptr_t)frames[k - 1], (int64_t)(at - prev));
        off_put(want, OFF_UNKNOWN); /* seen: a value the fast walk may trust */
        prev = at;
        slot = at;
    }
}

__attribute__((noinline, cold)) static void site_note(void *ra)
{
    if (in_stack)
        return; /* an allocation of backtrace() itself */
    uintptr_t site = (uintptr_t)ra, caller = 0;
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    int mine = sites_thread && fp <= sites_base;
    if (is_wrapper(site) && !(mine && fast_walk((uintptr_t)ra, fp, &site, &caller))) {
        void *frames[SITE_FRAMES];
        in_stack = 1;
        int n = backtrace(frames, SITE_FRAMES);
        in_stack = 0;
        int i = 0;
        while (i < n && frames[i] != ra) /* the interposer's own frames */
            i++;
        int first = i;
        while (i < n && is_wrapper((uintptr_t)frames[i]))
            i++;
        if (i < n) {
            site = (uintptr_t)frames[i];
            caller = i + 1 < n ? (uintptr_t)frames[i + 1] : 0;
            if (mine && i + 1 < n)
                learn(frames, first, i + 2, fp);
        }
    }
    uint64_t depth = mine ? (sites_base - fp) >> SITE_DEPTH_UNIT : SITE_OTHER;
    site_put(site, caller, depth);
}

#define SITE(ra)                                                                    \
    do {                                                                            \
        if (UNLIKELY(__atomic_load_n(&sites_on, __ATOMIC_RELAXED)) && !quiet)       \
            site_note(ra);                                                          \
    } while (0)
#define RA __builtin_return_address(0)

/* ------------------------------------------------------------------------ */
/* The allocator                                                            */

/* Count a new block `p` (or a failed allocation, p NULL). */
static inline void *counted(void *p)
{
    slot *s = self_slot();
    if (LIKELY(p != NULL)) {
        size_t size = malloc_usable_size(p);
        add(s, 1, (int64_t)size, numbered());
        if (UNLIKELY(__atomic_load_n(&recording, __ATOMIC_RELAXED)))
            stack_record(p, size);
    } else {
        add(s, 0, 0, numbered());
    }
    return p;
}

/* An injected failure: counted as an allocation, NULL with ENOMEM. */
static void *failed(void)
{
    add(self_slot(), 0, 0, 1);
    errno = ENOMEM;
    return NULL;
}

/*
 * The exported entry points call these, never each other: a call between
 * two exported functions would go through the PLT and could reach another
 * preloaded allocator instead of this one.
 */
static void *do_malloc(size_t n, void *ra)
{
    SITE(ra);
    if (UNLIKELY(inject()))
        return failed();
    return counted(__libc_malloc(n));
}

static void *do_memalign(size_t align, size_t n, void *ra)
{
    SITE(ra);
    if (UNLIKELY(inject()))
        return failed();
    return counted(__libc_memalign(align, n));
}

static void *do_realloc(void *p, size_t n, void *ra)
{
    if (p == NULL)
        return do_malloc(n, ra);
    int64_t old = (int64_t)malloc_usable_size(p);
    if (n == 0) {
        /* glibc frees the block and returns NULL (REALLOC_ZERO_BYTES_FREES). */
        void *q = moving_realloc(p, 0);
        if (q == NULL)
            add(self_slot(), -1, -old, 0);
        else
            add(self_slot(), 0, (int64_t)malloc_usable_size(q) - old, 0);
        return q;
    }
    int grows = n > (size_t)old; /* a new allocation, numbered unless quiet */
    if (grows)
        SITE(ra);
    if (grows && UNLIKELY(inject()))
        return failed(); /* the old block is still there, still counted */
    void *q = moving_realloc(p, n);
    slot *s = self_slot();
    uint64_t counts = grows ? numbered() : 0;
    if (q == NULL)
        add(s, 0, 0, counts);
    else
        add(s, 0, (int64_t)malloc_usable_size(q) - old, counts);
    return q;
}

API void *malloc(size_t n) { return do_malloc(n, RA); }

API void *calloc(size_t count, size_t n)
{
    SITE(RA);
    if (UNLIKELY(inject()))
        return failed();
    return counted(__libc_calloc(count, n));
}

API void free(void *p)
{
    if (p == NULL)
        return;
    int64_t size = (int64_t)malloc_usable_size(p);
    if (UNLIKELY(__atomic_load_n(&stacks_len, __ATOMIC_RELAXED) != 0))
        stack_forget(p); /* out of the table before glibc may hand p out again */
    __libc_free(p);
    add(self_slot(), -1, -size, 0);
}

API void *realloc(void *p, size_t n) { return do_realloc(p, n, RA); }

API void *reallocarray(void *p, size_t count, size_t n)
{
    size_t total;
    if (__builtin_mul_overflow(count, n, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return do_realloc(p, total, RA);
}

API void *memalign(size_t align, size_t n) { return do_memalign(align, n, RA); }

/* C17 leaves a bad alignment to the implementation; glibc's own aligned_alloc
 * takes the same path as memalign, and so does this one. */
API void *aligned_alloc(size_t align, size_t n) { return do_memalign(align, n, RA); }

API int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL; /* checked first, as glibc does: not an allocation */
    int saved = errno; /* posix_memalign reports through its result, not errno */
    void *p = do_memalign(align, n, RA);
    errno = saved;
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

API void *valloc(size_t n)
{
    SITE(RA);
    if (UNLIKELY(inject()))
        return failed();
    return counted(__libc_valloc(n));
}

API void *pvalloc(size_t n)
{
    SITE(RA);
    if (UNLIKELY(inject()))
        return failed();
    return counted(__libc_pvalloc(n));
}

/* ------------------------------------------------------------------------ */
/* Installation                                                             */

/*
 * fork() from one thread while another holds slots_lock would leave the
 * child's copy locked for ever (the child's first new thread would block in
 * acquire_slot): hold it across the fork.
 */
static void before_fork(void)
{
    pthread_mutex_lock(&slots_lock);
    pthread_mutex_lock(&stacks_lock);
}

static void after_fork(void)
{
    pthread_mutex_unlock(&stacks_lock);
    pthread_mutex_unlock(&slots_lock);
}

__attribute__((constructor)) static void tlsleak_malloc_init(void)
{
    have_key = pthread_key_create(&slot_key, retire_slot) == 0;
    pthread_atfork(before_fork, after_fork, after_fork);
}

/* ------------------------------------------------------------------------ */
/* The API (for ctypes; see tlsleak/ledgers/interposer.py)                  */

/*
 * 1 if the process's malloc and free are this library's: it was preloaded
 * (or linked first).  Loaded later, with dlopen, it is mapped but every
 * caller already resolved malloc to glibc's, and it counts nothing.
 *
 * Tried, not compared: one block through the process's own malloc and free
 * must move this thread's counts.  (Comparing addresses does not work: in a
 * non-PIE executable, such as Debian's python3, the address of malloc is the
 * executable's PLT entry, whichever library's malloc that entry reaches.)
 */
API int tlsleak_malloc_active(void)
{
    void *(*process_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
    void (*process_free)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "free");
    if (process_malloc == NULL || process_free == NULL)
        return 0;
    slot *s = self_slot();
    int64_t before = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED);
    void *p = process_malloc(16);
    int64_t during = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED);
    process_free(p);
    int64_t after = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED);
    return p != NULL && during == before + 1 && after == before;
}

/* Live blocks and usable bytes: summed over every thread (thread == 0), or
 * the calling thread's own slot (thread != 0: allocated minus freed here). */
API void tlsleak_malloc_counts(int thread, int64_t *blocks, int64_t *bytes)
{
    if (thread) {
        slot *s = self_slot();
        *blocks = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED);
        *bytes = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
        return;
    }
    uint64_t allocs;
    pthread_mutex_lock(&slots_lock);
    sum_slots(blocks, bytes, &allocs);
    pthread_mutex_unlock(&slots_lock);
}

/* Allocation calls in every thread since the last reset. */
API uint64_t tlsleak_malloc_allocations(void)
{
    int64_t blocks, bytes;
    uint64_t allocs;
    pthread_mutex_lock(&slots_lock);
    sum_slots(&blocks, &bytes, &allocs);
    allocs -= allocs_base;
    pthread_mutex_unlock(&slots_lock);
    return allocs;
}

/* Restart tlsleak_malloc_allocations() at 0 (slots belong to their threads,
 * so this moves a base rather than clearing them). */
API void tlsleak_malloc_reset_allocations(void)
{
    int64_t blocks, bytes;
    uint64_t allocs;
    pthread_mutex_lock(&slots_lock);
    sum_slots(&blocks, &bytes, &allocs);
    allocs_base = allocs;
    pthread_mutex_unlock(&slots_lock);
}

/* Make the k-th allocation from now (1-based, any thread) fail, once; 0 disarms. */
API void tlsleak_malloc_fail_at(uint64_t k)
{
    __atomic_store_n(&fail_target, 0, __ATOMIC_RELAXED);
    if (k == 0)
        return;
    __atomic_store_n(&armed_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fail_target, k, __ATOMIC_RELEASE);
}

/* Failures injected since the process started. */
API uint64_t tlsleak_malloc_failed(void)
{
    return __atomic_load_n(&injected, __ATOMIC_RELAXED);
}

/* The address of the interpreter's PyObject_VectorcallDict, for quiet calls. */
API void tlsleak_malloc_quiet_setup(void *vectorcall) { call_python = (vectorcall_dict)vectorcall; }

/*
 * A Python function body (METH_FASTCALL; see "Quiet calls"): calls `self`
 * with the same arguments, quietly, and returns what it returns (NULL with
 * the exception set when it raised).  Used only after
 * tlsleak_malloc_quiet_setup(), which the Python side makes sure of.
 */
API void *tlsleak_malloc_quiet_call(void *self, void *const *args, ptrdiff_t nargs)
{
    quiet++;
    void *result = call_python(self, args, (size_t)nargs, NULL);
    quiet--;
    return result;
}

/* Whether this thread is inside a quiet call (for tests). */
API int tlsleak_malloc_quiet(void) { return quiet; }

/* ------------------------------------------------------------------------ */
/* Caller stacks API                                                        */

/* Start recording the stack of every new block; returns the mark to pass to
 * tlsleak_malloc_stacks() (blocks recorded from now on have greater ones). */
API uint64_t tlsleak_malloc_stacks_begin(void)
{
    void *warm[2];
    backtrace(warm, 2); /* loads libgcc_s (allocates) here, not inside a hook */
    pthread_mutex_lock(&stacks_lock);
    uint64_t mark = stack_seq;
    pthread_mutex_unlock(&stacks_lock);
    __atomic_store_n(&recording, 1, __ATOMIC_RELEASE);
    return mark;
}

/* Stop recording new stacks (recorded blocks stay until freed or cleared). */
API void tlsleak_malloc_stacks_end(void) { __atomic_store_n(&recording, 0, __ATOMIC_RELEASE); }

static int by_stack(const void *a, const void *b)
{
    const stack_entry *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth < y->depth ? -1 : 1;
    return memcmp(x->frames, y->frames, (size_t)x->depth * sizeof x->frames[0]);
}

/*
 * The blocks recorded after `mark` that are still live, grouped by stack,
 * in table order.  Writes up to `cap` groups to `out` and returns how many
 * there are (call again with a bigger buffer if that is more than cap), or
 * -1 if memory ran out.  Call it with recording off: it allocates.
 */
API int64_t tlsleak_malloc_stacks(uint64_t mark, stack_group *out, size_t cap)
{
    pthread_mutex_lock(&stacks_lock);
    size_t n = 0;
    stack_entry *all = __libc_malloc((stacks_len ? stacks_len : 1) * sizeof *all);
    if (all != NULL)
        for (size_t i = 0; i < stacks_cap; i++)
            if (stacks[i].p != NULL && stacks[i].seq > mark)
                all[n++] = stacks[i];
    pthread_mutex_unlock(&stacks_lock);
    if (all == NULL)
        return -1;
    qsort(all, n, sizeof *all, by_stack); /* may allocate: no lock held */
    int64_t groups = 0;
    stack_group g = {0};
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || by_stack(&all[i - 1], &all[i]) != 0) {
            if (i > 0 && (size_t)groups++ < cap)
                out[groups - 1] = g;
            g.blocks = 0;
            g.bytes = 0;
            g.first = all[i].seq;
            g.depth = all[i].depth;
            memcpy(g.frames, all[i].frames, sizeof g.frames);
        }
        g.blocks++;
        g.bytes += all[i].size;
        if (all[i].seq < g.first)
            g.first = all[i].seq;
    }
    if (n > 0 && (size_t)groups++ < cap)
        out[groups - 1] = g;
    __libc_free(all);
    return groups;
}

/* Forget every recorded stack: the hooks are back on their fast path. */
API void tlsleak_malloc_stacks_clear(void)
{
    pthread_mutex_lock(&stacks_lock);
    stack_entry *old = stacks;
    stacks = NULL;
    stacks_cap = 0;
    __atomic_store_n(&stacks_len, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&stacks_lock);
    __libc_free(old);
}

/* Frames kept per stack (the size of stack_group.frames). */
API int tlsleak_malloc_stack_depth(void) { return STACK_DEPTH; }

/* ------------------------------------------------------------------------ */
/* Allocation sites API                                                     */

/*
 * Treat [start, start + size) as an allocator wrapper: a site inside it is
 * replaced by its first caller outside every wrapper.  With size 0, the
 * extent is that of the function holding `start`, from the dynamic symbol
 * table (dladdr1).  1 if registered, 0 if the function has no sized symbol
 * or the list is full.  Call before recording starts.
 */
API int tlsleak_malloc_sites_wrap(void *start, size_t size)
{
    uintptr_t lo = (uintptr_t)start;
    if (size == 0) {
        Dl_info info;
        const ElfW(Sym) *sym = NULL;
        if (!dladdr1(start, &info, (void **)&sym, RTLD_DL_SYMENT) || sym == NULL ||
            sym->st_size == 0 || info.dli_saddr == NULL)
            return 0;
        lo = (uintptr_t)info.dli_saddr;
        size = sym->st_size;
    }
    for (int i = 0; i < nwrappers; i++)
        if (wrap_lo[i] == lo)
            return 1;
    if (nwrappers >= MAX_WRAPPERS)
        return 0;
    wrap_lo[nwrappers] = lo;
    wrap_hi[nwrappers] = lo + size;
    nwrappers++;
    return 1;
}

/* Forget the sites recorded so far and record from now on; depths are
 * measured from the caller's stack, on the caller's thread. */
API __attribute__((noinline)) void tlsleak_malloc_sites_begin(void)
{
    __atomic_store_n(&sites_on, 0, __ATOMIC_RELAXED);
    void *warm[2];
    backtrace(warm, 2); /* loads libgcc_s (allocates) here, not inside a hook */
    uint64_t n = __atomic_load_n(&sites_len, __ATOMIC_RELAXED);
    if (n > SITES_MAX) /* some claimed entries are unlisted */
        memset(site_table, 0, sizeof site_table);
    else
        for (uint64_t i = 0; i < n; i++)
            site_table[site_used[i]].key = 0;
    __atomic_store_n(&sites_len, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&sites_lost, 0, __ATOMIC_RELAXED);
    sites_base = (uintptr_t)__builtin_frame_address(0);
    sites_thread = 1;
    __atomic_store_n(&sites_on, 1, __ATOMIC_RELEASE);
}

/* Stop recording (what was recorded stays readable until the next begin). */
API void tlsleak_malloc_sites_end(void)
{
    __atomic_store_n(&sites_on, 0, __ATOMIC_RELEASE);
    sites_thread = 0;
}

/*
 * The distinct sites recorded since the last begin, in the order first seen:
 * up to `cap` (site, caller, depth, hits) quadruples to `out`.  Returns how
 * many there are; *lost gets how many more did not fit in the table.
 */
API int64_t tlsleak_malloc_sites(uint64_t *out, size_t cap, uint64_t *lost)
{
    uint64_t n = __atomic_load_n(&sites_len, __ATOMIC_ACQUIRE);
    if (n > SITES_MAX)
        n = SITES_MAX;
    for (uint64_t i = 0; i < n && i < cap; i++) {
        const site_entry *e = &site_table[site_used[i]];
        out[4 * i] = e->site;
        out[4 * i + 1] = e->caller;
        out[4 * i + 2] = e->depth;
        out[4 * i + 3] = __atomic_load_n(&e->hits, __ATOMIC_RELAXED);
    }
    *lost = __atomic_load_n(&sites_lost, __ATOMIC_RELAXED);
    return (int64_t)n;
}

/* libFuzzer's bucket of a hit count, 0 for one: 2, 3, 4-7, 8-15, 16-31, 32-127, 128+. */
static uint64_t hit_bucket(uint64_t hits)
{
    if (hits < 2)
        return 0;
    if (hits < 4)
        return hits;
    if (hits < 32)
        return (uint64_t)(64 - __builtin_clzll(hits)) + 1;
    return hits < 128 ? 7 : 8;
}

/* Per-site totals while tlsleak_malloc_sites_ids() reads (the reading thread only). */
static uint64_t total_site[SITES_CAP], total_hits[SITES_CAP];

/*
 * The same sites as tlsleak_malloc_sites(), in the same order, compactly: one
 * integer each to `ids`, up to `cap` of them.  Its high 60 bits are the
 * entry's key (the hash of (site, caller, depth) the table is keyed by: the
 * same for the life of the process), its low 4 bits the hit_bucket() of all
 * the allocations made at its site (over every caller and depth).  A fuzz
 * worker reads this after every attempt and asks tlsleak_malloc_sites() for
 * the full quadruples only when an id is new to it: an attempt's hundreds of
 * sites cost Python one list of integers, and no loop of its own.
 */
API int64_t tlsleak_malloc_sites_ids(uint64_t *ids, size_t cap)
{
    uint64_t n = __atomic_load_n(&sites_len, __ATOMIC_ACQUIRE);
    if (n > SITES_MAX)
        n = SITES_MAX;
    if (n > cap)
        n = cap;
    memset(total_site, 0, sizeof total_site);
    uint64_t *slot_of = ids; /* each entry's slot in the totals, until the ids replace it */
    for (uint64_t i = 0; i < n; i++) {
        const site_entry *e = &site_table[site_used[i]];
        size_t j = (size_t)((e->site * 0x9E3779B97F4A7C15ULL) >> 40) & (SITES_CAP - 1);
        while (total_site[j] != 0 && total_site[j] != e->site)
            j = (j + 1) & (SITES_CAP - 1);
        if (total_site[j] == 0) {
            total_site[j] = e->site;
            total_hits[j] = 0;
        }
        total_hits[j] += __atomic_load_n(&e->hits, __ATOMIC_RELAXED);
        slot_of[i] = j;
    }
    for (uint64_t i = 0; i < n; i++) {
        const site_entry *e = &site_table[site_used[i]];
        ids[i] = (e->key & ~(uint64_t)0xF) | hit_bucket(total_hits[slot_of[i]]);
    }
    return (int64_t)n;
}

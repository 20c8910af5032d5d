/*
 * libtlsleak_heap: counts the heap of the system libcrypto.
 *
 * Loaded with LD_PRELOAD, its constructor hands OpenSSL our malloc, realloc
 * and free (CRYPTO_set_mem_functions).  OpenSSL accepts that only before its
 * first allocation in the process, which a preloaded library's constructor
 * always precedes; loaded any later (ctypes after `import ssl`), OpenSSL
 * refuses and tlsleak_heap_installed() says so.
 *
 * Three modes, all switched at run time by the Python side (tlsleak.ledgers.shim):
 *
 *   counting     always on: live blocks and bytes, and allocations since the
 *                last reset.  Per-thread counters, so the hooks cost a few
 *                plain adds (the GIL is released inside _ssl, so the hooks do
 *                run on several threads at once).
 *   attribution  off by default: also a table of live blocks with the file and
 *                line OpenSSL passes and a sequence number, to say which
 *                blocks allocated since a mark are still live, by call site.
 *   injection    off by default: the k-th allocation after arming fails.
 *
 * Nothing here prints: the shim runs inside the program under test.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * OpenSSL is found at run time, not at build time: building needs a C
 * compiler only, not the OpenSSL headers and link library (libssl-dev), which
 * most machines that run Python lack.  These are the memory-function types of
 * OpenSSL 1.1.1 and 3.x (CRYPTO_malloc_fn and friends in <openssl/crypto.h>),
 * unchanged between them.
 */
typedef void *(*ossl_malloc_fn)(size_t num, const char *file, int line);
typedef void *(*ossl_realloc_fn)(void *addr, size_t num, const char *file, int line);
typedef void (*ossl_free_fn)(void *addr, const char *file, int line);
typedef int (*ossl_set_mem_fn)(ossl_malloc_fn, ossl_realloc_fn, ossl_free_fn);
typedef void (*ossl_get_mem_fn)(ossl_malloc_fn *, ossl_realloc_fn *, ossl_free_fn *);

/* The system libcrypto's, by soname: the one the ssl module and C libraries load. */
static const char *const libcrypto_names[] = {"libcrypto.so.3", "libcrypto.so.1.1",
                                              "libcrypto.so"};
static ossl_set_mem_fn set_mem_functions;
static ossl_get_mem_fn get_mem_functions;

/* Only the tlsleak_heap_ API is exported (built with -fvisibility=hidden). */
#define API __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------------------ */
/* Block header                                                             */

/*
 * Every block we hand out is preceded by this header, so free() knows the
 * size without a table lookup.  16 bytes keeps the user pointer at malloc's
 * own alignment (16 on x86-64 and aarch64).  The tag tells our blocks from a
 * pointer that did not come from us (defensive: if OpenSSL ever frees memory
 * it got from plain malloc, we pass it to libc instead of corrupting the
 * heap) and whether the block is in the attribution table.
 */
typedef struct {
    uint64_t size;
    uint64_t tag;
} header;

_Static_assert(sizeof(header) == 16, "the header must be 16 bytes");
_Static_assert(sizeof(header) % alignof(max_align_t) == 0,
               "the header must keep malloc's alignment");

#define TAG_PLAIN 0x746c736c65616b30ULL   /* "tlsleak0": ours, untracked  */
#define TAG_TRACKED 0x746c736c65616b31ULL /* "tlsleak1": ours, in table   */

static inline header *header_of(void *p) { return (header *)p - 1; }

/* ------------------------------------------------------------------------ */
/* Per-thread counters                                                      */

/*
 * Each thread gets a slot of its own on its first allocation and updates it
 * with plain loads and stores (relaxed atomic stores, which compile to plain
 * moves: no lock prefix).  An atomic add on shared counters cost 10-25% of an
 * SSLContext init; this costs next to nothing.  A free on another thread than
 * the allocation simply makes that thread's slot negative: only the sum means
 * anything.  A slot is cache-line sized so two threads never share a line.
 *
 * When a thread exits, a pthread key destructor folds its slot into `shared`
 * and frees the slot for the next thread.  `shared` also serves threads that
 * find no free slot, and a thread's allocations after its slot was retired
 * (OpenSSL's own thread-exit cleanup may run after ours): those update it
 * with atomic adds.
 */
typedef struct {
    alignas(64) int64_t blocks;
    int64_t bytes;
    uint64_t allocs; /* counted allocations (see "The hooks") */
} slot;

#define MAX_SLOTS 256

static slot slots[MAX_SLOTS];
static slot shared;
static int slots_used;              /* high-water mark, under slots_lock */
static int free_slots[MAX_SLOTS];   /* recycled slot indexes, under slots_lock */
static int nfree;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t slot_key;
static int have_key;

/*
 * initial-exec: a TLS access is one %fs-relative load instead of a call to
 * __tls_get_addr.  Fine for a preloaded library; a late dlopen (ctypes) takes
 * these 8 bytes from glibc's static TLS reserve.
 */
static __thread slot *my_slot __attribute__((tls_model("initial-exec")));

/* Base of tlsleak_heap_allocations(), moved by reset (under slots_lock). */
static uint64_t allocs_base;

static slot *acquire_slot(void)
{
    slot *s = &shared;
    pthread_mutex_lock(&slots_lock);
    if (nfree > 0)
        s = &slots[free_slots[--nfree]];
    else if (slots_used < MAX_SLOTS)
        s = &slots[slots_used++];
    pthread_mutex_unlock(&slots_lock);
    /*
     * Without the key we never learn that the thread exited: the slot then
     * stays in use for good, which keeps every count right but is never
     * recycled.  The main thread's destructor never runs at all (exit() does
     * not run key destructors), which is fine for the same reason.
     */
    if (s != &shared && have_key)
        pthread_setspecific(slot_key, s);
    my_slot = s;
    return s;
}

static void retire_slot(void *arg)
{
    slot *s = arg;
    pthread_mutex_lock(&slots_lock);
    __atomic_fetch_add(&shared.blocks, s->blocks, __ATOMIC_RELAXED);
    __atomic_fetch_add(&shared.bytes, s->bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&shared.allocs, s->allocs, __ATOMIC_RELAXED);
    __atomic_store_n(&s->blocks, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->allocs, 0, __ATOMIC_RELAXED);
    free_slots[nfree++] = (int)(s - slots);
    pthread_mutex_unlock(&slots_lock);
    my_slot = &shared; /* later hooks on this thread count in `shared` */
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
     * reader's concurrent load well-defined.  The ifs let a constant zero
     * argument (a free adds no allocation) compile to nothing. */
    if (blocks)
        __atomic_store_n(&s->blocks, s->blocks + blocks, __ATOMIC_RELAXED);
    if (bytes)
        __atomic_store_n(&s->bytes, s->bytes + bytes, __ATOMIC_RELAXED);
    if (allocs)
        __atomic_store_n(&s->allocs, s->allocs + allocs, __ATOMIC_RELAXED);
}

/* Sum of every slot.  Exact when no other thread is allocating meanwhile. */
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
/* Modes                                                                    */

#define MODE_ATTRIBUTION 1
#define MODE_ARMED 2

/* One word tested on every hook: zero means the fast path. */
static int mode;

static int installed;
static uint64_t fail_target;  /* k of fail_at(k); 0 when disarmed */
static uint64_t armed_count;  /* allocations since arming */
static uint64_t injected;     /* failures injected so far */
static uint64_t foreign;      /* pointers freed/realloc'd that were not ours */

/*
 * Whether this allocation is the one to fail.  Exactly one thread sees the
 * counter reach k; it disarms (injection is one-shot: one failure per
 * fail_at, so a sweep over k meets each allocation site alone).
 */
static int inject(void)
{
    uint64_t k = __atomic_load_n(&fail_target, __ATOMIC_ACQUIRE);
    if (k == 0)
        return 0;
    if (__atomic_add_fetch(&armed_count, 1, __ATOMIC_RELAXED) != k)
        return 0;
    __atomic_store_n(&fail_target, 0, __ATOMIC_RELAXED);
    __atomic_fetch_and(&mode, ~MODE_ARMED, __ATOMIC_RELAXED);
    __atomic_fetch_add(&injected, 1, __ATOMIC_RELAXED);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Attribution table                                                        */

/*
 * Open addressing with linear probing, keyed by the user pointer; deletion
 * shifts the following entries back, so there are no tombstones.  One mutex:
 * attribution is a slow diagnostic mode.  Only blocks allocated while
 * attribution is on go in (their header says TAG_TRACKED), and they come out
 * when freed even if attribution was switched off meanwhile, so the table
 * never holds a stale pointer.  The table's own memory comes from libc, not
 * from the hooks.
 */
typedef struct {
    void *p; /* NULL: empty */
    const char *file;
    int line;
    uint64_t size;
    uint64_t seq;
} entry;

static entry *table;
static size_t table_cap; /* power of two, or 0 */
static size_t table_len;
static uint64_t seq_counter; /* last sequence number given out */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static inline size_t bucket(const void *p, size_t cap)
{
    /* Fibonacci hashing; the low 4 bits of a malloc pointer are always 0. */
    return (size_t)((((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL) >> 16) & (cap - 1);
}

static int table_grow(void)
{
    size_t cap = table_cap ? table_cap * 2 : 4096;
    entry *t = calloc(cap, sizeof *t);
    if (t == NULL)
        return 0;
    for (size_t i = 0; i < table_cap; i++) {
        if (table[i].p == NULL)
            continue;
        size_t j = bucket(table[i].p, cap);
        while (t[j].p != NULL)
            j = (j + 1) & (cap - 1);
        t[j] = table[i];
    }
    free(table);
    table = t;
    table_cap = cap;
    return 1;
}

/* Caller holds table_lock.  Returns 0 if the table could not grow. */
static int table_put(const entry *e)
{
    if ((table_len + 1) * 2 > table_cap && !table_grow())
        return 0;
    size_t i = bucket(e->p, table_cap);
    while (table[i].p != NULL && table[i].p != e->p)
        i = (i + 1) & (table_cap - 1);
    if (table[i].p == NULL)
        table_len++;
    table[i] = *e;
    return 1;
}

/* Caller holds table_lock.  Removes p and returns its entry (p NULL if absent). */
static entry table_take(const void *p)
{
    entry out = {0};
    if (table_cap == 0)
        return out;
    size_t i = bucket(p, table_cap);
    while (table[i].p != NULL && table[i].p != p)
        i = (i + 1) & (table_cap - 1);
    if (table[i].p == NULL)
        return out;
    out = table[i];
    table_len--;
    /* Backward-shift deletion: pull later entries of the run into the hole
     * unless their home bucket lies cyclically in (hole, j]. */
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & (table_cap - 1);
        if (table[j].p == NULL)
            break;
        size_t home = bucket(table[j].p, table_cap);
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        table[hole] = table[j];
        hole = j;
    }
    table[hole].p = NULL;
    return out;
}

/* ------------------------------------------------------------------------ */
/* The hooks                                                                */

/*
 * They keep OpenSSL's own semantics (crypto/mem.c): malloc(0) returns NULL,
 * realloc(NULL, n) is malloc, realloc(p, 0) frees and returns NULL, free(NULL)
 * does nothing.  free(NULL) and realloc(NULL, n) do reach the hooks (hundreds
 * of times per SSL_CTX); malloc(0) and realloc(p, 0) were not seen.
 *
 * An "allocation", for tlsleak_heap_allocations() and fail_at(), is a call
 * that must get new memory: malloc(n > 0), realloc(NULL, n > 0), and a
 * realloc that grows the block.  A failed one (injected or real) counts too,
 * so the numbering of a run without injection is the numbering fail_at uses.
 *
 * malloc and free run some 8,000 times each per certificate-and-key load, so
 * each has a fast path of a few instructions (own slot, no mode, our plain
 * block) and leaves everything else to a cold out-of-line function, which
 * keeps the fast path free of register saves.
 */

/* n - 1 < MAX_REQUEST: n is neither 0 nor so large that the header overflows. */
#define MAX_REQUEST (SIZE_MAX - sizeof(header))

static void hook_free(void *p, const char *file, int line);

__attribute__((noinline, cold)) static void *malloc_slow(size_t n, const char *file, int line)
{
    if (n == 0)
        return NULL;
    slot *s = self_slot();
    int m = __atomic_load_n(&mode, __ATOMIC_RELAXED);
    if ((m & MODE_ARMED) && inject()) {
        add(s, 0, 0, 1);
        return NULL;
    }
    header *h = n <= MAX_REQUEST ? malloc(sizeof(header) + n) : NULL;
    if (h == NULL) {
        add(s, 0, 0, 1);
        return NULL;
    }
    h->size = n;
    h->tag = TAG_PLAIN;
    if (m & MODE_ATTRIBUTION) {
        entry e = {h + 1, file, line, n, 0};
        pthread_mutex_lock(&table_lock);
        e.seq = __atomic_add_fetch(&seq_counter, 1, __ATOMIC_RELAXED);
        if (table_put(&e))
            h->tag = TAG_TRACKED;
        pthread_mutex_unlock(&table_lock);
    }
    add(s, 1, (int64_t)n, 1);
    return h + 1;
}

static void *hook_malloc(size_t n, const char *file, int line)
{
    slot *s = my_slot;
    if (UNLIKELY(s == NULL || s == &shared || n - 1 >= MAX_REQUEST ||
                 __atomic_load_n(&mode, __ATOMIC_RELAXED) != 0))
        return malloc_slow(n, file, line);
    header *h = malloc(sizeof(header) + n);
    if (UNLIKELY(h == NULL)) {
        add(s, 0, 0, 1); /* a failed allocation is still one */
        return NULL;
    }
    h->size = n;
    h->tag = TAG_PLAIN;
    add(s, 1, (int64_t)n, 1);
    return h + 1;
}

__attribute__((noinline, cold)) static void free_slow(void *p)
{
    header *h = header_of(p);
    uint64_t tag = h->tag;
    if (tag != TAG_PLAIN && tag != TAG_TRACKED) {
        free(p); /* not ours (see header) */
        __atomic_fetch_add(&foreign, 1, __ATOMIC_RELAXED);
        return;
    }
    if (tag == TAG_TRACKED) {
        /* Out of the table before libc may hand the address out again. */
        pthread_mutex_lock(&table_lock);
        table_take(p);
        pthread_mutex_unlock(&table_lock);
    }
    add(self_slot(), -1, -(int64_t)h->size, 0);
    free(h);
}

static void hook_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p == NULL)
        return;
    header *h = header_of(p);
    slot *s = my_slot;
    if (UNLIKELY(h->tag != TAG_PLAIN || s == NULL || s == &shared)) {
        free_slow(p);
        return;
    }
    add(s, -1, -(int64_t)h->size, 0);
    free(h);
}

/* realloc of a pointer that is not ours: move it into a block of ours. */
static void *foreign_realloc(void *p, size_t n, const char *file, int line)
{
    void *q = hook_malloc(n, file, line);
    if (q == NULL)
        return NULL;
    size_t have = malloc_usable_size(p);
    memcpy(q, p, have < n ? have : n);
    free(p);
    __atomic_fetch_add(&foreign, 1, __ATOMIC_RELAXED);
    return q;
}

static void *hook_realloc(void *p, size_t n, const char *file, int line)
{
    if (p == NULL)
        return hook_malloc(n, file, line);
    if (n == 0) {
        hook_free(p, file, line);
        return NULL;
    }
    header *h = header_of(p);
    uint64_t tag = h->tag;
    if (UNLIKELY(tag != TAG_PLAIN && tag != TAG_TRACKED))
        return foreign_realloc(p, n, file, line);
    if (UNLIKELY(n > MAX_REQUEST))
        return NULL;
    uint64_t old = h->size;
    uint64_t grows = n > old;
    slot *s = self_slot();
    if (UNLIKELY(grows && (__atomic_load_n(&mode, __ATOMIC_RELAXED) & MODE_ARMED) &&
                 inject())) {
        add(s, 0, 0, 1);
        return NULL;
    }
    header *nh;
    if (UNLIKELY(tag == TAG_TRACKED)) {
        /*
         * Hold the table lock across realloc: once libc has released the old
         * address another thread may get it from malloc and enter it in the
         * table, which our entry for it must have left by then.  The block
         * keeps its sequence number and allocation site: it is still the
         * same block, only its size changed.
         */
        pthread_mutex_lock(&table_lock);
        nh = realloc(h, sizeof(header) + n);
        if (nh != NULL) {
            entry e = table_take(p);
            if (e.p != NULL) {
                e.p = nh + 1;
                e.size = n;
                if (!table_put(&e))
                    nh->tag = TAG_PLAIN;
            }
        }
        pthread_mutex_unlock(&table_lock);
    } else {
        nh = realloc(h, sizeof(header) + n);
    }
    if (UNLIKELY(nh == NULL)) {
        add(s, 0, 0, grows); /* the old block is still there, still counted */
        return NULL;
    }
    nh->size = n; /* the tag moved with the contents */
    add(s, 0, (int64_t)n - (int64_t)old, grows);
    return nh + 1;
}

/* ------------------------------------------------------------------------ */
/* Installation                                                             */

/*
 * fork() from one thread while another holds one of our locks would leave the
 * child's copy locked for ever (multiprocessing's fork start method runs
 * Python, and so OpenSSL, in the child): hold both across the fork.
 */
static void before_fork(void)
{
    pthread_mutex_lock(&slots_lock);
    pthread_mutex_lock(&table_lock);
}

static void after_fork(void)
{
    pthread_mutex_unlock(&table_lock);
    pthread_mutex_unlock(&slots_lock);
}

/*
 * Load the system libcrypto (RTLD_GLOBAL: everyone who loads it later gets
 * this instance) and find its memory-function setters.  0 when there is none.
 */
static int find_libcrypto(void)
{
    for (size_t i = 0; i < sizeof libcrypto_names / sizeof *libcrypto_names; i++) {
        void *lib = dlopen(libcrypto_names[i], RTLD_NOW | RTLD_GLOBAL);
        if (lib == NULL)
            continue;
        set_mem_functions = (ossl_set_mem_fn)dlsym(lib, "CRYPTO_set_mem_functions");
        get_mem_functions = (ossl_get_mem_fn)dlsym(lib, "CRYPTO_get_mem_functions");
        if (set_mem_functions != NULL && get_mem_functions != NULL)
            return 1;
    }
    set_mem_functions = NULL;
    get_mem_functions = NULL;
    return 0;
}

__attribute__((constructor)) static void tlsleak_heap_init(void)
{
    if (!find_libcrypto())
        return; /* no OpenSSL on this machine: the ledger says it is blind */
    if (set_mem_functions(hook_malloc, hook_realloc, hook_free) != 1)
        return; /* OpenSSL already allocated: it keeps its own functions */
    installed = 1;
    have_key = pthread_key_create(&slot_key, retire_slot) == 0;
    pthread_atfork(before_fork, after_fork, after_fork);
}

/* ------------------------------------------------------------------------ */
/* The API (for ctypes; see tlsleak/native.py)                              */

typedef struct {
    const char *file; /* as OpenSSL passed it (a string literal in libcrypto), or NULL */
    int64_t line;
    int64_t blocks;
    int64_t bytes;
    uint64_t first; /* sequence number of the earliest of these blocks */
} tlsleak_heap_site;

/* 1 if OpenSSL took our hooks and still has them, else 0. */
API int tlsleak_heap_installed(void)
{
    if (!installed)
        return 0;
    ossl_malloc_fn m;
    ossl_realloc_fn r;
    ossl_free_fn f;
    get_mem_functions(&m, &r, &f);
    return m == hook_malloc && r == hook_realloc && f == hook_free;
}

/* The path of the libcrypto whose heap is counted (for diagnostics), or NULL. */
API const char *tlsleak_heap_libcrypto(void)
{
    Dl_info info;
    if (set_mem_functions == NULL || dladdr((void *)set_mem_functions, &info) == 0)
        return NULL;
    return info.dli_fname;
}

/* Live blocks and their requested bytes (headers not included). */
API void tlsleak_heap_counts(int64_t *blocks, int64_t *bytes)
{
    uint64_t allocs;
    pthread_mutex_lock(&slots_lock);
    sum_slots(blocks, bytes, &allocs);
    pthread_mutex_unlock(&slots_lock);
}

/* Counted allocations since the last tlsleak_heap_reset_allocations(). */
API uint64_t tlsleak_heap_allocations(void)
{
    int64_t blocks, bytes;
    uint64_t allocs;
    pthread_mutex_lock(&slots_lock);
    sum_slots(&blocks, &bytes, &allocs);
    allocs -= allocs_base;
    pthread_mutex_unlock(&slots_lock);
    return allocs;
}

/* Restart tlsleak_heap_allocations() at 0.  Slots belong to their threads,
 * so this moves a base rather than clearing them. */
API void tlsleak_heap_reset_allocations(void)
{
    int64_t blocks, bytes;
    uint64_t allocs;
    pthread_mutex_lock(&slots_lock);
    sum_slots(&blocks, &bytes, &allocs);
    allocs_base = allocs;
    pthread_mutex_unlock(&slots_lock);
}

/* Make the k-th allocation from now (1-based) fail, once; 0 disarms. */
API void tlsleak_heap_fail_at(uint64_t k)
{
    __atomic_store_n(&fail_target, 0, __ATOMIC_RELEASE);
    __atomic_fetch_and(&mode, ~MODE_ARMED, __ATOMIC_RELAXED);
    if (k == 0)
        return;
    __atomic_store_n(&armed_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fail_target, k, __ATOMIC_RELEASE);
    __atomic_fetch_or(&mode, MODE_ARMED, __ATOMIC_RELAXED);
}

/* Failures injected since the process started. */
API uint64_t tlsleak_heap_failed(void)
{
    return __atomic_load_n(&injected, __ATOMIC_RELAXED);
}

/* Frees and reallocs of pointers that were not ours (expected: 0). */
API uint64_t tlsleak_heap_foreign(void)
{
    return __atomic_load_n(&foreign, __ATOMIC_RELAXED);
}

/* Switch attribution on (nonzero) or off.  Off does not forget tracked blocks:
 * they leave the table when freed. */
API void tlsleak_heap_set_attribution(int on)
{
    if (on)
        __atomic_fetch_or(&mode, MODE_ATTRIBUTION, __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&mode, ~MODE_ATTRIBUTION, __ATOMIC_RELAXED);
}

/* The last sequence number given out: blocks allocated after this call (with
 * attribution on) have greater ones. */
API uint64_t tlsleak_heap_mark(void)
{
    return __atomic_load_n(&seq_counter, __ATOMIC_RELAXED);
}

static int by_site(const void *a, const void *b)
{
    const tlsleak_heap_site *x = a, *y = b;
    if (x->file != y->file) {
        int c = strcmp(x->file ? x->file : "", y->file ? y->file : "");
        if (c != 0)
            return c;
    }
    return (x->line > y->line) - (x->line < y->line);
}

static int by_bytes_desc(const void *a, const void *b)
{
    const tlsleak_heap_site *x = a, *y = b;
    if (x->bytes != y->bytes)
        return (x->bytes < y->bytes) - (x->bytes > y->bytes);
    return by_site(a, b);
}

/*
 * The tracked blocks allocated after `seq` that are still live, grouped by
 * (file, line), largest byte total first, each with the sequence number of
 * its earliest block (what was lost first names a leak; sizes vary).  Writes
 * up to `cap` sites to `out`
 * and returns how many sites there are (call again with a bigger buffer if
 * that is more than cap), or -1 if out of memory.  Fills a buffer rather than
 * calling back: a callback would run Python while we hold table_lock, and a
 * thread that holds the GIL and allocates through OpenSSL would deadlock.
 */
API int64_t tlsleak_heap_sites_since(uint64_t seq, tlsleak_heap_site *out, size_t cap)
{
    pthread_mutex_lock(&table_lock);
    size_t n = 0;
    tlsleak_heap_site *all = malloc((table_len ? table_len : 1) * sizeof *all);
    if (all == NULL) {
        pthread_mutex_unlock(&table_lock);
        return -1;
    }
    for (size_t i = 0; i < table_cap; i++) {
        const entry *e = &table[i];
        if (e->p != NULL && e->seq > seq)
            all[n++] = (tlsleak_heap_site){e->file, e->line, 1, (int64_t)e->size, e->seq};
    }
    pthread_mutex_unlock(&table_lock);

    qsort(all, n, sizeof *all, by_site);
    size_t groups = 0;
    for (size_t i = 0; i < n; i++) {
        if (groups > 0 && by_site(&all[groups - 1], &all[i]) == 0) {
            all[groups - 1].blocks += 1;
            all[groups - 1].bytes += all[i].bytes;
            if (all[i].first < all[groups - 1].first)
                all[groups - 1].first = all[i].first;
        } else {
            all[groups++] = all[i];
        }
    }
    qsort(all, groups, sizeof *all, by_bytes_desc);
    if (out != NULL)
        memcpy(out, all, (groups < cap ? groups : cap) * sizeof *all);
    free(all);
    return (int64_t)groups;
}

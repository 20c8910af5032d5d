/* Control: crashes and hangs on cue, for the worker process that must survive
 * them.  Identical to control_fixed.c, except at the certificate step: a cert
 * blob starting with the bytes "CRASH" dereferences NULL (SIGSEGV), one
 * starting with "HANG" never returns.  Never load it into a process you want
 * to keep.
 */
#include "control.h"

static int starts_with(const unsigned char *blob, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && memcmp(blob, prefix, n) == 0;
}

static void on_cue(const unsigned char *cert, size_t cert_len) {
    if (starts_with(cert, cert_len, "CRASH")) {
        /* Volatile twice.  The pointer: a store through a literal NULL may be
         * compiled into a trap instruction (SIGILL), not a real SIGSEGV.  The
         * int: GCC deletes a plain store through a pointer it proved points
         * to nothing, as dead (seen at -O1). */
        volatile int *volatile nowhere = NULL;
        *nowhere = 1;
    }
    if (starts_with(cert, cert_len, "HANG")) {
        /* A busy loop with a side effect the compiler must keep: a parser
         * stuck in a loop, deaf to everything but a fatal signal. */
        volatile unsigned long spins = 0;
        for (;;)
            spins++;
    }
}

CONTROL_EXPORT int tls_init_once(const unsigned char *ca, size_t ca_len,
                                 const unsigned char *cert, size_t cert_len,
                                 const unsigned char *key, size_t key_len, int is_client) {
    int refused = check_blobs(ca, ca_len, cert, cert_len, key, key_len);
    if (refused)
        return refused;
    struct tls *tls = calloc(1, sizeof *tls);
    if (tls == NULL) {
        snprintf(last_error, sizeof last_error, "init: out of memory");
        return 1;
    }
    tls->ctx = SSL_CTX_new(is_client ? TLS_client_method() : TLS_server_method());
    if (tls->ctx == NULL) {
        note_failure("context", "SSL_CTX_new failed");
        goto fail;
    }
    tls->ssl = SSL_new(tls->ctx);
    if (tls->ssl == NULL) {
        note_failure("connection", "SSL_new failed");
        goto fail;
    }
    if (ca_len && !load_ca(tls, ca, ca_len))
        goto fail;
    on_cue(cert, cert_len);
    if (!load_identity(tls, cert, cert_len, key, key_len))
        goto fail;
    teardown(tls);
    note_success();
    return 0;
fail:
    teardown(tls);
    return 1;
}

/* Control: a crash that only a failed allocation late in the path reaches.
 * Identical to control_fixed.c, except that a failed init also keeps its
 * error text in a log the library formats through a memory BIO, and that
 * BIO_new is not checked: when it returns NULL, BIO_get_mem_ptr leaves the
 * buffer pointer NULL and the library reads through it (SIGSEGV).
 *
 * Every input that is refused gets there, at the very end of its run (the
 * failed step's error path, just before the teardown), but BIO_new on a
 * working heap never fails: only making one of its own allocations fail does.
 * A few allocations follow it (the log's buffer), so the last allocation of
 * the run is not one of them.
 */
#include "control.h"

#include <openssl/buffer.h>

/* The last failure's log line, as a library would keep it for its users. */
static _Thread_local char failure_log[512];

static void log_failure(void) {
    BIO *log = BIO_new(BIO_s_mem()); /* the bug: NULL is not checked */
    BUF_MEM *text = NULL;
    BIO_printf(log, "tls_init_once failed: %s", last_error);
    BIO_get_mem_ptr(log, &text);
    snprintf(failure_log, sizeof failure_log, "%.*s", (int)text->length, text->data);
    BIO_free(log);
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
    if (!load_identity(tls, cert, cert_len, key, key_len))
        goto fail;
    teardown(tls);
    note_success();
    return 0;
fail:
    log_failure();
    ERR_clear_error(); /* a log line that could not be written is no error of init */
    teardown(tls);
    return 1;
}

/* Control: no leak, but two ways of leaving stale errors on OpenSSL's queue.
 *
 * 1. A CA bundle that does not parse is dropped silently: init goes on
 *    without it (and may succeed), and the parse errors stay queued.
 * 2. Successful loads leave what OpenSSL queued while succeeding (a
 *    certificate with a malformed extension: X509_STORE_add_cert returns 1
 *    and queues "invalid certificate"): the success path never clears.
 * Failures of the certificate and key steps are handled carefully (their
 * errors are cleared, see note_failure in control.h), so what is left always
 * comes from one of the two causes above.  tlsleak must tell them as error-
 * queue findings, without splitting them by what the parser said.
 */
#include "control.h"

/* Like load_ca, but a CA that does not parse is skipped, errors and all. */
static void load_ca_or_drop_it(struct tls *tls, const unsigned char *ca, size_t len) {
    X509_STORE *store = SSL_CTX_get_cert_store(tls->ctx);
    struct blocks b;
    const unsigned char *block;
    size_t n;
    blocks_start(&b, ca, len);
    while (blocks_next(&b, &block, &n)) {
        X509 *x509 = read_x509(block, n);
        if (x509 == NULL)
            return; /* cause 1: the bundle is dropped, its errors stay queued */
        X509_STORE_add_cert(store, x509);
        X509_free(x509);
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
    tls->ssl = tls->ctx ? SSL_new(tls->ctx) : NULL;
    if (tls->ssl == NULL) {
        note_failure("context", "SSL_CTX_new or SSL_new failed");
        teardown(tls);
        return 1;
    }
    if (ca_len)
        load_ca_or_drop_it(tls, ca, ca_len);
    int ok = load_identity(tls, cert, cert_len, key, key_len);
    teardown(tls);
    /* cause 2: no note_success() - whatever succeeding calls queued stays */
    return ok ? 0 : 1;
}

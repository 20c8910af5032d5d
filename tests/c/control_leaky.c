/* Control: the Mongoose bug.  Makes the SSL_CTX and the SSL first, then loads
 * the CA, certificate (+chain) and key, and checks the pair.  On ANY failure it
 * frees only its own small struct: the SSL_CTX and the SSL, with everything
 * attached to them, are lost on every failed attempt.
 */
#include "control.h"

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
    free(tls); /* the bug: tls->ssl and tls->ctx are never freed */
    return 1;
}

/* Control: the same init path as control_leaky.c, fixed: every failure goes
 * through the full teardown (SSL_free, SSL_CTX_free, free).
 *
 * Built with -DCONTROL_KEEP_ERRORS it also leaves OpenSSL's errors queued on
 * failure (see control.h): no leak, only a dirty error queue.
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
    teardown(tls); /* SSL_free and SSL_CTX_free take NULL */
    return 1;
}

/* Control: a leak that only an allocation failure can reach.  Identical to
 * control_fixed.c except for the branch taken when SSL_new returns NULL: it
 * frees the struct but forgets the SSL_CTX.  SSL_new on a valid context fails
 * only when memory runs out, so no input, however malformed, gets there: only
 * failing an allocation inside SSL_new does.
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
        free(tls); /* the bug: tls->ctx is lost */
        return 1;
    }
    if (ca_len && !load_ca(tls, ca, ca_len))
        goto fail;
    if (!load_identity(tls, cert, cert_len, key, key_len))
        goto fail;
    teardown(tls);
    note_success();
    return 0;
fail:
    teardown(tls);
    return 1;
}

/* Control: the pass-phrase prompt.  The init path of control_fixed.c (no
 * leak), except that it reads the key with neither a password callback nor a
 * password: PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL).  OpenSSL then
 * falls back to its default callback, which prints "Enter PEM pass phrase:"
 * on the terminal (or stderr when there is none) and waits for someone to
 * type, for every encrypted key it is given.
 *
 * Built with -DCONTROL_NO_PROMPT it is the fixed twin: a callback that
 * answers with no password, so an encrypted key fails to load, quietly.
 */
#pragma GCC diagnostic ignored "-Wunused-function" /* control.h's load_identity, read_key */
#include "control.h"

#ifdef CONTROL_NO_PROMPT
/* No password to give: 0 bytes, and OpenSSL fails the read instead of asking. */
static int no_pass_phrase(char *buf, int size, int rwflag, void *userdata) {
    (void)buf; (void)size; (void)rwflag; (void)userdata;
    return 0;
}
#define PASS_PHRASE_CALLBACK no_pass_phrase
#else
#define PASS_PHRASE_CALLBACK NULL /* the bug: OpenSSL's default callback prompts */
#endif

static int load_key_as_given(struct tls *tls, const unsigned char *key, size_t len) {
    BIO *bio = BIO_new_mem_buf(key, (int)len);
    if (bio == NULL) {
        note_failure("key", "out of memory");
        return 0;
    }
    EVP_PKEY *pkey = is_pem(key, len) ? PEM_read_bio_PrivateKey(bio, NULL, PASS_PHRASE_CALLBACK, NULL)
                                      : d2i_PrivateKey_bio(bio, NULL);
    BIO_free(bio);
    if (pkey == NULL) {
        note_failure("key", "cannot parse private key");
        return 0;
    }
    int used = SSL_use_PrivateKey(tls->ssl, pkey);
    EVP_PKEY_free(pkey);
    if (used != 1) {
        note_failure("key", "private key refused");
        return 0;
    }
    return 1;
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
    if (cert_len && !load_cert(tls, cert, cert_len))
        goto fail;
    if (key_len && !load_key_as_given(tls, key, key_len))
        goto fail;
    if ((cert_len || key_len) && !check_key(tls))
        goto fail;
    teardown(tls);
    note_success();
    return 0;
fail:
    teardown(tls);
    return 1;
}

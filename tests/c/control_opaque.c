/* Control: a correct TLS library whose failures say nothing, like Mongoose's TLS init.
 *
 * It loads the CA, certificate (and chain) and key through OpenSSL, with
 * allocations of its own that depend on the input's structure: a PEM
 * block's label is copied, a DER blob is copied before parsing, a chain
 * grows an array, an encrypted key gets a pass phrase buffer, every CA's
 * subject is kept while it is added.  It frees everything on every path
 * (no leak: campaigns on it only explore), and on every rejection it clears
 * OpenSSL's error queue and reports one generic text with no step, as
 * Mongoose does: tlsleak sees the same "init rejected" whatever failed, so
 * error-pair guidance is blind here and only the allocations tell paths
 * apart (tlsleak.fuzz.guidance, allocation sites).
 */
#define _GNU_SOURCE /* memmem, strndup */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define EXPORT __attribute__((visibility("default")))

static _Thread_local const char *last_error = "";

EXPORT const char *tls_last_error(void) { return last_error; }

static const char BEGIN[] = "-----BEGIN ";
#define BEGIN_LEN (sizeof BEGIN - 1)

struct tls {
    SSL_CTX *ctx;
    SSL *ssl;
    X509 **chain; /* extra certificates, grown one at a time */
    size_t nchain;
};

/* The generic failure: whatever went wrong, the caller learns only this (1: rejected). */
static int fail(void)
{
    ERR_clear_error();
    last_error = "TLS initialisation failed";
    return 1;
}

static int is_pem(const unsigned char *p, size_t n) { return memmem(p, n, BEGIN, BEGIN_LEN) != NULL; }

/* The label of the PEM block at p ("CERTIFICATE"), copied; NULL if malformed. */
static char *pem_label(const unsigned char *p, size_t n)
{
    const unsigned char *from = p + BEGIN_LEN, *end = p + n;
    const unsigned char *dash = memchr(from, '-', (size_t)(end - from));
    if (dash == NULL || dash == from)
        return NULL;
    return strndup((const char *)from, (size_t)(dash - from));
}

/* Parse one certificate: PEM through a labelled block, DER through a private copy. */
static X509 *parse_cert(const unsigned char *p, size_t n)
{
    X509 *x509 = NULL;
    if (is_pem(p, n)) {
        const unsigned char *b = memmem(p, n, BEGIN, BEGIN_LEN);
        char *label = pem_label(b, n - (size_t)(b - p));
        if (label == NULL)
            return NULL;
        if (strcmp(label, "CERTIFICATE") == 0 || strcmp(label, "X509 CERTIFICATE") == 0 ||
            strcmp(label, "TRUSTED CERTIFICATE") == 0) {
            BIO *bio = BIO_new_mem_buf(b, (int)(n - (size_t)(b - p)));
            if (bio != NULL)
                x509 = strcmp(label, "TRUSTED CERTIFICATE") == 0
                           ? PEM_read_bio_X509_AUX(bio, NULL, NULL, "")
                           : PEM_read_bio_X509(bio, NULL, NULL, "");
            BIO_free(bio);
        }
        free(label);
        return x509;
    }
    unsigned char *copy = malloc(n);
    if (copy == NULL)
        return NULL;
    memcpy(copy, p, n);
    const unsigned char *q = copy;
    x509 = d2i_X509(NULL, &q, (long)n);
    free(copy);
    return x509;
}

/* The next PEM block of a blob (or the whole DER blob once): 0 when done. */
static int next_block(const unsigned char **at, const unsigned char *end, int pem,
                      const unsigned char **block, size_t *len)
{
    if (*at == NULL || *at >= end)
        return 0;
    *block = *at;
    if (!pem) {
        *len = (size_t)(end - *at);
        *at = NULL;
        return 1;
    }
    const unsigned char *from = *at + BEGIN_LEN;
    const unsigned char *after = memmem(from, (size_t)(end - from), BEGIN, BEGIN_LEN);
    *len = (size_t)((after ? after : end) - *at);
    *at = after;
    return 1;
}

static int load_ca(struct tls *tls, const unsigned char *ca, size_t len)
{
    X509_STORE *store = SSL_CTX_get_cert_store(tls->ctx);
    int pem = is_pem(ca, len);
    const unsigned char *at = pem ? memmem(ca, len, BEGIN, BEGIN_LEN) : ca, *block;
    size_t n;
    while (next_block(&at, ca + len, pem, &block, &n)) {
        X509 *x509 = parse_cert(block, n);
        if (x509 == NULL)
            return 0;
        /* Kept while the CA is added, as a library that logs what it trusts. */
        char *subject = X509_NAME_oneline(X509_get_subject_name(x509), NULL, 0);
        int added = X509_STORE_add_cert(store, x509);
        OPENSSL_free(subject);
        X509_free(x509);
        if (added != 1)
            return 0;
    }
    return 1;
}

static int load_cert(struct tls *tls, const unsigned char *cert, size_t len)
{
    int pem = is_pem(cert, len);
    const unsigned char *at = pem ? memmem(cert, len, BEGIN, BEGIN_LEN) : cert, *block;
    size_t n;
    if (!next_block(&at, cert + len, pem, &block, &n))
        return 0;
    X509 *leaf = parse_cert(block, n);
    if (leaf == NULL)
        return 0;
    int used = SSL_use_certificate(tls->ssl, leaf);
    X509_free(leaf);
    if (used != 1)
        return 0;
    while (next_block(&at, cert + len, pem, &block, &n)) {
        X509 **grown = realloc(tls->chain, (tls->nchain + 1) * sizeof *grown);
        if (grown == NULL)
            return 0;
        tls->chain = grown;
        X509 *extra = parse_cert(block, n);
        if (extra == NULL)
            return 0;
        tls->chain[tls->nchain++] = extra;
    }
    return 1;
}

static int load_key(struct tls *tls, const unsigned char *key, size_t len)
{
    EVP_PKEY *pkey = NULL;
    if (is_pem(key, len)) {
        int encrypted = memmem(key, len, "ENCRYPTED", 9) != NULL;
        /* An encrypted key gets the (empty) pass phrase the library was configured with. */
        char *pass = encrypted ? strdup("") : NULL;
        if (encrypted && pass == NULL)
            return 0;
        BIO *bio = BIO_new_mem_buf(key, (int)len);
        if (bio != NULL)
            pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, encrypted ? pass : "");
        BIO_free(bio);
        free(pass);
    } else {
        unsigned char *copy = malloc(len);
        if (copy == NULL)
            return 0;
        memcpy(copy, key, len);
        const unsigned char *q = copy;
        pkey = d2i_AutoPrivateKey(NULL, &q, (long)len);
        free(copy);
    }
    if (pkey == NULL)
        return 0;
    int used = SSL_use_PrivateKey(tls->ssl, pkey);
    EVP_PKEY_free(pkey);
    return used == 1 && SSL_check_private_key(tls->ssl) == 1;
}

static void teardown(struct tls *tls)
{
    for (size_t i = 0; i < tls->nchain; i++)
        X509_free(tls->chain[i]);
    free(tls->chain);
    SSL_free(tls->ssl);
    SSL_CTX_free(tls->ctx);
    free(tls);
}

EXPORT int tls_init_once(const unsigned char *ca, size_t ca_len, const unsigned char *cert,
                         size_t cert_len, const unsigned char *key, size_t key_len, int is_client)
{
    last_error = "";
    if ((ca == NULL && ca_len) || (cert == NULL && cert_len) || (key == NULL && key_len))
        return -1;
    struct tls *tls = NULL;
    if (ca_len > INT_MAX || cert_len > INT_MAX || key_len > INT_MAX ||
        (tls = calloc(1, sizeof *tls)) == NULL)
        return fail();
    tls->ctx = SSL_CTX_new(is_client ? TLS_client_method() : TLS_server_method());
    tls->ssl = tls->ctx ? SSL_new(tls->ctx) : NULL;
    int ok = tls->ssl != NULL && (!ca_len || load_ca(tls, ca, ca_len)) &&
             (!cert_len || load_cert(tls, cert, cert_len)) &&
             (!key_len || load_key(tls, key, key_len));
    teardown(tls);
    if (!ok)
        return fail();
    ERR_clear_error(); /* success can leave errors queued too */
    return 0;
}

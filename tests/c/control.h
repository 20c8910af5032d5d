/* Shared by the C control libraries: how they read blobs and report errors.
 *
 * Each control_*.c file holds its own tls_init_once(), because the failure
 * handling there is what differs (and what the tests are about).  The parsing
 * here mirrors tlsleak's Python control targets (src/tlsleak/targets/_blobs.py):
 * a blob holding "-----BEGIN" anywhere is PEM and is cut before each BEGIN
 * line, text before the first is dropped; any other blob is one DER object.
 *
 * Error queue: a careful library copies what it needs for its own message,
 * then clears the queue, so the next unrelated OpenSSL call in the thread
 * does not fail with a stale error.  Built with -DCONTROL_KEEP_ERRORS, the
 * controls skip the clearing: the tests use that build to prove that errors
 * left queued are seen.
 */
#ifndef TLSLEAK_CONTROL_H
#define TLSLEAK_CONTROL_H

#define _GNU_SOURCE /* memmem */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define CONTROL_EXPORT __attribute__((visibility("default")))

/* The library's own per-connection struct: all that the leaky control frees. */
struct tls {
    SSL_CTX *ctx;
    SSL *ssl;
};

/* The text tls_last_error() returns: why the last call in this thread failed. */
static _Thread_local char last_error[256];

CONTROL_EXPORT const char *tls_last_error(void) { return last_error; }

/* Record the step and what failed, with OpenSSL's newest error if any, then
 * clear the queue (the message is all the caller gets). */
static void note_failure(const char *step, const char *what) {
    unsigned long e = ERR_peek_last_error();
    const char *lib = e ? ERR_lib_error_string(e) : NULL;
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (e)
        snprintf(last_error, sizeof last_error, "%s: %s (%s: %s)", step, what,
                 lib ? lib : "unknown library", reason ? reason : "unknown reason");
    else
        snprintf(last_error, sizeof last_error, "%s: %s", step, what);
#ifndef CONTROL_KEEP_ERRORS
    ERR_clear_error();
#endif
}

/* Success: OpenSSL can leave errors queued even when every call succeeded
 * (X509_STORE_add_cert on a certificate with a malformed extension queues
 * "invalid certificate" and returns 1), so a careful library clears the
 * queue on this path too. */
static void note_success(void) {
#ifndef CONTROL_KEEP_ERRORS
    ERR_clear_error();
#endif
}

static const char PEM_BEGIN[] = "-----BEGIN";
#define PEM_BEGIN_LEN (sizeof PEM_BEGIN - 1)

/* Walks the objects of a blob: each PEM block in turn, or the whole DER blob once. */
struct blocks {
    const unsigned char *next; /* NULL when done */
    const unsigned char *end;
    int pem;
};

static int is_pem(const unsigned char *blob, size_t len) {
    return memmem(blob, len, PEM_BEGIN, PEM_BEGIN_LEN) != NULL;
}

static void blocks_start(struct blocks *b, const unsigned char *blob, size_t len) {
    b->end = blob + len;
    b->pem = is_pem(blob, len);
    b->next = b->pem ? memmem(blob, len, PEM_BEGIN, PEM_BEGIN_LEN) : blob;
}

static int blocks_next(struct blocks *b, const unsigned char **block, size_t *len) {
    if (b->next == NULL)
        return 0;
    *block = b->next;
    if (!b->pem) {
        *len = (size_t)(b->end - b->next);
        b->next = NULL;
        return 1;
    }
    const unsigned char *from = b->next + PEM_BEGIN_LEN;
    const unsigned char *after = memmem(from, (size_t)(b->end - from), PEM_BEGIN, PEM_BEGIN_LEN);
    *len = (size_t)((after ? after : b->end) - b->next);
    b->next = after;
    return 1;
}

/* An empty pass phrase as the PEM readers' userdata: with a NULL callback,
 * OpenSSL uses it as the password, so an encrypted block fails to decrypt.
 * With NULL userdata too, OpenSSL would prompt on the terminal (or read
 * stdin) - a library must never do that. */
static char no_password[] = "";

/* One certificate from one block (the BIO over the caller's bytes is always freed). */
static X509 *read_x509(const unsigned char *block, size_t len) {
    BIO *bio = BIO_new_mem_buf(block, (int)len);
    if (bio == NULL)
        return NULL;
    X509 *x509 = is_pem(block, len) ? PEM_read_bio_X509(bio, NULL, NULL, no_password)
                                    : d2i_X509_bio(bio, NULL);
    BIO_free(bio);
    return x509;
}

/* The private key from a whole blob (PEM readers skip blocks of other types). */
static EVP_PKEY *read_key(const unsigned char *blob, size_t len) {
    BIO *bio = BIO_new_mem_buf(blob, (int)len);
    if (bio == NULL)
        return NULL;
    EVP_PKEY *pkey = is_pem(blob, len) ? PEM_read_bio_PrivateKey(bio, NULL, NULL, no_password)
                                       : d2i_PrivateKey_bio(bio, NULL);
    BIO_free(bio);
    return pkey;
}

/* Every certificate of the CA blob into the context's verify store. */
static int load_ca(struct tls *tls, const unsigned char *ca, size_t len) {
    X509_STORE *store = SSL_CTX_get_cert_store(tls->ctx);
    struct blocks b;
    const unsigned char *block;
    size_t n;
    blocks_start(&b, ca, len);
    while (blocks_next(&b, &block, &n)) {
        X509 *x509 = read_x509(block, n);
        if (x509 == NULL) {
            note_failure("ca", "cannot parse CA certificate");
            return 0;
        }
        int added = X509_STORE_add_cert(store, x509);
        X509_free(x509); /* the store took its own reference */
        if (added != 1) {
            note_failure("ca", "cannot add CA certificate");
            return 0;
        }
    }
    return 1;
}

/* The leaf onto the connection; any further PEM certificates become the chain. */
static int load_cert(struct tls *tls, const unsigned char *cert, size_t len) {
    struct blocks b;
    const unsigned char *block;
    size_t n;
    blocks_start(&b, cert, len);
    if (!blocks_next(&b, &block, &n))
        return 1; /* unreachable: a non-empty blob has a first block */
    X509 *leaf = read_x509(block, n);
    if (leaf == NULL) {
        note_failure("certificate", "cannot parse certificate");
        return 0;
    }
    int used = SSL_use_certificate(tls->ssl, leaf);
    X509_free(leaf);
    if (used != 1) {
        note_failure("certificate", "certificate refused");
        return 0;
    }
    while (blocks_next(&b, &block, &n)) {
        X509 *extra = read_x509(block, n);
        if (extra == NULL) {
            note_failure("chain", "cannot parse chain certificate");
            return 0;
        }
        if (SSL_CTX_add_extra_chain_cert(tls->ctx, extra) != 1) {
            X509_free(extra); /* ownership passes only on success */
            note_failure("chain", "chain certificate refused");
            return 0;
        }
    }
    return 1;
}

static int load_key(struct tls *tls, const unsigned char *key, size_t len) {
    EVP_PKEY *pkey = read_key(key, len);
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

static int check_key(struct tls *tls) {
    if (SSL_check_private_key(tls->ssl) != 1) {
        note_failure("check-key", "key does not match the certificate");
        return 0;
    }
    return 1;
}

/* The steps after the CA, the same in every control: the certificate (and
 * chain), the key, and the check that they match.  1 when all went well, 0
 * with the failure noted (what to free then is each control's own choice). */
static int load_identity(struct tls *tls, const unsigned char *cert, size_t cert_len,
                         const unsigned char *key, size_t key_len) {
    if (cert_len && !load_cert(tls, cert, cert_len))
        return 0;
    if (key_len && !load_key(tls, key, key_len))
        return 0;
    if ((cert_len || key_len) && !check_key(tls))
        return 0;
    return 1;
}

/* The full teardown: connection, context, then the struct. */
static void teardown(struct tls *tls) {
    SSL_free(tls->ssl);
    SSL_CTX_free(tls->ctx);
    free(tls);
}

/* The ABI passes an empty blob as NULL with length 0; anything else with a
 * NULL pointer is a mistake of the caller (the harness), not bad input. */
static int blob_ok(const unsigned char *blob, size_t len) {
    return blob != NULL || len == 0;
}

/* OpenSSL's memory BIOs take an int length. */
static int blob_fits(size_t len) { return len <= (size_t)INT_MAX; }

/* Common entry checks: -1 for a harness error, 1 for a refused input, 0 to go on. */
static int check_blobs(const unsigned char *ca, size_t ca_len, const unsigned char *cert,
                       size_t cert_len, const unsigned char *key, size_t key_len) {
    last_error[0] = '\0';
    if (!blob_ok(ca, ca_len) || !blob_ok(cert, cert_len) || !blob_ok(key, key_len)) {
        snprintf(last_error, sizeof last_error, "init: NULL blob with a non-zero length");
        return -1;
    }
    if (!blob_fits(ca_len) || !blob_fits(cert_len) || !blob_fits(key_len)) {
        snprintf(last_error, sizeof last_error, "init: blob larger than INT_MAX bytes");
        return 1;
    }
    return 0;
}

#endif

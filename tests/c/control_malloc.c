/* Control: a TLS library with no OpenSSL at all, whose init path leaks plain malloc blocks.
 *
 * Like an embedded stack with a parser of its own (a built-in TLS, mbedTLS):
 * it copies each blob into a buffer of its own, then checks each copy
 * (PEM: every block has a BEGIN and END line and a base64 body; DER: one
 * SEQUENCE whose length is the blob's).  On a failure the leaky build frees
 * only its own struct: the copies are lost, on every failed attempt.  Built
 * with -DCONTROL_FIXED it frees everything on every path.
 *
 * No OpenSSL ledger can see it (it calls no libcrypto, and is built without
 * one): only the process heap (the `heap` ledger) does.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

static _Thread_local char last_error[128];

EXPORT const char *tls_last_error(void) { return last_error; }

struct tls {
    unsigned char *ca, *cert, *key;
};

static const char BEGIN[] = "-----BEGIN ";
static const char END[] = "-----END ";

static int base64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '=';
}

/* Each PEM block: a BEGIN line, a body of base64 and blanks whose length is
 * a multiple of 4, an END line. */
static int pem_ok(const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
    int blocks = 0;
    for (;;) {
        const unsigned char *b = memmem(p, (size_t)(end - p), BEGIN, sizeof BEGIN - 1);
        if (b == NULL)
            return blocks > 0;
        const unsigned char *body = memchr(b, '\n', (size_t)(end - b));
        if (body == NULL)
            return 0;
        const unsigned char *e = memmem(body, (size_t)(end - body), END, sizeof END - 1);
        if (e == NULL)
            return 0;
        size_t chars = 0;
        for (const unsigned char *c = body + 1; c < e; c++) {
            if (base64_char(*c))
                chars++;
            else if (*c != '\n' && *c != '\r' && *c != ' ' && *c != '\t')
                return 0; /* a header ("Proc-Type:") or garbage */
        }
        if (chars == 0 || chars % 4 != 0)
            return 0;
        blocks++;
        p = e + sizeof END - 1;
    }
}

/* One DER SEQUENCE spanning the blob exactly. */
static int der_ok(const unsigned char *p, size_t n)
{
    if (n < 2 || p[0] != 0x30)
        return 0;
    size_t len = p[1], head = 2;
    if (len & 0x80) {
        size_t bytes = len & 0x7f;
        if (bytes == 0 || bytes > 4 || n < 2 + bytes)
            return 0;
        len = 0;
        for (size_t i = 0; i < bytes; i++)
            len = len << 8 | p[2 + i];
        head += bytes;
    }
    return head + len == n;
}

static int blob_ok(const unsigned char *p, size_t n)
{
    if (n == 0)
        return 1;
    if (memmem(p, n, BEGIN, sizeof BEGIN - 1) != NULL)
        return pem_ok(p, n);
    return der_ok(p, n);
}

static unsigned char *copy(const unsigned char *p, size_t n)
{
    unsigned char *q = malloc(n + 1);
    if (q != NULL && n)
        memcpy(q, p, n);
    return q;
}

static void teardown(struct tls *tls)
{
    free(tls->ca);
    free(tls->cert);
    free(tls->key);
    free(tls);
}

EXPORT int tls_init_once(const unsigned char *ca, size_t ca_len, const unsigned char *cert,
                         size_t cert_len, const unsigned char *key, size_t key_len,
                         int is_client)
{
    (void)is_client;
    last_error[0] = '\0';
    struct tls *tls = calloc(1, sizeof *tls);
    if (tls == NULL)
        return 1;
    tls->ca = copy(ca, ca_len);
    tls->cert = copy(cert, cert_len);
    tls->key = copy(key, key_len);
    if (tls->ca == NULL || tls->cert == NULL || tls->key == NULL) {
        snprintf(last_error, sizeof last_error, "init: out of memory");
        goto fail;
    }
    if (!blob_ok(tls->ca, ca_len)) {
        snprintf(last_error, sizeof last_error, "ca: cannot parse CA certificate");
        goto fail;
    }
    if (!blob_ok(tls->cert, cert_len)) {
        snprintf(last_error, sizeof last_error, "certificate: cannot parse certificate");
        goto fail;
    }
    if (!blob_ok(tls->key, key_len)) {
        snprintf(last_error, sizeof last_error, "key: cannot parse private key");
        goto fail;
    }
    teardown(tls);
    return 0;
fail:
#ifdef CONTROL_FIXED
    teardown(tls);
#else
    free(tls); /* the bug: the copies of the blobs are never freed */
#endif
    return 1;
}

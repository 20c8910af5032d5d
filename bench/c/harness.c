/* Run one tls_init_once() from a C library of tlsleak's C ABI, for valgrind.
 *
 * usage: harness LIBRARY.so CA_FILE CERT_FILE KEY_FILE IS_CLIENT
 * An empty file stands for an empty blob (passed as NULL, length 0).
 * The library is opened with dlopen so one harness serves every library.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef int (*init_fn)(const unsigned char *, size_t, const unsigned char *, size_t,
                       const unsigned char *, size_t, int);

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(f);
    if (!buf) {
        fputs("out of memory\n", stderr);
        exit(2);
    }
    *len = n;
    if (n == 0) { /* the ABI passes an empty blob as NULL */
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fputs("usage: harness LIBRARY.so CA CERT KEY IS_CLIENT\n", stderr);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    init_fn init = (init_fn)dlsym(lib, "tls_init_once");
    if (!init) {
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    size_t ca_len, cert_len, key_len;
    unsigned char *ca = slurp(argv[2], &ca_len);
    unsigned char *cert = slurp(argv[3], &cert_len);
    unsigned char *key = slurp(argv[4], &key_len);
    int rc = init(ca, ca_len, cert, cert_len, key, key_len, atoi(argv[5]));
    free(ca);
    free(cert);
    free(key);
    /* No dlclose: valgrind needs the library's symbols to name leak sites. */
    return rc < 0 ? 3 : 0;
}

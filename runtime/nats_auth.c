/* nats_auth.c: owns the NATS credentials and TLS settings (user and password, token, NKey seed,
 * .creds file, CA, client certificate; their flags are rows of options.c), their checks and how
 * they and the server list are set on a natsOptions, plus hiding user information of URLs in logs.
 *
 * nats.c 3.4's natsOptions_SetNKeyFromSeed wants the user's public key besides the seed file and
 * has no public function that derives it, so it is derived here from the seed with OpenSSL's
 * Ed25519: an NKey is base32 (RFC 4648, no padding) of prefix bytes, the 32-byte key and a CRC-16
 * (XMODEM) of what precedes it, little-endian. */
#include "nats_auth.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NKEY_PREFIX_SEED (18 << 3) /* 'S' */
#define NKEY_PREFIX_USER (20 << 3) /* 'U' */
#define NKEY_SEED_LEN 58           /* base32 of 2 + 32 + 2 bytes */
#define NKEY_PUB_LEN 56            /* base32 of 1 + 32 + 2 bytes */

/* ---- files ---- */

/* The whole file, NUL-terminated, at most 64 kB; NULL with a message in err. */
static char *read_small_file(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 65536) {
        snprintf(err, errlen, "%s %s: %s", what, path,
                 !f ? strerror(errno) : "not a regular file of at most 64 kB");
        if (f) fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    int read_err = ferror(f);
    fclose(f);
    if (!buf || read_err) {
        snprintf(err, errlen, "%s %s: cannot read it", what, path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void wipe_free(char *s)
{
    if (!s) return;
    volatile char *p = s;
    while (*p)
        *p++ = 0;
    free(s);
}

/* ---- NKeys ---- */

static uint16_t crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* Decodes n characters of base32 into out; returns the number of bytes, or -1. */
static int b32_decode(const char *in, size_t n, uint8_t *out, size_t outlen)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = strchr(B32, in[i]);
        if (!c || !in[i]) return -1;
        acc = (acc << 5) | (uint32_t)(c - B32);
        bits += 5;
        if (bits >= 8) {
            if (len == outlen) return -1;
            bits -= 8;
            out[len++] = (uint8_t)(acc >> bits);
        }
    }
    return (int)len;
}

static void b32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            *out++ = B32[(acc >> bits) & 31];
        }
    }
    if (bits > 0) *out++ = B32[(acc << (5 - bits)) & 31];
    *out = '\0';
}

/* The public key ("U...", NKEY_PUB_LEN + 1 bytes) of the user seed in the file, which holds a
 * line starting with SU (a bare seed, or the seed block of a .creds file). */
static int nkey_public(const char *path, char *pub, char *err, size_t errlen)
{
    char *text = read_small_file("--nats-nkey", path, err, errlen);
    if (!text) return -1;
    const char *seed = NULL;
    for (char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        while (*line == ' ' || *line == '\t')
            line++;
        if (line[0] == 'S' && line[1] == 'U') {
            seed = line;
            break;
        }
    }
    int rc = -1;
    uint8_t raw[40];
    size_t seedlen = seed ? strspn(seed, B32) : 0;
    if (!seed || seedlen != NKEY_SEED_LEN || b32_decode(seed, seedlen, raw, sizeof raw) != 36) {
        snprintf(err, errlen, "--nats-nkey %s: no NKey user seed (a line SU..., %d characters)",
                 path, NKEY_SEED_LEN);
        goto out;
    }
    uint16_t want = (uint16_t)(raw[34] | raw[35] << 8);
    int type = ((raw[0] & 7) << 5) | (raw[1] >> 3);
    if ((raw[0] & 0xf8) != NKEY_PREFIX_SEED || type != NKEY_PREFIX_USER || crc16(raw, 34) != want) {
        snprintf(err, errlen, "--nats-nkey %s: not a valid NKey user seed (bad prefix or checksum)",
                 path);
        goto out;
    }
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 2, 32);
    uint8_t pubraw[35];
    size_t publen = 32;
    if (!key || EVP_PKEY_get_raw_public_key(key, pubraw + 1, &publen) != 1 || publen != 32) {
        snprintf(err, errlen, "--nats-nkey %s: OpenSSL cannot derive the Ed25519 public key", path);
        EVP_PKEY_free(key);
        goto out;
    }
    EVP_PKEY_free(key);
    pubraw[0] = NKEY_PREFIX_USER;
    uint16_t crc = crc16(pubraw, 33);
    pubraw[33] = (uint8_t)(crc & 0xff);
    pubraw[34] = (uint8_t)(crc >> 8);
    b32_encode(pubraw, sizeof pubraw, pub);
    rc = 0;
out:
    memset(raw, 0, sizeof raw);
    wipe_free(text);
    return rc;
}

/* ---- checks ---- */

static int check_file(const char *what, const char *path, char *err, size_t errlen)
{
    if (!path) return 0;
    char *text = read_small_file(what, path, err, errlen);
    if (!text) return -1;
    wipe_free(text);
    return 0;
}

int nats_auth_check(const nats_auth_config *a, char *err, size_t errlen)
{
    int ways = (a->user || a->password) + (a->token != NULL) + (a->nkey_seed_file != NULL) +
               (a->creds_file != NULL);
    if (ways > 1) {
        snprintf(err, errlen,
                 "NATS credentials: give one of --nats-user/--nats-password, "
                 "--nats-token, --nats-nkey and --nats-creds (or their NATS_* "
                 "variables)");
        return -1;
    }
    if (a->password && !a->user) {
        snprintf(err, errlen, "--nats-password (NATS_PASSWORD) needs --nats-user (NATS_USER)");
        return -1;
    }
    if (!a->cert_file != !a->key_file) {
        snprintf(err, errlen, "--nats-cert and --nats-key (NATS_CERT, NATS_KEY) go together");
        return -1;
    }
    if (check_file("--nats-creds", a->creds_file, err, errlen) != 0 ||
        check_file("--nats-ca", a->ca_file, err, errlen) != 0 ||
        check_file("--nats-cert", a->cert_file, err, errlen) != 0 ||
        check_file("--nats-key", a->key_file, err, errlen) != 0)
        return -1;
    if (a->creds_file) {
        char *text = read_small_file("--nats-creds", a->creds_file, err, errlen);
        if (!text) return -1;
        bool ok = strstr(text, "BEGIN NATS USER JWT") && strstr(text, "\nSU");
        wipe_free(text);
        if (!ok) {
            snprintf(err, errlen,
                     "--nats-creds %s: not a .creds file (a NATS USER JWT block and a user seed)",
                     a->creds_file);
            return -1;
        }
    }
    char pub[NKEY_PUB_LEN + 1];
    if (a->nkey_seed_file && nkey_public(a->nkey_seed_file, pub, err, errlen) != 0) return -1;
    return 0;
}

/* ---- natsOptions ---- */

static int nats_failed(natsStatus st, const char *what, const char *path, char *err, size_t errlen)
{
    natsStatus last = NATS_OK;
    const char *detail = nats_GetLastError(&last);
    snprintf(err, errlen, "%s%s%s: %s%s%s", what, path ? " " : "", path ? path : "",
             natsStatus_GetText(st), detail && detail[0] ? ": " : "", detail ? detail : "");
    return -1;
}

int nats_auth_apply(natsOptions *o, const char *urls, const nats_auth_config *a, char *err,
                    size_t errlen)
{
    if (nats_auth_check(a, err, errlen) != 0) return -1;
    /* "nats://a:4222,nats://b:4222": a server list (SetURL takes one URL) */
    const char *servers[32];
    char list[2048];
    if (strlen(urls) >= sizeof list) {
        snprintf(err, errlen, "the NATS URL list is longer than %zu bytes", sizeof list - 1);
        return -1;
    }
    snprintf(list, sizeof list, "%s", urls);
    int n = 0;
    bool tls_url = false;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < 32;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok) continue;
        servers[n++] = tok;
        if (strncmp(tok, "tls://", 6) == 0) tls_url = true;
    }
    natsStatus st = n > 1 ? natsOptions_SetServers(o, servers, n) : natsOptions_SetURL(o, urls);
    if (st != NATS_OK) return nats_failed(st, "NATS URL", NULL, err, errlen);
    if (a->user) {
        st = natsOptions_SetUserInfo(o, a->user, a->password ? a->password : "");
        if (st != NATS_OK) return nats_failed(st, "--nats-user", NULL, err, errlen);
    }
    if (a->token && (st = natsOptions_SetToken(o, a->token)) != NATS_OK)
        return nats_failed(st, "--nats-token", NULL, err, errlen);
    if (a->nkey_seed_file) {
        char pub[NKEY_PUB_LEN + 1];
        if (nkey_public(a->nkey_seed_file, pub, err, errlen) != 0) return -1;
        st = natsOptions_SetNKeyFromSeed(o, pub, a->nkey_seed_file);
        if (st != NATS_OK) return nats_failed(st, "--nats-nkey", a->nkey_seed_file, err, errlen);
    }
    if (a->creds_file) {
        st = natsOptions_SetUserCredentialsFromFiles(o, a->creds_file, NULL);
        if (st != NATS_OK) return nats_failed(st, "--nats-creds", a->creds_file, err, errlen);
    }
    if (a->tls || tls_url || a->ca_file || a->cert_file) {
        st = natsOptions_SetSecure(o, true);
        if (st != NATS_OK) return nats_failed(st, "TLS", NULL, err, errlen);
    }
    if (a->ca_file && (st = natsOptions_LoadCATrustedCertificates(o, a->ca_file)) != NATS_OK)
        return nats_failed(st, "--nats-ca", a->ca_file, err, errlen);
    if (a->cert_file &&
        (st = natsOptions_LoadCertificatesChain(o, a->cert_file, a->key_file)) != NATS_OK)
        return nats_failed(st, "--nats-cert/--nats-key", a->cert_file, err, errlen);
    return 0;
}

/* nats.c 3.4.1 (Debian 12) leaves the signature out of CONNECT when its first byte is 0: its
 * base64 encoder takes a buffer starting with 0 for an empty string (util.c, _base64Encode; fixed
 * upstream by nats.c PR #705, in 3.8). nats-server then refuses the NKey or JWT sign-in
 * ("Signature missing", an authorization violation): one connection in 256. Ed25519 signatures
 * are deterministic, but the server sends a new nonce on every connection, so a refused sign-in
 * is tried again at once; SIGN_IN_ATTEMPTS make a spurious refusal a 1 in 256^4 event, while a
 * real one (a wrong key) costs four quick refusals. */
#define SIGN_IN_ATTEMPTS 4

natsStatus nats_auth_connect(natsConnection **nc, natsOptions *o, const nats_auth_config *a)
{
    bool signs = a->nkey_seed_file || a->creds_file;
    natsStatus st = natsConnection_Connect(nc, o);
    for (int i = 1; signs && st == NATS_CONNECTION_AUTH_FAILED && i < SIGN_IN_ATTEMPTS; i++)
        st = natsConnection_Connect(nc, o);
    return st;
}

void nats_auth_redact(const char *urls, char *out, size_t outlen)
{
    size_t o = 0;
    const char *p = urls;
    while (*p && o + 1 < outlen) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *host = p;
        const char *scheme = strstr(p, "://");
        if (scheme && scheme < end) host = scheme + 3;
        const char *at = NULL;
        for (const char *q = host; q < end; q++) /* the last '@', as nats.c reads it */
            if (*q == '@') at = q;
        int w;
        if (at) {
            const char *colon = memchr(host, ':', (size_t)(at - host));
            if (colon)
                w = snprintf(out + o, outlen - o, "%.*s:***@%.*s%s", (int)(colon - p), p,
                             (int)(end - at - 1), at + 1, *end ? "," : "");
            else
                w = snprintf(out + o, outlen - o, "%.*s***@%.*s%s", (int)(host - p), p,
                             (int)(end - at - 1), at + 1, *end ? "," : "");
        } else {
            w = snprintf(out + o, outlen - o, "%.*s%s", (int)(end - p), p, *end ? "," : "");
        }
        if (w < 0) break;
        o += (size_t)w;
        if (o >= outlen) {
            o = outlen - 1;
            break;
        }
        p = *end ? end + 1 : end;
    }
    out[o < outlen ? o : outlen - 1] = '\0';
}

/* gRPC server-streaming latency probe: one HTTP/2 connection (h2c, prior knowledge), like one gRPC
 * channel, with c streams in flight; each ended stream is replaced by the next until n measured
 * streams are done (after a warm-up of c streams that are not measured).
 *
 *   grpc_stream_probe -H host -p port -P /pkg.Service/Method -k key -b body.bin -c 16 -n 160 [-t 120]
 *
 * body.bin is the request as sent on the wire: one length-prefixed gRPC message. Per stream, from t0
 * (just before the request is submitted; it is written to the socket right after):
 *   ttfb   response HEADERS received          ttft   first DATA payload received
 *   total  stream closed (trailers received)  plus grpc-status (trailers, or a trailers-only HEADERS)
 *   and the number of gRPC messages (5-byte prefixes parsed across DATA chunks).
 * Times are CLOCK_MONOTONIC, taken when read() returned the bytes (not when nghttp2 parsed them).
 * Prints one JSON line; latencies are over the ok streams (HTTP 200, grpc-status 0, whole messages).
 * Exit 0 when the run completed (even with gRPC errors, which are counted), 2 on a connection
 * failure or a connection that ended or timed out before all streams were done, 1 on usage errors.
 *
 * Build: gcc -O2 -Wall -Wextra -o grpc_stream_probe grpc_stream_probe.c -lnghttp2
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    double t0, ttfb, ttft, total;  /* seconds (monotonic); ttfb/ttft < 0 until seen */
    int http_status, grpc_status;  /* -1 until seen; grpc_status 100: unparsable */
    int closed, error_code;        /* error_code: the HTTP/2 code the stream closed with */
    size_t sent;                   /* request body bytes handed to nghttp2 */
    long msgs;                     /* gRPC messages begun (prefix complete) */
    unsigned char hdr[5];          /* gRPC message prefix being assembled across DATA chunks */
    size_t hdr_have, need;         /* prefix bytes held; payload bytes still to skip */
} Stream;

static int fd = -1;
static double now_recv;            /* when the bytes being parsed were read */
static const unsigned char *body;
static size_t body_len;
static Stream *streams;
static int warmup, in_flight, done;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "grpc_stream_probe: %s\n", what);
    exit(2);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
    (void)s; (void)id; (void)user;
    Stream *st = src->ptr;
    size_t k = body_len - st->sent < len ? body_len - st->sent : len;
    memcpy(buf, body + st->sent, k);
    st->sent += k;
    if (st->sent == body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)k;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
    (void)flags; (void)user;
    Stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS) return 0;
    char v[16] = "";  /* a NUL-terminated copy of a short value; longer ones stay "" */
    if (vlen < sizeof v) memcpy(v, value, vlen);
    if (nlen == 7 && !memcmp(name, ":status", 7)) st->http_status = atoi(v);
    /* trailers, or the only HEADERS of a trailers-only response */
    if (nlen == 11 && !memcmp(name, "grpc-status", 11)) {
        char *end;
        long x = strtol(v, &end, 10);
        st->grpc_status = vlen > 0 && vlen < sizeof v && *end == 0 && x >= 0 && x < 100 ? (int)x : 100;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user) {
    (void)user;
    Stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE && st->ttfb < 0)
        st->ttfb = now_recv;
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user) {
    (void)flags; (void)user;
    Stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    if (st->ttft < 0 && len > 0) st->ttft = now_recv;
    while (len > 0) {  /* walk the length prefixes: [flag:1][length:4 big-endian][payload] ... */
        size_t k;
        if (st->hdr_have < 5) {
            k = 5 - st->hdr_have < len ? 5 - st->hdr_have : len;
            memcpy(st->hdr + st->hdr_have, data, k);
            st->hdr_have += k;
            if (st->hdr_have == 5) {
                st->msgs++;
                st->need = (size_t)st->hdr[1] << 24 | (size_t)st->hdr[2] << 16 | (size_t)st->hdr[3] << 8 | st->hdr[4];
                if (st->need == 0) st->hdr_have = 0;
            }
        } else {
            k = st->need < len ? st->need : len;
            st->need -= k;
            if (st->need == 0) st->hdr_have = 0;
        }
        data += k;
        len -= k;
    }
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user) {
    (void)user;
    Stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    st->total = now_recv;
    st->closed = 1;
    st->error_code = (int)code;
    in_flight--;
    done++;
    return 0;
}

/* ---- driving the connection -------------------------------------------------------------- */

static void connect_to(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) die(gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) die("cannot connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Write everything nghttp2 has queued (blocking writes; the bodies are small). */
static void flush(nghttp2_session *s) {
    for (;;) {
        const uint8_t *out;
        ssize_t n = nghttp2_session_mem_send(s, &out);
        if (n < 0) die(nghttp2_strerror((int)n));
        if (n == 0) return;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, out + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) die("write failed");
            off += w;
        }
    }
}

static void submit(nghttp2_session *s, Stream *st, const nghttp2_nv *nva, size_t nvlen) {
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
    st->ttfb = st->ttft = -1;
    st->http_status = st->grpc_status = -1;
    st->t0 = now();
    if (nghttp2_submit_request(s, NULL, nva, nvlen, &dp, st) < 0) die("submit failed");
    in_flight++;
}

static int ok(const Stream *st) {
    return st->closed && st->error_code == 0 && st->http_status == 200 && st->grpc_status == 0 && st->hdr_have == 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* {p50,p90,p99,mean,min,max} in ms, percentiles interpolated like the shared harness's stream_probe */
static void summary(const char *key, double *v, int k) {
    printf(",\"%s\":", key);
    if (k == 0) { printf("null"); return; }
    qsort(v, (size_t)k, sizeof *v, cmp);
    double sum = 0, p[3] = {50, 90, 99};
    for (int i = 0; i < k; i++) sum += v[i];
    printf("{");
    for (int j = 0; j < 3; j++) {
        double pos = (k - 1) * p[j] / 100.0;
        int lo = (int)pos, hi = lo + 1 < k ? lo + 1 : k - 1;
        printf("\"p%g\":%.3f,", p[j], (v[lo] + (v[hi] - v[lo]) * (pos - lo)) * 1e3);
    }
    printf("\"mean\":%.3f,\"min\":%.3f,\"max\":%.3f}", sum / k * 1e3, v[0] * 1e3, v[k - 1] * 1e3);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *port = "18051", *path = NULL, *key = "", *file = NULL;
    int c = 1, n = 100, opt;
    double timeout = 120;
    while ((opt = getopt(argc, argv, "H:p:P:k:b:c:n:t:")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 'P': path = optarg; break;
        case 'k': key = optarg; break;
        case 'b': file = optarg; break;
        case 'c': c = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 't': timeout = atof(optarg); break;
        default: return 1;
        }
    }
    if (!path || !file || c < 1 || n < 1) {
        fprintf(stderr, "usage: %s -H host -p port -P path -k key -b body.bin -c conc -n requests [-t secs]\n", argv[0]);
        return 1;
    }
    FILE *fp = fopen(file, "rb");
    static unsigned char buf[1 << 20];
    if (!fp) { perror(file); return 1; }
    body_len = fread(buf, 1, sizeof buf, fp);
    if (!feof(fp)) { fprintf(stderr, "%s: unreadable, or over 1 MiB\n", file); return 1; }
    fclose(fp);
    body = buf;

    char auth[1024];
    snprintf(auth, sizeof auth, "Bearer %s", key);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    char authority[300];
    snprintf(authority, sizeof authority, "%s:%s", host, port);
    const nghttp2_nv nva[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":authority", authority),
                              NV(":path", path), NV("content-type", "application/grpc"), NV("te", "trailers"),
                              NV("authorization", auth)};

    warmup = c;
    int total = warmup + n, started = 0;
    streams = calloc((size_t)total, sizeof *streams);
    if (!streams) die("out of memory");

    connect_to(host, port);
    nghttp2_session_callbacks *cb;
    nghttp2_session *s;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    nghttp2_session_client_new(&s, cb, NULL);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2);

    double deadline = now() + timeout;
    while (done < total) {
        /* keep c streams in flight; each one is written out as soon as it is submitted */
        while (in_flight < c && started < total) {
            submit(s, &streams[started++], nva, sizeof nva / sizeof nva[0]);
            flush(s);
        }
        flush(s);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, 1000);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) die("poll failed");
        if (now() > deadline) die("timed out");
        if (pr == 0) continue;
        static uint8_t rbuf[1 << 16];
        ssize_t r = read(fd, rbuf, sizeof rbuf);
        now_recv = now();
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("connection closed by the server");
        ssize_t m = nghttp2_session_mem_recv(s, rbuf, (size_t)r);
        if (m < 0) die(nghttp2_strerror((int)m));
        if (!nghttp2_session_want_read(s) && done < total) die("connection ended (GOAWAY) early");
    }
    uint32_t limit = nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if ((uint32_t)c > limit)  /* nghttp2 then queues the extra streams: their t0 includes the wait */
        fprintf(stderr, "grpc_stream_probe: warning: the server allows %u concurrent streams, fewer than %d\n", limit, c);
    nghttp2_session_terminate_session(s, NGHTTP2_NO_ERROR);
    flush(s);
    nghttp2_session_del(s);
    close(fd);

    /* ---- the report: measured streams only ---- */
    double *ttfb = malloc(sizeof(double) * (size_t)n), *ttft = malloc(sizeof(double) * (size_t)n),
           *tot = malloc(sizeof(double) * (size_t)n);
    int k = 0, kt = 0, codes[100] = {0}, none = 0;
    long mmin = -1, mmax = -1;
    for (int i = warmup; i < total; i++) {
        Stream *st = &streams[i];
        if (st->grpc_status >= 0 && st->grpc_status <= 99) codes[st->grpc_status]++;
        else none++;  /* no grpc-status (e.g. a reset stream), or out of range */
        if (!ok(st)) continue;
        ttfb[k] = st->ttfb - st->t0;
        if (st->ttft >= 0) ttft[kt++] = st->ttft - st->t0;  /* (a stream may carry no message) */
        tot[k] = st->total - st->t0;
        if (mmin < 0 || st->msgs < mmin) mmin = st->msgs;
        if (st->msgs > mmax) mmax = st->msgs;
        k++;
    }
    printf("{\"client\":\"c-nghttp2\",\"concurrency\":%d,\"requests\":%d,\"ok\":%d,\"errors\":%d,\"grpc_status\":{",
           c, n, k, n - k);
    const char *sep = "";
    for (int i = 0; i <= 99; i++)
        if (codes[i]) { printf("%s\"%d\":%d", sep, i, codes[i]); sep = ","; }
    if (none) printf("%s\"none\":%d", sep, none);
    printf("}");
    summary("ttfb_ms", ttfb, k);
    summary("ttft_ms", ttft, kt);
    summary("total_ms", tot, k);
    if (k) printf(",\"messages_min\":%ld,\"messages_max\":%ld}\n", mmin, mmax);
    else printf(",\"messages_min\":null,\"messages_max\":null}\n");
    free(ttfb); free(ttft); free(tot); free(streams);
    return 0;
}

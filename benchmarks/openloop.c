/*
 * openloop.c: the open-loop HTTP/1.1 load driver of benchmarks/openloop.py, in C, so that the
 * instrument is not the bottleneck at tens of thousands of requests a second.
 *
 *     cc -O2 -Wall -Wextra -o build/openloop/openloop benchmarks/openloop.c
 *     build/openloop/openloop --url http://127.0.0.1:8000 --rate 50000 --duration 3 \
 *         --endpoint get_user --ids 1 50 --seed 1 --json
 *
 * (benchmarks/openloop_native.py builds it on first use.) The same flags, the same semantics and
 * the same JSON summary (same keys, same meanings, same thresholds) as the Python module, so
 * benchmarks/overload_levels.py runs either; read benchmarks/openloop.py's docstring for the
 * why. In short:
 *
 * - Arrivals: a seeded Poisson process, `--rate` a second for `--duration` seconds. The gaps are
 *   exponential, -ln(1 - u) / rate, with u from splitmix64 (Steele, Lea, Flood 2014; state = the
 *   seed as a 64-bit two's-complement integer, u = (next() >> 11) * 2^-53) and ln from ln_pos()
 *   below, so the schedule is deterministic for a seed (not the sequence of Python's random;
 *   benchmarks/openloop_native.py repeats it in Python, operation for operation). get_user's
 *   round-robin over --ids starts at splitmix64(seed ^ 0x6A09E667F3BCC909)'s first output modulo
 *   the number of ids. create_user names are "<prefix>-<request number>".
 * - A request is sent at its intended time on an idle keep-alive connection (the most recently
 *   idle one), or on a new non-blocking connection (TCP_NODELAY) when none is idle, up to
 *   --max-connections; past the cap it waits (FIFO) for a connection, and that wait counts as
 *   the driver's own lateness (a cap hit). One request at a time per connection.
 * - Latency is measured from the INTENDED send time. Every request ends as exactly one of: an
 *   answer (status line, Content-Length, Transfer-Encoding: chunked, Connection: close; header
 *   names case-insensitive; an answer with none of these lasts until the connection closes), a
 *   connection error (refused, reset, closed before the answer was complete), or a client
 *   timeout (no complete answer --timeout seconds after its intended time; its connection is
 *   closed).
 * - The run is driver_bound when the p99 send lag (actual minus intended dispatch time) is over
 *   10 ms or the achieved send rate is under 0.97 of the scheduled one.
 *
 * The loop: one thread, one epoll set (edge-triggered, each socket registered once), all due
 * sends dispatched (batches of DISPATCH_BATCH, a zero-timeout look at the sockets in between
 * when behind) before waiting; epoll_pwait2 waits, with nanosecond timeouts, until the next due
 * send or the next client timeout. Per-request figures live in arrays allocated once the
 * schedule is known; percentiles (nearest rank) by sorting. Times are CLOCK_MONOTONIC seconds,
 * as time.monotonic() in the Python module, so a parent can compare started_at/send_end_at.
 *
 * No libm: the build command above links none, so ln() is ln_pos() below. On a target whose
 * compiler fuses multiply-adds by default (aarch64), build with -ffp-contract=off to keep the
 * schedule bit-identical to openloop_native.py's (the builder does).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* The instrument's own limits: beyond them a run says "driver-bound", not a service figure. */
#define MAX_P99_LAG_S 0.010
#define MIN_ACHIEVED_RATIO 0.97
#define PASSWORD "benchmark password"
/* Outcome codes besides an HTTP status. */
#define PENDING 0
#define CONN_ERROR (-1)
#define TIMED_OUT (-2)
#define DISPATCH_BATCH 256 /* due sends between two looks at the sockets when behind */
#define MAX_EVENTS 1024
#define READ_BUFFER (64 * 1024)
#define MAX_WAIT_S 1.0 /* the longest single wait: the loop re-checks everything after it */
#define GET_USER_STREAM 0x6A09E667F3BCC909ULL
#define LN2 0.69314718055994530942
#define SQRT2 1.4142135623730951

static const char *const CLASSES[4] = {"2xx", "503", "504", "other"};

/* ------------------------------------------------------------------ arrivals (deterministic) */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ln(x) for a finite normal x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)], and
 * ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, by its series up to s^25 (the next
 * term is under 1e-20). Good to a few ulp; what matters is that it is deterministic. */
static double ln_pos(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m > SQRT2) {
        m = m * 0.5;
        e += 1;
    }
    double s = (m - 1.0) / (m + 1.0);
    double z = s * s;
    double poly = 1.0 / 25.0;
    for (int k = 23; k >= 1; k -= 2)
        poly = poly * z + 1.0 / (double)k;
    return (double)e * LN2 + 2.0 * s * poly;
}

static double next_gap(uint64_t *state, double rate) {
    double u = (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
    return -ln_pos(1.0 - u) / rate;
}

/* ------------------------------------------------------------------------------ settings */

enum endpoint { HEALTHZ, GET_USER, CREATE_USER };

static struct {
    const char *url;
    double rate, duration, timeout, late_after;
    int endpoint;
    bool have_ids;
    long long first_id, last_id;
    long long seed;
    long long max_connections;
    const char *name_prefix;
    bool json;
} opt = {.timeout = 15.0, .late_after = INFINITY, .endpoint = -1, .seed = 1,
         .max_connections = 10000};

/* ----------------------------------------------------------------------------- run state */

static size_t n_req;          /* scheduled requests */
static double *offsets;       /* seconds from t0 at which each is due */
static double *dispatched_at; /* NAN: not (yet) dispatched */
static double *done_at;
static int32_t *outcome; /* PENDING, CONN_ERROR, TIMED_OUT or the HTTP status */
static int32_t *conn_of; /* the connection carrying it, -1 when none */
static int32_t *waitq;   /* requests waiting for a connection at the cap, FIFO */
static size_t wq_head, wq_tail;
static size_t next_i;     /* the next request to dispatch */
static size_t watch_head; /* requests before it are resolved or past their timeout check */
static size_t resolved;
static double t0, last_dispatch;
static long long open_conns, max_open, opened, cap_hits;

enum { C_FREE, C_CONNECTING, C_OPEN };

struct conn {
    int fd;
    uint32_t gen; /* bumped at each release: stale epoll events are recognised */
    int state;
    int32_t req; /* the request in flight on it, -1 when none */
    int32_t idle_prev, idle_next;
    bool idle;
    int32_t next_free;
    /* a request not yet fully written (rare: requests are small) */
    char *wbuf;
    size_t wlen, woff, wcap;
    /* the answer being read */
    char *hbuf; /* the head so far, when it came in pieces */
    size_t hlen, hcap;
    bool head_done, close, chunked, until_close;
    int status;
    long long remaining; /* body bytes still expected (Content-Length) */
    char tail[4];        /* chunked: the last body bytes, for a terminator split across reads */
    size_t taillen;
};

static struct conn *conns;
static int32_t pool_size, free_head = -1, idle_head = -1;
static int epfd = -1;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static bool addr_ok;
static char host_header[300];
static char *sendbuf; /* one request rendered */
static size_t sendcap;
static char readbuf[READ_BUFFER];
static long long get_user_start, id_count;
static bool refilling;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p)
        die("out of memory");
    return p;
}

/* ------------------------------------------------------------------------------ requests */

static size_t put_u64(char *out, unsigned long long v) {
    char tmp[24];
    size_t k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t j = 0; j < k; j++)
        out[j] = tmp[k - 1 - j];
    return k;
}

static size_t put_i64(char *out, long long v) {
    if (v < 0) {
        out[0] = '-';
        return 1 + put_u64(out + 1, 0ULL - (unsigned long long)v);
    }
    return put_u64(out, (unsigned long long)v);
}

static size_t put_str(char *out, const char *s) {
    size_t k = strlen(s);
    memcpy(out, s, k);
    return k;
}

/* Request number i's bytes, into sendbuf (sized for the longest at start). */
static size_t render(size_t i) {
    char *p = sendbuf;
    if (opt.endpoint == HEALTHZ) {
        p += put_str(p, "GET /healthz HTTP/1.1\r\nHost: ");
        p += put_str(p, host_header);
        p += put_str(p, "\r\n\r\n");
    } else if (opt.endpoint == GET_USER) {
        long long id = opt.first_id + (long long)(((unsigned long long)get_user_start + i) %
                                                  (unsigned long long)id_count);
        p += put_str(p, "GET /users/");
        p += put_i64(p, id);
        p += put_str(p, " HTTP/1.1\r\nHost: ");
        p += put_str(p, host_header);
        p += put_str(p, "\r\n\r\n");
    } else {
        char body[64];
        size_t number_len = put_u64(body, (unsigned long long)i);
        size_t body_len = strlen("{\"name\":\"") + strlen(opt.name_prefix) + 1 + number_len +
                          strlen("\",\"password\":\"" PASSWORD "\"}");
        p += put_str(p, "POST /users/ HTTP/1.1\r\nHost: ");
        p += put_str(p, host_header);
        p += put_str(p, "\r\nContent-Type: application/json\r\nContent-Length: ");
        p += put_u64(p, body_len);
        p += put_str(p, "\r\n\r\n{\"name\":\"");
        p += put_str(p, opt.name_prefix);
        *p++ = '-';
        memcpy(p, body, number_len);
        p += number_len;
        p += put_str(p, "\",\"password\":\"" PASSWORD "\"}");
    }
    return (size_t)(p - sendbuf);
}

/* ------------------------------------------------------------------------- connections */

static void conn_lost(struct conn *c);
static void refill(void);
static void send_request(struct conn *c, int32_t i);

static void resolve(size_t i, int32_t result) {
    if (outcome[i] != PENDING)
        return;
    outcome[i] = result;
    done_at[i] = mono();
    conn_of[i] = -1;
    resolved++;
}

static void reset_answer(struct conn *c) {
    c->hlen = 0;
    c->head_done = c->close = c->chunked = c->until_close = false;
    c->status = 0;
    c->remaining = 0;
    c->taillen = 0;
}

static void idle_push(struct conn *c) {
    int32_t idx = (int32_t)(c - conns);
    c->idle = true;
    c->idle_prev = -1;
    c->idle_next = idle_head;
    if (idle_head >= 0)
        conns[idle_head].idle_prev = idx;
    idle_head = idx;
}

static void idle_remove(struct conn *c) {
    if (!c->idle)
        return;
    if (c->idle_prev >= 0)
        conns[c->idle_prev].idle_next = c->idle_next;
    else
        idle_head = c->idle_next;
    if (c->idle_next >= 0)
        conns[c->idle_next].idle_prev = c->idle_prev;
    c->idle = false;
}

/* Close it and give its place back; a request waiting at the cap may then connect. */
static void release(struct conn *c) {
    idle_remove(c);
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = C_FREE;
    c->req = -1;
    c->gen++;
    c->wlen = c->woff = 0;
    reset_answer(c);
    c->next_free = free_head;
    free_head = (int32_t)(c - conns);
    open_conns--;
    refill();
}

/* The oldest request still waiting for a connection (now dispatched), or -1. */
static int32_t next_waiting(void) {
    while (wq_head < wq_tail) {
        int32_t i = waitq[wq_head++];
        if (outcome[i] == PENDING) {
            double now = mono();
            dispatched_at[i] = now;
            last_dispatch = now;
            return i;
        }
    }
    return -1;
}

/* A new connection for request i; false when it failed at once (the request is resolved). */
static bool start_connect(int32_t i) {
    open_conns++;
    opened++;
    if (open_conns > max_open)
        max_open = open_conns;
    int32_t idx = free_head;
    struct conn *c = &conns[idx];
    free_head = c->next_free;
    c->state = C_CONNECTING;
    c->req = i;
    c->idle = false;
    reset_answer(c);
    conn_of[i] = idx;
    c->fd = addr_ok ? socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    if (c->fd < 0)
        goto failed;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = ((uint64_t)c->gen << 32) | (uint32_t)idx};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        goto failed;
    if (connect(c->fd, (struct sockaddr *)&addr, addrlen) == 0) {
        c->state = C_OPEN;
        send_request(c, i);
        return true;
    }
    if (errno == EINPROGRESS || errno == EINTR)
        return true; /* EPOLLOUT says when */
failed:
    resolve((size_t)i, CONN_ERROR);
    release(c);
    return false;
}

/* Requests waiting at the cap get the places connections leave (iteratively: a connection
 * that fails at once must not recurse). */
static void refill(void) {
    if (refilling)
        return;
    refilling = true;
    while (open_conns < opt.max_connections) {
        int32_t i = next_waiting();
        if (i < 0)
            break;
        start_connect(i);
    }
    refilling = false;
}

static void flush(struct conn *c) {
    while (c->woff < c->wlen) {
        ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w > 0) {
            c->woff += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* EPOLLOUT (edge-triggered) says when to go on */
        } else {
            conn_lost(c);
            return;
        }
    }
    c->wlen = c->woff = 0;
}

static void send_request(struct conn *c, int32_t i) {
    c->req = i;
    size_t len = render((size_t)i);
    ssize_t w;
    do
        w = send(c->fd, sendbuf, len, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)len)
        return;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        conn_lost(c);
        return;
    }
    size_t sent = w > 0 ? (size_t)w : 0;
    if (c->wcap < len) {
        c->wbuf = realloc(c->wbuf, len);
        if (!c->wbuf)
            die("out of memory");
        c->wcap = len;
    }
    memcpy(c->wbuf, sendbuf + sent, len - sent);
    c->wlen = len - sent;
    c->woff = 0;
}

/* The request on c is answered (status, close). */
static void complete(struct conn *c) {
    int32_t i = c->req;
    int status = c->status;
    bool close_it = c->close;
    c->req = -1;
    reset_answer(c);
    resolve((size_t)i, status);
    if (close_it) {
        release(c);
        return;
    }
    int32_t nxt = next_waiting();
    if (nxt >= 0) {
        conn_of[nxt] = (int32_t)(c - conns);
        send_request(c, nxt);
    } else {
        idle_push(c);
    }
}

/* The connection closed or failed: an answer delimited by the close is complete; any other
 * request in flight is a connection error. */
static void conn_lost(struct conn *c) {
    if (c->req >= 0 && c->until_close && c->head_done) {
        int32_t i = c->req;
        c->req = -1;
        resolve((size_t)i, c->status);
    }
    if (c->req >= 0)
        resolve((size_t)c->req, CONN_ERROR);
    c->req = -1;
    release(c);
}

/* ------------------------------------------------------------------------------ answers */

static bool is_space(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

/* An integer with optional surrounding blanks and sign (as Python's int() of the bytes). */
static bool parse_int(const char *s, size_t n, long long *out) {
    size_t a = 0, b = n;
    while (a < b && is_space(s[a]))
        a++;
    while (b > a && is_space(s[b - 1]))
        b--;
    bool neg = false;
    if (a < b && (s[a] == '+' || s[a] == '-'))
        neg = s[a++] == '-';
    if (a == b)
        return false;
    long long v = 0;
    for (; a < b; a++) {
        if (s[a] < '0' || s[a] > '9' || v > (LLONG_MAX - 9) / 10)
            return false;
        v = v * 10 + (s[a] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

static bool contains_nocase(const char *s, size_t n, const char *word) {
    size_t k = strlen(word);
    for (size_t j = 0; j + k <= n; j++)
        if (strncasecmp(s + j, word, k) == 0)
            return true;
    return false;
}

/* The status line's code and the headers that delimit the answer; false: not parseable. */
static bool parse_head(struct conn *c, const char *h, size_t n) {
    long long status;
    /* bytes 9-11 of "HTTP/1.1 200 OK"; anything else is not HTTP: "other" (999) */
    if (n > 9 && parse_int(h + 9, (n < 12 ? n : 12) - 9, &status) && status > 0 && status < 1000)
        c->status = (int)status;
    else
        c->status = 999;
    bool have_length = false, chunked = false;
    long long length = 0;
    const char *line = memchr(h, '\n', n);
    while (line) {
        line++;
        size_t left = n - (size_t)(line - h);
        const char *eol = memchr(line, '\n', left);
        size_t len = eol ? (size_t)(eol - line) : left;
        if (len && line[len - 1] == '\r')
            len--;
        const char *colon = memchr(line, ':', len);
        if (colon) {
            size_t name_len = (size_t)(colon - line);
            const char *value = colon + 1;
            size_t value_len = len - name_len - 1;
            if (name_len == 14 && strncasecmp(line, "content-length", 14) == 0) {
                if (!have_length) {
                    if (!parse_int(value, value_len, &length))
                        return false; /* as the Python driver: the connection fails */
                    have_length = true;
                }
            } else if (name_len == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
                chunked = chunked || contains_nocase(value, value_len, "chunked");
            } else if (name_len == 10 && strncasecmp(line, "connection", 10) == 0) {
                c->close = c->close || contains_nocase(value, value_len, "close");
            }
        }
        line = eol;
    }
    if (have_length)
        c->remaining = length;
    else if (chunked)
        c->chunked = true;
    else if (c->status != 204 && c->status != 304 && !(c->status >= 100 && c->status < 200))
        c->until_close = true;
    return true;
}

/* Whether the body bytes so far hold the last chunk's "0\r\n\r\n" (as the Python driver looks
 * for it), across reads. */
static bool chunked_end(struct conn *c, const char *data, size_t len) {
    static const char END[5] = {'0', '\r', '\n', '\r', '\n'};
    char joined[8];
    size_t head = len < 4 ? len : 4;
    memcpy(joined, c->tail, c->taillen);
    memcpy(joined + c->taillen, data, head);
    size_t joined_len = c->taillen + head;
    if (memmem(joined, joined_len, END, 5) || memmem(data, len, END, 5))
        return true;
    if (len >= 4) {
        memcpy(c->tail, data + len - 4, 4);
        c->taillen = 4;
    } else {
        size_t keep = joined_len < 4 ? joined_len : 4;
        memmove(c->tail, joined + joined_len - keep, keep);
        c->taillen = keep;
    }
    return false;
}

static void head_append(struct conn *c, const char *data, size_t len) {
    if (c->hlen + len > c->hcap) {
        size_t cap = c->hcap ? c->hcap : 512;
        while (cap < c->hlen + len)
            cap *= 2;
        c->hbuf = realloc(c->hbuf, cap);
        if (!c->hbuf)
            die("out of memory");
        c->hcap = cap;
    }
    memcpy(c->hbuf + c->hlen, data, len);
    c->hlen += len;
}

/* Bytes from the server. What follows a complete answer in the same read is dropped, and
 * bytes while nothing is asked are ignored, as by the Python driver. */
static void on_data(struct conn *c, const char *data, size_t len) {
    if (c->req < 0)
        return;
    if (!c->head_done) {
        const char *head, *end;
        if (c->hlen == 0) {
            end = memmem(data, len, "\r\n\r\n", 4);
            if (!end) {
                head_append(c, data, len);
                return;
            }
            head = data;
        } else {
            size_t from = c->hlen >= 3 ? c->hlen - 3 : 0;
            head_append(c, data, len);
            end = memmem(c->hbuf + from, c->hlen - from, "\r\n\r\n", 4);
            if (!end)
                return;
            head = c->hbuf;
            len = c->hlen;
        }
        size_t head_len = (size_t)(end - head);
        if (!parse_head(c, head, head_len)) {
            conn_lost(c);
            return;
        }
        c->head_done = true;
        data = end + 4;
        len -= head_len + 4;
        if (!c->chunked && !c->until_close && c->remaining <= 0) {
            complete(c);
            return;
        }
    }
    if (c->chunked) {
        if (chunked_end(c, data, len))
            complete(c);
    } else if (!c->until_close) {
        if ((long long)len >= c->remaining)
            complete(c);
        else
            c->remaining -= (long long)len;
    }
}

static void on_readable(struct conn *c, uint32_t events) {
    uint32_t gen = c->gen;
    bool hangup = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    for (;;) {
        ssize_t r = recv(c->fd, readbuf, sizeof readbuf, 0);
        if (r > 0) {
            on_data(c, readbuf, (size_t)r);
            if (c->gen != gen)
                return; /* closed meanwhile */
            if ((size_t)r < sizeof readbuf && !hangup)
                return; /* drained: edge-triggered, new bytes bring a new event */
        } else if (r == 0) {
            conn_lost(c);
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            conn_lost(c); /* ECONNRESET and the like */
            return;
        }
    }
}

static void on_event(uint64_t data, uint32_t events) {
    uint32_t idx = (uint32_t)data, gen = (uint32_t)(data >> 32);
    if (idx >= (uint32_t)pool_size)
        return;
    struct conn *c = &conns[idx];
    if (c->gen != gen || c->state == C_FREE)
        return; /* an event of a connection closed earlier in this batch */
    if (c->state == C_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t err_len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0)
            err = errno;
        if (err) { /* ECONNREFUSED, ETIMEDOUT, ... */
            conn_lost(c);
            return;
        }
        c->state = C_OPEN;
        if (c->req < 0) { /* its request timed out while it was connecting */
            release(c);
            return;
        }
        send_request(c, c->req);
        if (c->gen != gen)
            return;
    }
    if ((events & EPOLLOUT) && c->woff < c->wlen) {
        flush(c);
        if (c->gen != gen)
            return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(c, events);
}

/* ------------------------------------------------------------------------------ schedule */

static void dispatch(size_t i, double now) {
    dispatched_at[i] = now;
    last_dispatch = now;
    if (idle_head >= 0) {
        struct conn *c = &conns[idle_head];
        idle_remove(c); /* the newest idle connection */
        conn_of[i] = (int32_t)(c - conns);
        send_request(c, (int32_t)i);
        return;
    }
    if (open_conns < opt.max_connections) {
        start_connect((int32_t)i);
        return;
    }
    cap_hits++;
    dispatched_at[i] = NAN; /* not yet: it waits for a connection */
    waitq[wq_tail++] = (int32_t)i;
}

/* Requests unanswered `timeout` after their intended time become client timeouts (their
 * connection is closed, as a client that gives up closes it). */
static void sweep(double now) {
    double limit = now - opt.timeout - t0;
    while (watch_head < next_i && offsets[watch_head] <= limit) {
        size_t i = watch_head++;
        if (outcome[i] != PENDING)
            continue;
        int32_t ci = conn_of[i];
        resolve(i, TIMED_OUT);
        if (ci >= 0) {
            conns[ci].req = -1;
            release(&conns[ci]);
        }
    }
    while (watch_head < next_i && outcome[watch_head] != PENDING)
        watch_head++; /* answered: nothing to watch (so no wake-up for them either) */
}

static bool have_pwait2 = true;

static int wait_events(struct epoll_event *events, double timeout_s) {
    int got;
    if (timeout_s <= 0)
        return epoll_wait(epfd, events, MAX_EVENTS, 0);
    if (timeout_s > MAX_WAIT_S || timeout_s != timeout_s)
        timeout_s = MAX_WAIT_S;
#ifdef SYS_epoll_pwait2
    if (have_pwait2) {
        struct timespec ts;
        ts.tv_sec = (time_t)timeout_s;
        ts.tv_nsec = (long)((timeout_s - (double)ts.tv_sec) * 1e9);
        got = (int)syscall(SYS_epoll_pwait2, epfd, events, MAX_EVENTS, &ts, NULL, (size_t)8);
        if (got >= 0 || errno != ENOSYS)
            return got;
        have_pwait2 = false;
    }
#else
    (void)have_pwait2;
#endif
    /* millisecond timeouts, rounded up: a send is at most ~1 ms late at low rates */
    got = epoll_wait(epfd, events, MAX_EVENTS, (int)(timeout_s * 1000.0) + 1);
    return got;
}

static void run(void) {
    static struct epoll_event events[MAX_EVENTS];
    t0 = mono() + 0.05; /* room to enter the loop */
    while (resolved < n_req) {
        double now = mono();
        int batch = 0;
        while (next_i < n_req && batch < DISPATCH_BATCH && t0 + offsets[next_i] <= now) {
            dispatch(next_i, now);
            next_i++;
            batch++;
            now = mono();
        }
        sweep(now);
        if (resolved >= n_req)
            break;
        double wake = INFINITY;
        if (next_i < n_req)
            wake = t0 + offsets[next_i];
        if (watch_head < next_i && t0 + offsets[watch_head] + opt.timeout < wake)
            wake = t0 + offsets[watch_head] + opt.timeout;
        int got = wait_events(events, wake - now);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int k = 0; k < got; k++)
            on_event(events[k].data.u64, events[k].events);
    }
    for (int32_t k = 0; k < pool_size; k++)
        if (conns[k].fd >= 0)
            close(conns[k].fd);
}

/* ------------------------------------------------------------------------------- summary */

/* A double as Python's repr: the shortest digits that read back to it, fixed notation for
 * exponents -4..15 (with ".0" when whole), else d.ddde+XX. */
static void put_double(FILE *out, double v) {
    if (v != v) {
        fputs("NaN", out);
        return;
    }
    if (isinf(v)) {
        fputs(v > 0 ? "Infinity" : "-Infinity", out);
        return;
    }
    char buf[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    const char *s = buf;
    bool neg = *s == '-';
    if (neg)
        s++;
    char digits[24];
    size_t nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9')
            digits[nd++] = *s;
    int exp10 = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        fputc('-', out);
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int k = 0; k <= exp10; k++)
                fputc((size_t)k < nd ? digits[k] : '0', out);
            fputc('.', out);
            if ((size_t)exp10 + 1 < nd)
                fwrite(digits + exp10 + 1, 1, nd - (size_t)exp10 - 1, out);
            else
                fputc('0', out);
        } else {
            fputs("0.", out);
            for (int k = 0; k < -exp10 - 1; k++)
                fputc('0', out);
            fwrite(digits, 1, nd, out);
        }
    } else {
        fputc(digits[0], out);
        if (nd > 1) {
            fputc('.', out);
            fwrite(digits + 1, 1, nd - 1, out);
        }
        fprintf(out, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}

/* Python's round(v, places): correctly rounded through the decimal text. */
static double round_to(double v, int places) {
    if (!isfinite(v))
        return v;
    char buf[400];
    snprintf(buf, sizeof buf, "%.*f", places, v);
    return strtod(buf, NULL);
}

/* The JSON writer: json.dumps(summary) (one line) or json.dumps(summary, indent=2). */
static struct {
    FILE *out;
    bool indent;
    int depth;
    bool first[8];
} js;

static void j_key(const char *key) {
    if (js.depth > 0) {
        if (!js.first[js.depth])
            fputc(',', js.out);
        if (js.indent) {
            fputc('\n', js.out);
            for (int k = 0; k < js.depth; k++)
                fputs("  ", js.out);
        } else if (!js.first[js.depth]) {
            fputc(' ', js.out);
        }
        js.first[js.depth] = false;
    }
    if (key)
        fprintf(js.out, "\"%s\": ", key);
}

static void j_begin(const char *key) {
    j_key(key);
    fputc('{', js.out);
    js.first[++js.depth] = true;
}

static void j_end(void) {
    bool empty = js.first[js.depth];
    js.depth--;
    if (js.indent && !empty) {
        fputc('\n', js.out);
        for (int k = 0; k < js.depth; k++)
            fputs("  ", js.out);
    }
    fputc('}', js.out);
}

static void j_double(const char *key, double v) {
    j_key(key);
    put_double(js.out, v);
}

static void j_double_or_null(const char *key, double v, bool present) {
    j_key(key);
    if (present)
        put_double(js.out, v);
    else
        fputs("null", js.out);
}

static void j_int(const char *key, long long v) {
    j_key(key);
    fprintf(js.out, "%lld", v);
}

static void j_bool(const char *key, bool v) {
    j_key(key);
    fputs(v ? "true" : "false", js.out);
}

static void j_string(const char *key, const char *s) {
    j_key(key);
    fputc('"', js.out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(js.out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(js.out, "\\u%04x", ch);
        else
            fputc(ch, js.out);
    }
    fputc('"', js.out);
}

struct pct {
    bool present;
    double min_ms, p50_ms, p99_ms, max_ms;
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: ordered[max(0, ceil(p / 100 * n) - 1)], exactly as the Python driver computes
 * it (the same double arithmetic). */
static double rank(const double *ordered, size_t n, double p) {
    double x = p / 100.0 * (double)n;
    long long k = (long long)x;
    if ((double)k < x)
        k++;
    k -= 1;
    if (k < 0)
        k = 0;
    return ordered[k];
}

static struct pct percentiles_ms(double *values, size_t n) {
    struct pct r = {false, 0, 0, 0, 0};
    if (n == 0)
        return r;
    qsort(values, n, sizeof *values, cmp_double);
    r.present = true;
    r.min_ms = round_to(values[0] * 1000, 3);
    r.p50_ms = round_to(rank(values, n, 50) * 1000, 3);
    r.p99_ms = round_to(rank(values, n, 99) * 1000, 3);
    r.max_ms = round_to(values[n - 1] * 1000, 3);
    return r;
}

static int class_of(int32_t status) {
    if (status >= 200 && status < 300)
        return 0;
    if (status == 503)
        return 1;
    if (status == 504)
        return 2;
    return 3;
}

static void summarize(double cpu_s, double wall_s) {
    double end = t0 + opt.duration;
    size_t n = n_req;
    double *scratch = xcalloc(n, sizeof *scratch);
    size_t count[4] = {0, 0, 0, 0}, in_window[4] = {0, 0, 0, 0};
    size_t late = 0, timeouts = 0, unsent = 0, errors = 0, sent = 0;
    for (size_t i = 0; i < n; i++) {
        double intended = t0 + offsets[i];
        int32_t out = outcome[i];
        if (out == TIMED_OUT) {
            timeouts++;
            unsent += dispatched_at[i] != dispatched_at[i]; /* still waiting at the cap */
        } else if (out == CONN_ERROR || out == PENDING) {
            errors++;
        } else {
            int k = class_of(out);
            count[k]++;
            if (done_at[i] <= end)
                in_window[k]++;
            if (done_at[i] - intended > opt.late_after)
                late++;
        }
    }
    /* send lags */
    for (size_t i = 0; i < n; i++)
        if (dispatched_at[i] == dispatched_at[i])
            scratch[sent++] = dispatched_at[i] - (t0 + offsets[i]);
    struct pct lag = percentiles_ms(scratch, sent);
    struct pct by_class[4];
    for (int k = 0; k < 4; k++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            int32_t out = outcome[i];
            if (out != TIMED_OUT && out != CONN_ERROR && out != PENDING && class_of(out) == k)
                scratch[m++] = done_at[i] - (t0 + offsets[i]);
        }
        by_class[k] = percentiles_ms(scratch, m);
    }
    free(scratch);

    double span = opt.duration;
    if (sent && last_dispatch - t0 > span)
        span = last_dispatch - t0;
    double scheduled_rate = (double)n / opt.duration;
    double achieved_rate = (double)sent / span;
    double achieved_ratio = n ? achieved_rate / scheduled_rate : 1.0;
    char why[200] = "";
    if (lag.present && lag.p99_ms > MAX_P99_LAG_S * 1000)
        snprintf(why, sizeof why, "p99 send lag %.1f ms > %.0f ms", lag.p99_ms,
                 MAX_P99_LAG_S * 1000);
    if (achieved_ratio < MIN_ACHIEVED_RATIO) {
        size_t at = strlen(why);
        snprintf(why + at, sizeof why - at, "%ssent %.2fx the scheduled rate < %g",
                 at ? "; " : "", achieved_ratio, MIN_ACHIEVED_RATIO);
    }

    js.out = stdout;
    js.indent = !opt.json;
    js.depth = 0;
    j_begin(NULL);
    j_double("intended_rate", opt.rate);
    j_double("duration_s", opt.duration);
    j_int("seed", opt.seed);
    j_int("scheduled", (long long)n);
    j_double("scheduled_rate", round_to(scheduled_rate, 2));
    j_int("sent", (long long)sent);
    j_double("achieved_rate", round_to(achieved_rate, 2));
    j_double("achieved_ratio", round_to(achieved_ratio, 4));
    j_double_or_null("lag_p50_ms", lag.p50_ms, lag.present);
    j_double_or_null("lag_p99_ms", lag.p99_ms, lag.present);
    j_double_or_null("lag_max_ms", lag.max_ms, lag.present);
    j_bool("driver_bound", why[0] != 0);
    j_string("driver_bound_why", why);
    j_begin("classes");
    for (int k = 0; k < 4; k++) {
        j_begin(CLASSES[k]);
        j_int("count", (long long)count[k]);
        j_double_or_null("min_ms", by_class[k].min_ms, by_class[k].present);
        j_double_or_null("p50_ms", by_class[k].p50_ms, by_class[k].present);
        j_double_or_null("p99_ms", by_class[k].p99_ms, by_class[k].present);
        j_double_or_null("max_ms", by_class[k].max_ms, by_class[k].present);
        j_end();
    }
    j_end();
    j_double("goodput_per_s", round_to((double)in_window[0] / opt.duration, 2));
    j_double("refusals_per_s", round_to((double)in_window[1] / opt.duration, 2));
    j_double_or_null("late_after_s", opt.late_after, isfinite(opt.late_after));
    j_int("late_answers", (long long)late);
    j_int("client_timeouts", (long long)timeouts);
    j_int("timeouts_never_sent", (long long)unsent);
    j_int("connection_errors", (long long)errors);
    j_int("max_connections", opt.max_connections);
    j_int("cap_hits", cap_hits);
    j_int("max_open_connections", max_open);
    j_int("connections_opened", opened);
    j_double("driver_cpu_s", round_to(cpu_s, 3));
    j_double("driver_wall_s", round_to(wall_s, 3));
    j_double("started_at", t0);
    j_double("send_end_at", end > last_dispatch ? end : last_dispatch);
    /* When the last request ended (answered, failed or given up): from here on the server
       works for nobody, which is what "busy after the clients stop" measures. */
    double clients_done_at = end > last_dispatch ? end : last_dispatch;
    for (size_t i = 0; i < n_req; i++)
        if (!isnan(done_at[i]) && done_at[i] > clients_done_at)
            clients_done_at = done_at[i];
    j_double("clients_done_at", clients_done_at);
    j_end();
    fputc('\n', stdout);
    fflush(stdout);
}

/* ------------------------------------------------------------------------- command line */

static const char USAGE[] =
    "usage: openloop [-h] --url URL --rate RATE --duration DURATION\n"
    "                --endpoint {healthz,get_user,create_user} [--ids FIRST LAST]\n"
    "                [--seed SEED] [--timeout TIMEOUT]\n"
    "                [--max-connections MAX_CONNECTIONS] [--late-after LATE_AFTER]\n"
    "                [--name-prefix NAME_PREFIX] [--json]\n";

static const char HELP[] =
    "\nOpen-loop HTTP/1.1 load: each request sent at its own seeded Poisson arrival time,\n"
    "whatever the server does with the earlier ones (benchmarks/openloop.py, in C).\n\n"
    "options:\n"
    "  -h, --help            show this help message and exit\n"
    "  --url URL             the server's base URL, http://host:port\n"
    "  --rate RATE           requests a second (mean)\n"
    "  --duration DURATION   seconds of arrivals\n"
    "  --endpoint {healthz,get_user,create_user}\n"
    "  --ids FIRST LAST      get_user: the range of existing ids\n"
    "  --seed SEED\n"
    "  --timeout TIMEOUT     seconds after its intended time a request is given up (15)\n"
    "  --max-connections MAX_CONNECTIONS\n"
    "  --late-after LATE_AFTER\n"
    "                        answers later than this many seconds are counted as late\n"
    "  --name-prefix NAME_PREFIX\n"
    "                        create_user: names' prefix\n"
    "  --json                print the summary as one JSON line\n";

static void usage_error(const char *fmt, const char *a, const char *b) {
    fputs(USAGE, stderr);
    fputs("openloop: error: ", stderr);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(2);
}

static double parse_float_arg(const char *flag, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (end != s && is_space(*end))
        end++;
    if (end == s || *end)
        usage_error("argument %s: invalid float value: '%s'", flag, s);
    return v;
}

static long long parse_int_arg(const char *flag, const char *s) {
    long long v;
    if (!parse_int(s, strlen(s), &v))
        usage_error("argument %s: invalid int value: '%s'", flag, s);
    return v;
}

enum { O_URL, O_RATE, O_DURATION, O_ENDPOINT, O_IDS, O_SEED, O_TIMEOUT, O_MAXCONN,
       O_LATE, O_PREFIX, O_JSON, O_HELP, O_COUNT };
static const char *const OPT_NAMES[O_COUNT] = {
    "--url", "--rate", "--duration", "--endpoint", "--ids", "--seed", "--timeout",
    "--max-connections", "--late-after", "--name-prefix", "--json", "--help"};
static const int OPT_NARGS[O_COUNT] = {1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 0, 0};

/* argparse's rule: an argument that starts with '-' and is not a negative number is an
 * option, not a value. */
static bool looks_like_option(const char *s) {
    if (s[0] != '-' || s[1] == 0)
        return false;
    char *end;
    strtod(s, &end);
    return *end != 0;
}

static void parse_args(int argc, char **argv) {
    bool seen[O_COUNT] = {false};
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0) {
            fputs(USAGE, stdout);
            fputs(HELP, stdout);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0 || strcmp(arg, "--") == 0)
            usage_error("unrecognized arguments: %s%s", arg, "");
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        int which = -1, matches = 0;
        for (int k = 0; k < O_COUNT; k++) { /* exact, else a unique prefix (as argparse) */
            if (strlen(OPT_NAMES[k]) == name_len && strncmp(OPT_NAMES[k], arg, name_len) == 0) {
                which = k;
                matches = 1;
                break;
            }
            if (strncmp(OPT_NAMES[k], arg, name_len) == 0) {
                which = k;
                matches++;
            }
        }
        if (matches == 0)
            usage_error("unrecognized arguments: %s%s", arg, "");
        if (matches > 1)
            usage_error("ambiguous option: %s%s", arg, "");
        const char *flag = OPT_NAMES[which];
        const char *values[2] = {NULL, NULL};
        int nargs = OPT_NARGS[which];
        if (nargs == 0) {
            if (eq)
                usage_error("argument %s: ignored explicit argument '%s'", flag, eq + 1);
        } else if (eq && nargs == 1) {
            values[0] = eq + 1;
        } else {
            if (eq)
                usage_error("argument %s: expected %s arguments", flag, "2");
            for (int k = 0; k < nargs; k++) {
                if (a + 1 >= argc || looks_like_option(argv[a + 1]))
                    usage_error(nargs == 1 ? "argument %s: expected one argument"
                                           : "argument %s: expected %s arguments",
                                flag, "2");
                values[k] = argv[++a];
            }
        }
        seen[which] = true;
        switch (which) {
        case O_URL: opt.url = values[0]; break;
        case O_RATE: opt.rate = parse_float_arg(flag, values[0]); break;
        case O_DURATION: opt.duration = parse_float_arg(flag, values[0]); break;
        case O_ENDPOINT:
            if (strcmp(values[0], "healthz") == 0)
                opt.endpoint = HEALTHZ;
            else if (strcmp(values[0], "get_user") == 0)
                opt.endpoint = GET_USER;
            else if (strcmp(values[0], "create_user") == 0)
                opt.endpoint = CREATE_USER;
            else
                usage_error("argument --endpoint: invalid choice: '%s' (choose from "
                            "'healthz', 'get_user', 'create_user')%s", values[0], "");
            break;
        case O_IDS:
            opt.first_id = parse_int_arg(flag, values[0]);
            opt.last_id = parse_int_arg(flag, values[1]);
            opt.have_ids = true;
            break;
        case O_SEED: opt.seed = parse_int_arg(flag, values[0]); break;
        case O_TIMEOUT: opt.timeout = parse_float_arg(flag, values[0]); break;
        case O_MAXCONN: opt.max_connections = parse_int_arg(flag, values[0]); break;
        case O_LATE: opt.late_after = parse_float_arg(flag, values[0]); break;
        case O_PREFIX: opt.name_prefix = values[0]; break;
        case O_JSON: opt.json = true; break;
        case O_HELP:
            fputs(USAGE, stdout);
            fputs(HELP, stdout);
            exit(0);
        }
    }
    char missing[120] = "";
    const int required[4] = {O_URL, O_RATE, O_DURATION, O_ENDPOINT};
    for (int k = 0; k < 4; k++)
        if (!seen[required[k]]) {
            if (missing[0])
                strcat(missing, ", ");
            strcat(missing, OPT_NAMES[required[k]]);
        }
    if (missing[0])
        usage_error("the following arguments are required: %s%s", missing, "");
    if (opt.rate <= 0 || opt.duration <= 0 || !isfinite(opt.rate) || !isfinite(opt.duration))
        usage_error("--rate and --duration must be positive%s%s", "", "");
}

/* urlsplit(url).hostname (lower-cased, default 127.0.0.1) and .port (default 80). */
static void parse_url(const char *url, char *host, size_t host_cap, int *port) {
    snprintf(host, host_cap, "127.0.0.1");
    *port = 80;
    const char *p = strstr(url, "//");
    if (!p)
        return;
    const char *scheme_end = strchr(url, ':');
    if (p != url && !(scheme_end && scheme_end + 1 == p))
        return;
    p += 2;
    size_t len = strcspn(p, "/?#");
    const char *at = NULL;
    for (size_t k = 0; k < len; k++)
        if (p[k] == '@')
            at = p + k;
    if (at) {
        len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    const char *host_start = p, *host_end = p + len, *port_at = NULL;
    if (len && p[0] == '[') {
        const char *close_br = memchr(p, ']', len);
        if (!close_br) {
            fprintf(stderr, "openloop: invalid URL %s\n", url);
            exit(1);
        }
        host_start = p + 1;
        host_end = close_br;
        if (close_br + 1 < p + len && close_br[1] == ':')
            port_at = close_br + 2;
    } else {
        const char *colon = memchr(p, ':', len);
        if (colon) {
            host_end = colon;
            port_at = colon + 1;
        }
    }
    if (host_end > host_start) {
        size_t k = (size_t)(host_end - host_start);
        if (k >= host_cap)
            k = host_cap - 1;
        for (size_t j = 0; j < k; j++) {
            char ch = host_start[j];
            host[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
        }
        host[k] = 0;
    }
    if (port_at && port_at < p + len) {
        long long v;
        if (!parse_int(port_at, (size_t)(p + len - port_at), &v) || v < 0 || v > 65535) {
            fprintf(stderr, "openloop: invalid port in URL %s\n", url);
            exit(1);
        }
        *port = (int)v;
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    char host[256];
    int port;
    parse_url(opt.url, host, sizeof host, &port);
    if (strchr(host, ':'))
        snprintf(host_header, sizeof host_header, "[%s]:%d", host, port);
    else
        snprintf(host_header, sizeof host_header, "%s:%d", host, port);

    if (opt.endpoint == GET_USER) {
        if (!opt.have_ids) {
            fprintf(stderr, "openloop: get_user needs --ids FIRST LAST\n");
            return 1;
        }
        if (opt.last_id < opt.first_id) {
            fprintf(stderr, "openloop: --ids: LAST is below FIRST\n");
            return 1;
        }
        id_count = opt.last_id - opt.first_id + 1;
        uint64_t stream = (uint64_t)opt.seed ^ GET_USER_STREAM;
        get_user_start = (long long)(splitmix64(&stream) % (uint64_t)id_count);
    }
    char default_prefix[64];
    if (!opt.name_prefix) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(default_prefix, sizeof default_prefix, "ol%lld-%lld", opt.seed,
                 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        opt.name_prefix = default_prefix;
    }
    sendcap = 256 + strlen(host_header) + 2 * strlen(opt.name_prefix) + 64;
    sendbuf = xcalloc(sendcap, 1);

    /* The schedule: counted, then stored. */
    uint64_t state = (uint64_t)opt.seed;
    size_t n = 0;
    for (double t = next_gap(&state, opt.rate); t < opt.duration; t += next_gap(&state, opt.rate))
        if (++n >= (size_t)INT32_MAX) {
            fprintf(stderr, "openloop: over %d requests scheduled\n", INT32_MAX);
            return 1;
        }
    n_req = n;
    offsets = xcalloc(n, sizeof *offsets);
    dispatched_at = xcalloc(n, sizeof *dispatched_at);
    done_at = xcalloc(n, sizeof *done_at);
    outcome = xcalloc(n, sizeof *outcome);
    conn_of = xcalloc(n, sizeof *conn_of);
    waitq = xcalloc(n, sizeof *waitq);
    state = (uint64_t)opt.seed;
    n = 0;
    for (double t = next_gap(&state, opt.rate); t < opt.duration; t += next_gap(&state, opt.rate))
        offsets[n++] = t;
    for (size_t i = 0; i < n_req; i++) {
        dispatched_at[i] = NAN;
        done_at[i] = NAN;
        conn_of[i] = -1;
    }

    /* Connections: a pool of --max-connections places (never more are open at once). */
    long long pool = opt.max_connections > 0 ? opt.max_connections : 0;
    if (pool > INT32_MAX - 1)
        pool = INT32_MAX - 1;
    pool_size = (int32_t)pool;
    conns = xcalloc((size_t)pool_size, sizeof *conns);
    for (int32_t k = pool_size - 1; k >= 0; k--) {
        conns[k].fd = -1;
        conns[k].req = -1;
        conns[k].next_free = free_head;
        free_head = k;
    }

    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* wake-ups on time, not up to 50 us late */

    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port_text, &hints, &found);
    if (gai == 0 && found) {
        memcpy(&addr, found->ai_addr, found->ai_addrlen);
        addrlen = found->ai_addrlen;
        addr_ok = true;
        freeaddrinfo(found);
    } else { /* as the Python driver: every connection then fails */
        fprintf(stderr, "openloop: cannot resolve %s: %s\n", host, gai_strerror(gai));
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    double cpu_before = cpu_seconds();
    double started = mono();
    run();
    double wall = mono() - started;
    double cpu = cpu_seconds() - cpu_before;
    summarize(cpu, wall);
    return 0;
}

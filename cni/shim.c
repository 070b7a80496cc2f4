/*
 * The `underlay` CNI plugin's fast path: forward the call, raw, to the node agent; print its answer.
 *
 * Why C: a runtime starts the plugin on every ADD and DEL, and Python's start alone (~10-12 ms here)
 * made ADD+DEL slower than Debian's Go reference plugins. This program does only the common case:
 * it speaks the wire protocol of cni/plugin.py (4-byte big-endian length, the CNI_* variables as
 * NAME=VALUE joined by NUL, then stdin; the answer is one status byte and stdout) and answers
 * VERSION. Anything else (the agent cannot be reached or answers nothing, a config it cannot read
 * plainly) is handed, with the same stdin, to the Python plugin installed beside it, so every error
 * is still worked out by cni/spec.py: one implementation of the CNI rules, not two. The only errors
 * written here are those that leave no Python plugin to ask (it is missing, it cannot be started):
 * stdout carries a CNI error JSON on every path, exit status 1.
 *
 * Built by cni.install: cc -O2 -DFALLBACK='"<python plugin>"' -DPYTHON='"/usr/bin/python3"'.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef FALLBACK
#error "build with -DFALLBACK='\"/path/of/the/python/plugin\"'"
#endif
#ifndef PYTHON
#define PYTHON "/usr/bin/python3"
#endif

#define DEFAULT_SOCKET "/run/underlay/agent.sock"
/* stdin is read up to one byte past cni.spec.MAX_CONFIG (enough for the agent to refuse it), the
 * agent's answer up to MAX_ANSWER: a longer one is no answer of the agent's. */
#define MAX_STDIN ((16 << 20) + 1)
#define MAX_ANSWER (16 << 20)
static const char VERSION_ANSWER[] =
    "{\"cniVersion\": \"1.1.0\", \"supportedVersions\": [\"0.4.0\", \"1.0.0\", \"1.1.0\"]}\n";

extern char **environ;

struct buffer {
    char *data;
    size_t len, cap;
};

static int append(struct buffer *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return -1;
        b->data = grown, b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Read until EOF or `limit` bytes; what is past the limit stays unread. */
static int read_upto(int fd, struct buffer *b, size_t limit) {
    char chunk[65536];
    while (b->len < limit) {
        size_t want = limit - b->len < sizeof chunk ? limit - b->len : sizeof chunk;
        ssize_t n = read(fd, chunk, want);
        if (n == 0) return 0;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (append(b, chunk, (size_t)n) < 0) return -1;
    }
    return 0;
}

static int write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        data += n, len -= (size_t)n;
    }
    return 0;
}

/* `text` as a JSON string: quotes, backslashes and control bytes escaped. */
static void json_string(struct buffer *out, const char *text) {
    append(out, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        char escaped[8];
        if (*c == '"' || *c == '\\') {
            escaped[0] = '\\', escaped[1] = (char)*c;
            append(out, escaped, 2);
        } else if (*c < 0x20) {
            append(out, escaped, (size_t)snprintf(escaped, sizeof escaped, "\\u%04x", *c));
        } else {
            append(out, c, 1);
        }
    }
    append(out, "\"", 1);
}

/* A CNI error on stdout (code 100, ours: the install is broken), for when no Python plugin can say it. */
static int fail(const char *msg, const char *details) {
    struct buffer out = {0};
    static const char head[] = "{\"cniVersion\": \"1.1.0\", \"code\": 100, \"msg\": ", middle[] = ", \"details\": ";
    append(&out, head, sizeof head - 1);
    json_string(&out, msg);
    append(&out, middle, sizeof middle - 1);
    json_string(&out, details);
    append(&out, "}\n", 2);
    if (out.data) write_all(1, out.data, out.len);
    return 1;
}

/* Hand the call to the Python plugin, stdin restored from memory: it works out every error. */
static int fallback(const struct buffer *in) {
    const char *missing = access(FALLBACK, R_OK) < 0 ? FALLBACK : access(PYTHON, X_OK) < 0 ? PYTHON : NULL;
    if (missing) {
        char msg[512];
        snprintf(msg, sizeof msg, "underlay: cannot run the Python plugin: %s: %s", missing, strerror(errno));
        return fail(msg, "reinstall the plugin: python3 -m cni.install");
    }
    int fd = memfd_create("cni-stdin", 0);
    if (fd < 0 || (in->len && write_all(fd, in->data, in->len) < 0) || lseek(fd, 0, SEEK_SET) < 0 ||
        dup2(fd, 0) < 0)
        return fail("underlay: cannot hand the call to the Python plugin " FALLBACK, strerror(errno));
    char *argv[] = {PYTHON, "-IS", FALLBACK, NULL};
    execve(PYTHON, argv, environ);
    return fail("underlay: cannot run " PYTHON, strerror(errno));
}

/*
 * The config's "agentSocket", when it is there as a plain string; DEFAULT_SOCKET when the key is
 * absent. NULL (use the fallback) for what a plain scan cannot be sure of: escapes, odd spacing.
 */
static char *agent_socket(const struct buffer *in, char *path, size_t size) {
    static const char key[] = "\"agentSocket\"";
    const char *end = in->data + in->len;
    const char *at = memmem(in->data, in->len, key, sizeof key - 1);
    if (!at) return strcpy(path, DEFAULT_SOCKET);
    if (memmem(at + 1, (size_t)(end - at - 1), key, sizeof key - 1)) return NULL; /* twice: let JSON decide */
    const char *p = at + sizeof key - 1;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p >= end || *p++ != ':') return NULL;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p >= end || *p++ != '"') return NULL;
    const char *close = memchr(p, '"', (size_t)(end - p));
    if (!close || memchr(p, '\\', (size_t)(close - p)) || (size_t)(close - p) >= size || close == p) return NULL;
    memcpy(path, p, (size_t)(close - p));
    path[close - p] = '\0';
    return path;
}

static int encode_request(const struct buffer *in, struct buffer *out) {
    struct buffer env = {0};
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) != 0) continue;
        if ((env.len && append(&env, "", 1) < 0) || append(&env, *e, strlen(*e)) < 0) return -1;
    }
    uint8_t size[4] = {env.len >> 24, env.len >> 16, env.len >> 8, env.len};
    int failed = append(out, size, 4) < 0 || append(out, env.data, env.len) < 0 || append(out, in->data, in->len) < 0;
    free(env.data);
    return failed ? -1 : 0;
}

static int exchange(const char *path, const struct buffer *request, struct buffer *answer) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval timeout = {.tv_sec = 120};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    int failed = connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
                 write_all(fd, request->data, request->len) < 0 || shutdown(fd, SHUT_WR) < 0 ||
                 read_upto(fd, answer, MAX_ANSWER) < 0;
    close(fd);
    return failed ? -1 : 0;
}

int main(void) {
    struct buffer in = {0}, request = {0}, answer = {0};
    if (read_upto(0, &in, MAX_STDIN) < 0) return fallback(&in);
    const char *command = getenv("CNI_COMMAND");
    if (command && strcmp(command, "VERSION") == 0)
        return write_all(1, VERSION_ANSWER, sizeof VERSION_ANSWER - 1) < 0 ? 1 : 0;
    char path[sizeof ((struct sockaddr_un *)0)->sun_path];
    if (!agent_socket(&in, path, sizeof path) || encode_request(&in, &request) < 0 ||
        exchange(path, &request, &answer) < 0 || answer.len == 0 || answer.len >= MAX_ANSWER)
        return fallback(&in);
    return write_all(1, answer.data + 1, answer.len - 1) < 0 ? 1 : (unsigned char)answer.data[0];
}

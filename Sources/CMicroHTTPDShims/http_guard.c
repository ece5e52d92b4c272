#include "http_guard.h"
#include "tessera_http.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define ADDRESS_TEXT 48
#define MAX_PROXIES 16

enum entry_state { WAITING_HEAD, RECEIVING, RESPONDING, DROPPED };

struct tessera_http_entry {
    struct tessera_http_entry *prev, *next;
    tessera_http_guard *guard;
    int fd;
    enum entry_state state;
    int trusted_peer;
    char peer[ADDRESS_TEXT];
    char client[ADDRESS_TEXT];   /* peer, or the forwarded client behind a trusted proxy */
    uint64_t since_ms;           /* WAITING_HEAD: when waiting began; RECEIVING: window start */
    uint64_t window_bytes;
};

struct tessera_http_guard {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t reaper;
    int reaper_running, stopping;
    struct tessera_http_entry *entries;
    unsigned int per_ip_limit, head_timeout_ms, body_min_bytes, body_window_ms;
    char proxies[MAX_PROXIES][ADDRESS_TEXT];
    int proxy_count;
};

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tessera_http_format_address(const struct sockaddr *sa, char *buffer, size_t size) {
    buffer[0] = 0;
    if (!sa) return;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buffer, (socklen_t)size);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buffer, (socklen_t)size);
    }
}

/* Canonical text of an IP literal (so "::0001" and "::1" compare equal); 0 when not an address. */
static int canonical_address(const char *text, size_t length, char *out) {
    char buffer[ADDRESS_TEXT];
    while (length > 0 && isspace((unsigned char)*text)) { text++; length--; }
    while (length > 0 && isspace((unsigned char)text[length - 1])) length--;
    if (length == 0 || length >= sizeof buffer) return 0;
    memcpy(buffer, text, length);
    buffer[length] = 0;
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, buffer, &v4) == 1) return inet_ntop(AF_INET, &v4, out, ADDRESS_TEXT) != NULL;
    if (inet_pton(AF_INET6, buffer, &v6) == 1) return inet_ntop(AF_INET6, &v6, out, ADDRESS_TEXT) != NULL;
    return 0;
}

static int is_trusted(const tessera_http_guard *guard, const char *address) {
    for (int i = 0; i < guard->proxy_count; i++) {
        if (strcmp(guard->proxies[i], address) == 0) return 1;
    }
    return 0;
}

/* Open connections whose client is `address` (call with the lock held). */
static unsigned int count_client(const tessera_http_guard *guard, const char *address) {
    unsigned int count = 0;
    for (const struct tessera_http_entry *e = guard->entries; e; e = e->next) {
        if (e->state != DROPPED && strcmp(e->client, address) == 0) count++;
    }
    return count;
}

static void drop(struct tessera_http_entry *entry) {
    entry->state = DROPPED;
    /* libmicrohttpd sees end-of-stream on its next poll and closes the connection itself. */
    shutdown(entry->fd, SHUT_RDWR);
}

static void *reap(void *argument) {
    tessera_http_guard *guard = argument;
    pthread_mutex_lock(&guard->lock);
    while (!guard->stopping) {
        uint64_t now = now_ms();
        for (struct tessera_http_entry *e = guard->entries; e; e = e->next) {
            if (e->fd < 0) continue;
            if (e->state == WAITING_HEAD && guard->head_timeout_ms && now - e->since_ms >= guard->head_timeout_ms) {
                drop(e);
            } else if (e->state == RECEIVING && guard->body_window_ms && now - e->since_ms >= guard->body_window_ms) {
                if (e->window_bytes < guard->body_min_bytes) {
                    drop(e);
                } else {
                    e->since_ms = now;
                    e->window_bytes = 0;
                }
            }
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&guard->wake, &guard->lock, &until);
    }
    pthread_mutex_unlock(&guard->lock);
    return NULL;
}

tessera_http_guard *tessera_http_guard_create(const tessera_mhd_options *o) {
    tessera_http_guard *guard = calloc(1, sizeof *guard);
    if (!guard) return NULL;
    pthread_mutex_init(&guard->lock, NULL);
    pthread_cond_init(&guard->wake, NULL);
    guard->per_ip_limit = o->per_ip_limit;
    guard->head_timeout_ms = o->head_timeout_ms;
    guard->body_min_bytes = o->body_min_bytes;
    guard->body_window_ms = o->body_window_ms;
    for (const char *p = o->trusted_proxies; p && *p && guard->proxy_count < MAX_PROXIES;) {
        const char *comma = strchr(p, ',');
        size_t length = comma ? (size_t)(comma - p) : strlen(p);
        if (canonical_address(p, length, guard->proxies[guard->proxy_count])) guard->proxy_count++;
        p = comma ? comma + 1 : p + length;
    }
    if (guard->head_timeout_ms || guard->body_window_ms) {
        if (pthread_create(&guard->reaper, NULL, reap, guard) != 0) {
            tessera_http_guard_destroy(guard);
            return NULL;
        }
        guard->reaper_running = 1;
    }
    return guard;
}

void tessera_http_guard_destroy(tessera_http_guard *guard) {
    if (!guard) return;
    pthread_mutex_lock(&guard->lock);
    guard->stopping = 1;
    pthread_cond_signal(&guard->wake);
    pthread_mutex_unlock(&guard->lock);
    if (guard->reaper_running) pthread_join(guard->reaper, NULL);
    while (guard->entries) {
        struct tessera_http_entry *next = guard->entries->next;
        free(guard->entries);
        guard->entries = next;
    }
    pthread_cond_destroy(&guard->wake);
    pthread_mutex_destroy(&guard->lock);
    free(guard);
}

int tessera_http_guard_admit(tessera_http_guard *guard, const struct sockaddr *peer) {
    char address[ADDRESS_TEXT];
    tessera_http_format_address(peer, address, sizeof address);
    if (!guard->per_ip_limit || is_trusted(guard, address)) return 1;
    pthread_mutex_lock(&guard->lock);
    int admitted = count_client(guard, address) < guard->per_ip_limit;
    pthread_mutex_unlock(&guard->lock);
    return admitted;
}

tessera_http_entry *tessera_http_guard_opened(tessera_http_guard *guard, int fd, const struct sockaddr *peer) {
    struct tessera_http_entry *entry = calloc(1, sizeof *entry);
    if (!entry) return NULL;
    entry->guard = guard;
    entry->fd = fd;
    entry->state = WAITING_HEAD;
    entry->since_ms = now_ms();
    tessera_http_format_address(peer, entry->peer, sizeof entry->peer);
    entry->trusted_peer = is_trusted(guard, entry->peer);
    /* A proxy's connections count for the client it names, once a head names one. */
    if (!entry->trusted_peer) memcpy(entry->client, entry->peer, sizeof entry->client);
    pthread_mutex_lock(&guard->lock);
    entry->next = guard->entries;
    if (guard->entries) guard->entries->prev = entry;
    guard->entries = entry;
    pthread_mutex_unlock(&guard->lock);
    return entry;
}

void tessera_http_guard_closed(tessera_http_guard *guard, tessera_http_entry *entry) {
    if (!entry) return;
    pthread_mutex_lock(&guard->lock);
    if (entry->prev) entry->prev->next = entry->next; else guard->entries = entry->next;
    if (entry->next) entry->next->prev = entry->prev;
    pthread_mutex_unlock(&guard->lock);
    free(entry);
}

void tessera_http_guard_request_done(tessera_http_guard *guard, tessera_http_entry *entry) {
    if (!entry) return;
    pthread_mutex_lock(&guard->lock);
    if (entry->state != DROPPED) {
        entry->state = WAITING_HEAD;
        entry->since_ms = now_ms();
    }
    pthread_mutex_unlock(&guard->lock);
}

int tessera_mhd_head_received(struct MHD_Connection *connection, const char *forwarded_for, char *client, size_t size) {
    tessera_http_entry *entry = tessera_mhd_connection_entry(connection);
    client[0] = 0;
    if (!entry) return 1;
    tessera_http_guard *guard = entry->guard;
    char forwarded[ADDRESS_TEXT] = {0};
    if (entry->trusted_peer && forwarded_for) {
        /* The proxy appends the address it saw: the last entry is the one it vouches for. */
        const char *last = strrchr(forwarded_for, ',');
        last = last ? last + 1 : forwarded_for;
        canonical_address(last, strlen(last), forwarded);
    }
    pthread_mutex_lock(&guard->lock);
    if (entry->trusted_peer) memcpy(entry->client, forwarded[0] ? forwarded : entry->peer, sizeof entry->client);
    int allowed = 1;
    if (entry->trusted_peer && forwarded[0] && guard->per_ip_limit) {
        allowed = count_client(guard, entry->client) <= guard->per_ip_limit;
    }
    if (entry->state != DROPPED) {
        entry->state = RECEIVING;
        entry->since_ms = now_ms();
        entry->window_bytes = 0;
    }
    snprintf(client, size, "%s", entry->client);
    pthread_mutex_unlock(&guard->lock);
    return allowed;
}

void tessera_mhd_body_received(struct MHD_Connection *connection, size_t bytes) {
    tessera_http_entry *entry = tessera_mhd_connection_entry(connection);
    if (!entry) return;
    pthread_mutex_lock(&entry->guard->lock);
    entry->window_bytes += bytes;
    pthread_mutex_unlock(&entry->guard->lock);
}

void tessera_mhd_responding(struct MHD_Connection *connection) {
    tessera_http_entry *entry = tessera_mhd_connection_entry(connection);
    if (!entry) return;
    pthread_mutex_lock(&entry->guard->lock);
    if (entry->state != DROPPED) entry->state = RESPONDING;
    pthread_mutex_unlock(&entry->guard->lock);
}

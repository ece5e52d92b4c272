#pragma once
/* Non-variadic wrappers for libmicrohttpd's variadic start / info calls. */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Limits and threading for tessera_mhd_start. */
typedef struct tessera_mhd_options {
    const char *host;              /* IPv4 or IPv6 literal to bind, NULL = all */
    uint16_t port;                 /* 0 = any free port */
    unsigned int threads;          /* thread pool size (>= 1), each thread on its own epoll */
    unsigned int connection_limit;
    unsigned int per_ip_limit;     /* open connections per client address (0 = none) */
    unsigned int timeout_seconds;  /* inactivity timeout of a connection */
    size_t memory_limit;           /* per-connection memory limit in bytes */
    unsigned int head_timeout_ms;  /* a request head must arrive within this (0 = none) */
    unsigned int body_min_bytes;   /* an upload must bring this many bytes ... */
    unsigned int body_window_ms;   /* ... in every window of this length (0 = no rate check) */
    const char *trusted_proxies;   /* comma-separated IP literals whose X-Forwarded-For counts */
} tessera_mhd_options;

typedef struct tessera_mhd_server tessera_mhd_server;
typedef struct tessera_http_entry tessera_http_entry;

/**
 * MHD_start_daemon with an internal polling thread pool on epoll, the access handler, a
 * completion callback, the connection guard (per-address limits, head timeout, body rate) and
 * every limit set explicitly. Returns NULL on failure (e.g. port in use, bad host).
 */
tessera_mhd_server *tessera_mhd_start(const tessera_mhd_options *options,
                                      MHD_AccessHandlerCallback handler, void *handler_cls,
                                      MHD_RequestCompletedCallback completed, void *completed_cls);
/** Stops the daemon (waits for its threads) and the guard, and frees the server. */
void tessera_mhd_stop(tessera_mhd_server *server);
/** The bound port (MHD_get_daemon_info ... MHD_DAEMON_INFO_BIND_PORT). */
uint16_t tessera_mhd_bound_port(tessera_mhd_server *server);
/** The client's IP address as text into `buffer` (empty when unknown). */
void tessera_mhd_client_address(struct MHD_Connection *connection, char *buffer, size_t size);
/** The guard's record of a connection (NULL when unknown). */
tessera_http_entry *tessera_mhd_connection_entry(struct MHD_Connection *connection);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
/**
 * The request head of `connection` arrived. Its client is the peer, or, when the peer is a
 * trusted proxy, the last address of `forwarded_for` (X-Forwarded-For; may be NULL). Writes
 * the client into `client`; returns 0 when that client is over its connection limit.
 */
int tessera_mhd_head_received(struct MHD_Connection *connection, const char *forwarded_for, char *client, size_t size);
/** Body bytes arrived (for the minimum upload rate). */
void tessera_mhd_body_received(struct MHD_Connection *connection, size_t bytes);
/** A response is queued: no rate check until the next request. */
void tessera_mhd_responding(struct MHD_Connection *connection);
#ifdef __cplusplus
}
#endif

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
    unsigned int threads;          /* thread pool size (>= 1) */
    unsigned int connection_limit;
    unsigned int per_ip_limit;
    unsigned int timeout_seconds;
    size_t memory_limit;           /* per-connection memory limit in bytes */
} tessera_mhd_options;

/**
 * MHD_start_daemon with an internal polling thread pool (epoll where available),
 * the access handler, a completion callback, and every limit set explicitly.
 * Returns NULL on failure (e.g. port in use, bad host).
 */
struct MHD_Daemon *tessera_mhd_start(const tessera_mhd_options *options,
                                     MHD_AccessHandlerCallback handler, void *handler_cls,
                                     MHD_RequestCompletedCallback completed, void *completed_cls);
/** The bound port (MHD_get_daemon_info ... MHD_DAEMON_INFO_BIND_PORT). */
uint16_t tessera_mhd_bound_port(struct MHD_Daemon *daemon);
/** The client's IP address as text into `buffer` (empty when unknown). */
void tessera_mhd_client_address(struct MHD_Connection *connection, char *buffer, size_t size);

#ifdef __cplusplus
}
#endif

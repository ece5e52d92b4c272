#include "tessera_http.h"
#include "http_guard.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

struct tessera_mhd_server {
    struct MHD_Daemon *daemon;
    tessera_http_guard *guard;
    MHD_RequestCompletedCallback completed;
    void *completed_cls;
};

/* %HH decoding as libmicrohttpd's own, then NUL and other control bytes become '_', so a value
   such as a file name is never cut short at an escaped NUL (a%00b.svs keeps its extension). */
static size_t unescape(void *cls, struct MHD_Connection *connection, char *s) {
    (void)cls;
    (void)connection;
    size_t length = MHD_http_unescape(s);
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) s[i] = '_';
    }
    return length;
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addrlen;
    return tessera_http_guard_admit((tessera_http_guard *)cls, addr) ? MHD_YES : MHD_NO;
}

static void notify_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                              enum MHD_ConnectionNotificationCode code) {
    tessera_http_guard *guard = (tessera_http_guard *)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *peer = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        *socket_context = tessera_http_guard_opened(guard, fd ? fd->connect_fd : -1, peer ? peer->client_addr : NULL);
    } else {
        /* Called before libmicrohttpd closes the socket: the reaper never touches a closed fd. */
        tessera_http_guard_closed(guard, *socket_context);
        *socket_context = NULL;
    }
}

static void request_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                              enum MHD_RequestTerminationCode code) {
    struct tessera_mhd_server *server = (struct tessera_mhd_server *)cls;
    tessera_http_guard_request_done(server->guard, tessera_mhd_connection_entry(connection));
    server->completed(server->completed_cls, connection, con_cls, code);
}

struct tessera_mhd_server *tessera_mhd_start(const tessera_mhd_options *o,
                                             MHD_AccessHandlerCallback handler, void *handler_cls,
                                             MHD_RequestCompletedCallback completed, void *completed_cls) {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    const struct sockaddr *address = NULL;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    memset(&v4, 0, sizeof v4);
    memset(&v6, 0, sizeof v6);
    if (o->host && *o->host) {
        if (inet_pton(AF_INET, o->host, &v4.sin_addr) == 1) {
            v4.sin_family = AF_INET;
            v4.sin_port = htons(o->port);
            address = (const struct sockaddr *)&v4;
        } else if (inet_pton(AF_INET6, o->host, &v6.sin6_addr) == 1) {
            v6.sin6_family = AF_INET6;
            v6.sin6_port = htons(o->port);
            address = (const struct sockaddr *)&v6;
            flags |= MHD_USE_IPv6;
        } else {
            return NULL;
        }
    }
    struct tessera_mhd_server *server = calloc(1, sizeof *server);
    if (!server) return NULL;
    server->guard = tessera_http_guard_create(o);
    if (!server->guard) {
        free(server);
        return NULL;
    }
    server->completed = completed;
    server->completed_cls = completed_cls;
    unsigned int threads = o->threads ? o->threads : 1;
    /* A NULL MHD_OPTION_SOCK_ADDR binds every address on `port`. The per-address limit is the
       guard's (it exempts trusted proxies), not libmicrohttpd's. */
    server->daemon = MHD_start_daemon(flags, o->port, accept_policy, server->guard, handler, handler_cls,
                                      MHD_OPTION_NOTIFY_COMPLETED, request_completed, server,
                                      MHD_OPTION_NOTIFY_CONNECTION, notify_connection, server->guard,
                                      MHD_OPTION_THREAD_POOL_SIZE, threads,
                                      MHD_OPTION_CONNECTION_LIMIT, o->connection_limit,
                                      MHD_OPTION_CONNECTION_TIMEOUT, o->timeout_seconds,
                                      MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->memory_limit,
                                      MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                                      MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
                                      MHD_OPTION_SOCK_ADDR, address,
                                      MHD_OPTION_END);
    if (!server->daemon) {
        tessera_http_guard_destroy(server->guard);
        free(server);
        return NULL;
    }
    return server;
}

void tessera_mhd_stop(struct tessera_mhd_server *server) {
    if (!server) return;
    MHD_stop_daemon(server->daemon);
    tessera_http_guard_destroy(server->guard);
    free(server);
}

tessera_http_guard *tessera_mhd_guard(struct tessera_mhd_server *server) { return server->guard; }

tessera_http_entry *tessera_mhd_connection_entry(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? (tessera_http_entry *)info->socket_context : NULL;
}

uint16_t tessera_mhd_bound_port(struct tessera_mhd_server *server) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

void tessera_mhd_client_address(struct MHD_Connection *connection, char *buffer, size_t size) {
    buffer[0] = 0;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (info) tessera_http_format_address(info->client_addr, buffer, size);
}

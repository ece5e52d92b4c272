#pragma once
/* The connection guard of the HTTP server (private to CMicroHTTPDShims): a registry of open
   connections, per-address limits, the request-head timeout and the minimum upload rate. */
#include "tessera_http.h"

typedef struct tessera_http_guard tessera_http_guard;

tessera_http_guard *tessera_http_guard_create(const tessera_mhd_options *options);
/** Stops the reaper thread and frees the guard (after the daemon has stopped). */
void tessera_http_guard_destroy(tessera_http_guard *guard);
/** Accept policy: 0 when the peer already holds its share of connections. */
int tessera_http_guard_admit(tessera_http_guard *guard, const struct sockaddr *peer);
/** A connection opened: its record (NULL when out of memory). */
tessera_http_entry *tessera_http_guard_opened(tessera_http_guard *guard, int fd, const struct sockaddr *peer);
/** A connection is about to be closed: its record is freed. */
void tessera_http_guard_closed(tessera_http_guard *guard, tessera_http_entry *entry);
/** A request finished: the connection waits for the next head (under the head timeout). */
void tessera_http_guard_request_done(tessera_http_guard *guard, tessera_http_entry *entry);
/** Text form of an IPv4 / IPv6 socket address. */
void tessera_http_format_address(const struct sockaddr *address, char *buffer, size_t size);

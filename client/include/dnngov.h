/*
 * dnngov.h: the C interface of the dnngov client shim (libdnngov_client.so / .a).
 *
 * An app registers its sub-network library and its target once, then around every
 * inference asks which sub-network to run (one atomic load), marks begin and end, and
 * acknowledges a switch. Without a running agent, registration still succeeds: the app
 * runs its most accurate sub-network and the library connects in the background.
 *
 *   dnngov_subnet lib[] = {{0, "small", 74.2, 41.2, 0}, {1, "large", 79.0, 61.7, 0}};
 *   dnngov_target target = {60.0, 66.7, 74.0, 0};
 *   dnngov_session *s = dnngov_register("detector", DNNGOV_DEVICE_GPU, lib, 2, &target, NULL);
 *   if (!s) fprintf(stderr, "dnngov: %s\n", dnngov_last_error());
 *   for (;;) {
 *       uint32_t subnet = dnngov_current_subnet(s);
 *       ... switch to subnet if it changed ...
 *       dnngov_ack_subnet(s, subnet);
 *       dnngov_begin(s, 60000000);   // deadline in ns
 *       ... one inference ...
 *       dnngov_end(s);
 *   }
 *   dnngov_close(s);
 *
 * Link with -ldnngov_client (and -lpthread -ldl -lm for the static library).
 *
 * With DNNGOV_TRACE_DIR naming a folder at registration, dnngov_end also appends one line
 * per inference to <folder>/<app>-<pid>.csv, for evaluation runs (docs/app-integration.md).
 */
#ifndef DNNGOV_H
#define DNNGOV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DNNGOV_DEVICE_CPU 1u
#define DNNGOV_DEVICE_GPU 2u

/* One sub-network. List them from least to most accurate.
 * latency_ms (at full clocks) and relative_cost: 0 when unknown. */
typedef struct dnngov_subnet {
    uint32_t id;
    const char *name;
    double accuracy_pct;
    double latency_ms;
    double relative_cost;
} dnngov_subnet;

/* What each inference needs. period_ms and accuracy_floor_pct: 0 for none.
 * priority: higher wins when not every app can be served. */
typedef struct dnngov_target {
    double deadline_ms;
    double period_ms;
    double accuracy_floor_pct;
    uint8_t priority;
} dnngov_target;

typedef struct dnngov_session dnngov_session;

/* socket_path: NULL for $DNNGOV_SOCKET, else /run/dnngov/agent.sock.
 * Returns NULL on an invalid spec or a refusal (see dnngov_last_error). */
dnngov_session *dnngov_register(const char *app, uint32_t devices,
                                const dnngov_subnet *subnets, size_t n_subnets,
                                const dnngov_target *target, const char *socket_path);

/* The sub-network to run now: one atomic load, no syscall. */
uint32_t dnngov_current_subnet(const dnngov_session *session);

/* Marks an inference's start (deadline in ns, 0 for none); returns its sequence number. */
uint64_t dnngov_begin(const dnngov_session *session, uint64_t deadline_ns);

/* Marks the end of the inference begun last; returns its latency in ns. */
uint64_t dnngov_end(const dnngov_session *session);

/* Tells the agent the app now runs this sub-network. */
void dnngov_ack_subnet(const dnngov_session *session, uint32_t subnet);

/* New target; 0 on success, -1 on an invalid one (see dnngov_last_error). */
int dnngov_set_target(const dnngov_session *session, const dnngov_target *target);

/* 1 while an agent governs the app, else 0. */
int dnngov_is_connected(const dnngov_session *session);

/* The agent's id for this app; 0 while not registered. */
uint32_t dnngov_app_id(const dnngov_session *session);

/* Unregisters and frees; NULL is ignored. */
void dnngov_close(dnngov_session *session);

/* The calling thread's last error message, or "". */
const char *dnngov_last_error(void);

/* The markers the agent's eBPF uprobes attach to; dnngov_begin/dnngov_end call them. */
void dnngov_marker_begin(uint32_t app_id, uint64_t seq, uint32_t subnet, uint64_t deadline_ns);
void dnngov_marker_end(uint32_t app_id, uint64_t seq);

#ifdef __cplusplus
}
#endif

#endif /* DNNGOV_H */

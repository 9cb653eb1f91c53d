/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every inference's begin and end, from uprobes on the client's marker
 * functions. Counters stay in the kernel so the agent reads totals without
 * draining anything; each app's finished inferences also go to that app's own
 * ring buffer, so one chatty app cannot crowd out another's records.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "intf.h"

char LICENSE[] SEC("license") = "GPL";

/*
 * app id -> tgid allowed to report for it (0: any). An app id absent here is
 * not registered: its markers are ignored, since a uprobe on a shared library
 * fires in every process that maps it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DNNGOV_MAX_APPS);
	__type(key, u32);
	__type(value, u32);
} app_owner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DNNGOV_MAX_APPS);
	__type(key, u32);
	__type(value, struct app_stats);
} app_stats SEC(".maps");

/*
 * LRU so an app that dies between begin and end cannot fill the map; per-CPU
 * LRU lists because the shared list's lock dominated the begin probe's cost.
 */
struct {
	__uint(type, 9 /* BPF_MAP_TYPE_LRU_HASH */);
	__uint(map_flags, 2 /* BPF_F_NO_COMMON_LRU */);
	__uint(max_entries, DNNGOV_MAX_INFLIGHT);
	__type(key, struct inflight_key);
	__type(value, struct inflight_val);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, DNNGOV_MAX_APPS);
	__type(key, u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_RINGBUF);
		__uint(max_entries, DNNGOV_RING_BYTES);
	});
} app_rings SEC(".maps");

/* Force the record types into BTF so the skeleton emits them for Rust. */
struct infer_record dnngov_infer_record_layout = {};
struct app_stats dnngov_app_stats_layout = {};
enum dnngov_limits dnngov_limits_layout;

SEC("uprobe")
int BPF_UPROBE(dnngov_marker_begin, u32 app_id, u64 seq, u32 subnet, u64 deadline_ns)
{
	u64 now = bpf_ktime_get_ns();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 *owner = bpf_map_lookup_elem(&app_owner, &app_id);
	struct inflight_key key = { .tgid = tgid, .app_id = app_id, .seq = seq };
	struct inflight_val val = {
		.begin_ns = now,
		.deadline_ns = deadline_ns,
		.subnet = subnet,
	};

	if (!owner || (*owner && *owner != tgid))
		return 0;
	bpf_map_update_elem(&inflight, &key, &val, BPF_ANY);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(dnngov_marker_end, u32 app_id, u64 seq)
{
	u64 now = bpf_ktime_get_ns();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct inflight_key key = { .tgid = tgid, .app_id = app_id, .seq = seq };
	struct inflight_val *found, val;
	struct app_stats *stats;
	struct infer_record *rec;
	void *ring;
	u64 latency;

	found = bpf_map_lookup_elem(&inflight, &key);
	if (!found)
		return 0;
	val = *found;
	/*
	 * Deleting first makes a second run of this program for the same call
	 * (two apps' probes on one shared library) find nothing and count nothing.
	 */
	if (bpf_map_delete_elem(&inflight, &key))
		return 0;
	stats = bpf_map_lookup_elem(&app_stats, &app_id);
	if (!stats)
		return 0;

	latency = now - val.begin_ns;
	__sync_fetch_and_add(&stats->count, 1);
	__sync_fetch_and_add(&stats->latency_sum_ns, latency);
	if (val.deadline_ns && latency > val.deadline_ns)
		__sync_fetch_and_add(&stats->misses, 1);

	ring = bpf_map_lookup_elem(&app_rings, &app_id);
	if (!ring) {
		__sync_fetch_and_add(&stats->dropped, 1);
		return 0;
	}
	rec = bpf_ringbuf_reserve(ring, sizeof(*rec), 0);
	if (!rec) {
		__sync_fetch_and_add(&stats->dropped, 1);
		return 0;
	}
	rec->pid = tgid;
	rec->app_id = app_id;
	rec->seq = seq;
	rec->begin_ns = val.begin_ns;
	rec->end_ns = now;
	rec->deadline_ns = val.deadline_ns;
	rec->subnet = val.subnet;
	rec->_pad = 0;
	bpf_ringbuf_submit(rec, 0);
	return 0;
}

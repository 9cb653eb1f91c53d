/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Maps and accounting shared by both sched_switch variants, so the loader reads
 * the same layout whichever variant the kernel accepted.
 */
#ifndef __DNNGOV_SCHED_COMMON_H
#define __DNNGOV_SCHED_COMMON_H

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "intf.h"

char LICENSE[] SEC("license") = "GPL";

/* Indexed by CPU number; in .bss, which libbpf maps into the agent's memory. */
struct cpu_state dnngov_cpus[DNNGOV_MAX_CPUS];

/*
 * tgid -> on-CPU ns. The agent inserts a zero to watch a process; only keys
 * present are counted, so the cost does not grow with unrelated processes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DNNGOV_MAX_WATCHED);
	__type(key, u32);
	__type(value, u64);
} proc_on_cpu SEC(".maps");

static __always_inline void account_switch(u32 prev_tgid, bool prev_idle,
					   u32 next_tgid, bool next_idle)
{
	u64 now = bpf_ktime_get_ns();
	u32 cpu = bpf_get_smp_processor_id();
	struct cpu_state *st;

	if (cpu >= DNNGOV_MAX_CPUS)
		return;
	st = &dnngov_cpus[cpu];
	/* Odd from here to the end: a reader seeing it retries. */
	__sync_fetch_and_add(&st->seq, 1);
	/* since_ns is 0 until the first switch after load: nothing to charge yet. */
	if (st->since_ns && !prev_idle) {
		u64 delta = now - st->since_ns;
		u64 *ns;

		st->busy_ns += delta;
		ns = bpf_map_lookup_elem(&proc_on_cpu, &prev_tgid);
		/* Threads of one process run on several CPUs at once. */
		if (ns)
			__sync_fetch_and_add(ns, delta);
	}
	st->since_ns = now;
	st->cur_tgid = next_idle ? 0 : next_tgid;
	st->cur_idle = next_idle;
	__sync_fetch_and_add(&st->seq, 1);
}

#endif /* __DNNGOV_SCHED_COMMON_H */

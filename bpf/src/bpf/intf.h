/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Records and constants shared by the BPF programs and the Rust loader. The
 * Rust side gets these layouts from the object's BTF (libbpf-cargo emits them
 * into the skeleton's `types` module), so this file is the one definition.
 */
#ifndef __DNNGOV_INTF_H
#define __DNNGOV_INTF_H

#ifndef __VMLINUX_H__
typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
#endif

enum dnngov_limits {
	/* Processes the agent may watch at once; registered apps plus headroom. */
	DNNGOV_MAX_WATCHED = 1024,
	/* Matches governor-proto's MAX_APPS with room for re-registration churn. */
	DNNGOV_MAX_APPS = 256,
	/* Begun-but-not-ended inferences across all apps. */
	DNNGOV_MAX_INFLIGHT = 4096,
	/* Processes that submit GPU work, tracked per process. */
	DNNGOV_MAX_GPU_PROCS = 1024,
	/* Bytes of each app's record ring; a power of two and a page multiple. */
	DNNGOV_RING_BYTES = 64 * 1024,
	/* CPUs whose busy time is counted (CPU numbers below this). */
	DNNGOV_MAX_CPUS = 1024,
};

/*
 * Scheduler state of one CPU: one slot per CPU number in a global array that
 * the agent reads from mapped memory, without a system call. Only the CPU
 * itself writes its slot, between two increments of `seq` (odd while it
 * writes); the reader retries while `seq` is odd or changes under it. A whole
 * cache line per CPU, so CPUs do not write each other's lines.
 */
struct cpu_state {
	/* Cumulative ns this CPU ran anything but its idle task. */
	u64 busy_ns;
	/* bpf_ktime_get_ns() of the last switch on this CPU; 0 before the first. */
	u64 since_ns;
	/* tgid of the task switched in at since_ns; 0 when idle or unknown. */
	u32 cur_tgid;
	/* 1 while the idle task runs. */
	u32 cur_idle;
	/* Odd while the CPU updates the fields above. */
	u64 seq;
	u64 _pad[4];
};

/* Key of an inference between its begin and end markers. */
struct inflight_key {
	u32 tgid;
	u32 app_id;
	u64 seq;
};

struct inflight_val {
	u64 begin_ns;
	u64 deadline_ns;
	u32 subnet;
	u32 _pad;
};

/* One finished inference, as written to the app's ring buffer. */
struct infer_record {
	u32 pid;
	u32 app_id;
	u64 seq;
	u64 begin_ns;
	u64 end_ns;
	/* Relative to begin_ns; 0 means no deadline. */
	u64 deadline_ns;
	u32 subnet;
	u32 _pad;
};

/* Counters per app, kept in the kernel. */
struct app_stats {
	u64 count;
	u64 misses;
	u64 latency_sum_ns;
	/* Ring records lost because the app's ring was full or absent. */
	u64 dropped;
};

/* Which GPU event a program counts; index into gpu_device_stats. */
enum gpu_event {
	GPU_EV_DRM_QUEUE = 0,
	GPU_EV_DRM_RUN = 1,
	GPU_EV_DRM_DONE = 2,
	GPU_EV_GK20A_SUBMIT = 3,
	GPU_EV_COUNT = 4,
};

/* Device-wide GPU activity seen through DRM scheduler events. */
struct gpu_device_stats {
	u64 events[GPU_EV_COUNT];
	/* ns with at least one job between run and done. */
	u64 busy_ns;
	/* Jobs run but not yet done. */
	s32 inflight;
	u32 _pad;
	/* When inflight last went from 0 to 1. */
	u64 busy_since_ns;
};

/* Per submitting process. */
struct gpu_proc_stats {
	u64 submissions;
	u64 last_submit_ns;
};

#endif /* __DNNGOV_INTF_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPU activity from whichever scheduler tracepoints the kernel has. Raw
 * tracepoints need neither BTF nor tracefs and the programs read no event
 * arguments (whose layouts differ between drivers and kernel versions): the
 * submitting process is current at queue/submit time, and device busy time is
 * the union of run..done intervals.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "intf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct gpu_device_stats);
} gpu_device SEC(".maps");

struct {
	__uint(type, 9 /* BPF_MAP_TYPE_LRU_HASH */);
	__uint(max_entries, DNNGOV_MAX_GPU_PROCS);
	__type(key, u32);
	__type(value, struct gpu_proc_stats);
} gpu_procs SEC(".maps");

struct gpu_device_stats dnngov_gpu_device_layout = {};
struct gpu_proc_stats dnngov_gpu_proc_layout = {};
enum gpu_event dnngov_gpu_event_layout;

static __always_inline struct gpu_device_stats *device(enum gpu_event ev)
{
	u32 zero = 0;
	struct gpu_device_stats *s = bpf_map_lookup_elem(&gpu_device, &zero);

	if (s && ev < GPU_EV_COUNT)
		__sync_fetch_and_add(&s->events[ev], 1);
	return s;
}

static __always_inline void submitted(enum gpu_event ev)
{
	u64 now = bpf_ktime_get_ns();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct gpu_proc_stats fresh = {}, *p;

	device(ev);
	p = bpf_map_lookup_elem(&gpu_procs, &tgid);
	if (!p) {
		bpf_map_update_elem(&gpu_procs, &tgid, &fresh, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&gpu_procs, &tgid);
		if (!p)
			return;
	}
	__sync_fetch_and_add(&p->submissions, 1);
	p->last_submit_ns = now;
}

/*
 * Plain read-modify-write on inflight: atomics that return the old value need
 * BPF v3 (kernel 5.12), which older Jetson kernels lack. A lost update between
 * two rings finishing at once skews busy time by one interval; the clamp below
 * keeps it from drifting.
 */
static __always_inline void job_run(void)
{
	u64 now = bpf_ktime_get_ns();
	struct gpu_device_stats *s = device(GPU_EV_DRM_RUN);

	if (!s)
		return;
	if (s->inflight <= 0) {
		s->inflight = 0;
		s->busy_since_ns = now;
	}
	s->inflight += 1;
}

static __always_inline void job_done(void)
{
	u64 now = bpf_ktime_get_ns();
	struct gpu_device_stats *s = device(GPU_EV_DRM_DONE);

	/* A job that started before attach has no run to pair with. */
	if (!s || s->inflight <= 0)
		return;
	s->inflight -= 1;
	if (s->inflight == 0)
		__sync_fetch_and_add(&s->busy_ns, now - s->busy_since_ns);
}

/* Recent kernels' names first, then the historic ones; the loader attaches
 * whichever exist. */
SEC("raw_tp")
int dnngov_drm_job_queue(void *ctx)
{
	submitted(GPU_EV_DRM_QUEUE);
	return 0;
}

SEC("raw_tp")
int dnngov_drm_job_run(void *ctx)
{
	job_run();
	return 0;
}

SEC("raw_tp")
int dnngov_drm_job_done(void *ctx)
{
	job_done();
	return 0;
}

SEC("raw_tp")
int dnngov_gk20a_submit(void *ctx)
{
	submitted(GPU_EV_GK20A_SUBMIT);
	return 0;
}

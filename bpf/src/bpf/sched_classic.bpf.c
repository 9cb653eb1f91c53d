/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The same accounting from the classic sched_switch tracepoint, for kernels
 * without BTF. Its record layout is a stable tracefs format, read at fixed
 * offsets because there is no BTF to relocate against. The record has thread
 * ids only: prev's tgid comes from current (the tracepoint fires before the
 * switch), next's tgid is unknown, so the loader cannot extend a watched
 * process's time to the moment of reading in this variant.
 */
#include "sched_common.bpf.h"

struct sched_switch_record {
	u64 common;
	char prev_comm[16];
	pid_t prev_pid;
	int prev_prio;
	long prev_state;
	char next_comm[16];
	pid_t next_pid;
	int next_prio;
};

SEC("tracepoint/sched/sched_switch")
int dnngov_sched_switch_classic(struct sched_switch_record *ctx)
{
	u32 prev_tgid = bpf_get_current_pid_tgid() >> 32;

	account_switch(prev_tgid, ctx->prev_pid == 0, 0, ctx->next_pid == 0);
	return 0;
}

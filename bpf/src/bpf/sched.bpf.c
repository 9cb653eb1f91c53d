/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU time per CPU and per watched process from the BTF-typed sched_switch
 * tracepoint: direct reads of prev/next, no tracefs needed.
 */
#include "sched_common.bpf.h"

SEC("tp_btf/sched_switch")
int BPF_PROG(dnngov_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	/* The idle task is pid 0 on every CPU. */
	account_switch(prev->tgid, prev->pid == 0, next->tgid, next->pid == 0);
	return 0;
}

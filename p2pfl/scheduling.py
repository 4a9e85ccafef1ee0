"""The Linux scheduling policy of a node's process (``--cpu-policy``).

Node processes are throughput work: several of them (and their ZeroMQ I/O threads) take
turns on a machine's cores, and each wakes up for every message.  Under the default
policy (``SCHED_OTHER``) a thread that wakes may preempt the one running, so a round
is cut into many short turns, each of which starts on a cold cache.  ``SCHED_BATCH``
(``sched(7)``: "for batch-style execution of processes", with a small penalty on
wake-up preemption) lets the running thread finish its turn: the 10 K-parameter
exchange ring of 8 nodes on 2 cores took about a tenth less time a round, and a
node's CPU a round fell by about as much (BENCHMARKS.md).  A batch thread is also
"mildly disfavored" against interactive ones, so a desktop stays responsive.

Any user may switch between these two policies; the nice value is kept.  Elsewhere
(another OS, or a sandbox that refuses the call) nothing changes.
"""

from __future__ import annotations

import os

__all__ = ["CPU_POLICIES", "set_cpu_policy"]

#: ``--cpu-policy`` values: batch (the default) or normal (Linux's default policy)
CPU_POLICIES = ("batch", "normal")
_set: str | None = None  # the policy this process's threads were put under


def set_cpu_policy(policy: str) -> bool:
    """Put every thread of this process under ``policy``; the threads they start later
    inherit it.  Returns whether it was set (False where the OS has no such call or
    refuses it).  Only for a process that runs nodes alone: never the caller's own."""
    global _set
    if policy not in CPU_POLICIES:
        raise ValueError(f"cpu policy must be one of {CPU_POLICIES}, got {policy!r}")
    if _set == policy:  # the actors of a host process share it: once is enough
        return True
    try:
        target = os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER
        param = os.sched_param(0)
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except (AttributeError, OSError):  # not Linux
        return False
    done = False
    for tid in threads:
        try:
            os.sched_setscheduler(tid, target, param)
            done = True
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError:  # refused (a seccomp profile, say): run as started
            return False
    if done:
        _set = policy
    return done

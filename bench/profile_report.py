"""Summarise `perf script -F comm,pid,tid,ip,sym,dso` output (stdin) by process role and by
category of work. Usage: perf script ... | python3 profile_report.py ROLES_FILE
(ROLES_FILE: lines "pid role")."""

import re
import sys
from collections import Counter

# First match wins: (category, thread-name pattern or None, symbol/dso pattern).
RULES = [
    ("fsync + disk I/O", r"raft-log-sync|ratify-store-sy", r"."),
    ("fsync + disk I/O", None, r"ext4|jbd2|blk_|bio_|iowrite16|virtio|nvme|fdatasync|fsync|sync_wal|SyncWAL|FlushWAL"),
    ("RPC: gRPC/HTTP/2 (tonic, hyper, h2, prost)", None, r"h2::|hyper::|tonic::|http::|prost::|tower|http_body|hpack|bytes::"),
    ("RPC: kernel TCP/loopback", None, r"tcp_|sock_|skb|__dev_|net_|ip_|inet_|loopback|__sys_sendmsg|__sys_recv|sendmsg|recvmsg|writev|readv|softirq|netif|napi|__x64_sys_write|__x64_sys_read"),
    ("Raft (openraft)", None, r"openraft::"),
    ("RocksDB (in memory: memtable, WAL write, reads)", None, r"rocksdb"),
    ("participant store + locks", None, r"ratify_participant::store"),
    ("Ratify logic (driver, state machine, conversions)", None, r"ratify_|bank_example|ratify_bank"),
    ("JSON (log entries, snapshots)", None, r"serde_json|serde::"),
    ("scheduling: wake-ups, context switches, futex, epoll", None, r"finish_task_switch|schedule|futex|_raw_spin|try_to_wake_up|wake_up|epoll|ep_poll|do_syscall_64|syscall_exit|entry_SYSCALL|irqentry|ttwu|select_task_rq|enqueue|dequeue|update_curr|pick_next|switch_|hrtimer|__x64_sys_futex|mio::|tokio::runtime::(park|io|time)"),
    ("async runtime (tokio tasks, channels, timers)", None, r"tokio::|futures_|parking_lot"),
    ("allocation + copying", None, r"malloc|free|_int_|cfree|memmove|memcpy|memset|realloc|__rdl_|__rust_alloc|__rust_dealloc|alloc::"),
    ("idle (CPU halted)", None, r"pv_native_safe_halt|default_idle|cpuidle|intel_idle|acpi_idle|poll_idle|do_idle"),
]


def main():
    roles = {}
    with open(sys.argv[1]) as f:
        for line in f:
            pid, role = line.split(maxsplit=1)
            roles[pid] = role.strip()
    by_role = Counter()
    by_cat = Counter()
    by_role_cat = Counter()
    total = 0
    line_re = re.compile(r"^\s*(\S+)\s+(\d+)/(\d+)\s+(.*)$")
    for line in sys.stdin:
        # perf script -F comm,pid,tid,sym,dso prints: comm pid/tid sym (dso)
        m = line_re.match(line)
        if not m:
            continue
        comm, pid, _tid, rest = m.groups()
        role = roles.get(pid)
        if role is None:
            role = "idle" if comm == "swapper" else "other processes (kernel threads, ...)"
        cat = "other"
        for name, thread_pat, sym_pat in RULES:
            if thread_pat is not None and not re.search(thread_pat, comm):
                continue
            if re.search(sym_pat, rest):
                cat = name
                break
        if comm == "swapper":
            cat = "idle (CPU halted)"
        total += 1
        by_role[role] += 1
        by_cat[cat] += 1
        by_role_cat[(role, cat)] += 1
    if total == 0:
        print("no samples")
        return
    busy = total - by_cat["idle (CPU halted)"]
    print(f"\n{total} samples on all CPUs; {100 * busy / total:.1f}% busy")
    print("\nby process role (% of all samples):")
    for role, n in by_role.most_common():
        print(f"  {100 * n / total:5.1f}%  {role}")
    print("\nby kind of work (% of busy samples):")
    for cat, n in by_cat.most_common():
        if cat != "idle (CPU halted)":
            print(f"  {100 * n / busy:5.1f}%  {cat}")
    print("\nby role and kind (% of busy samples, top 20):")
    rows = [(k, n) for k, n in by_role_cat.most_common() if k[1] != "idle (CPU halted)"]
    for (role, cat), n in rows[:20]:
        print(f"  {100 * n / busy:5.1f}%  {role:<22} {cat}")


if __name__ == "__main__":
    main()

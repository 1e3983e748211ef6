#!/usr/bin/env bash
# Runs a command inside a memory cgroup and reports whether it completed within the limit.
#
#   tools/run-with-memory-limit.sh [--evict FILE]... LIMIT -- COMMAND [ARGS...]
#
# LIMIT is bytes or a number with K, M or G (256M). Swap is turned off for the group, and
# the page cache the command brings in counts against the limit, as it does for a service
# or container on a small board. Pages of a file that are already cached are charged to
# whoever read them first, so `--evict FILE` drops FILE from the page cache before the run
# (fadvise DONTNEED through dd; pages other processes have mapped stay) to make the model
# file's pages count.
#
# Prints (to stderr) the cgroup flavour, exit status, whether the kernel's OOM killer
# fired, wall time and the group's peak memory; exits with the command's status. Needs
# root. Uses cgroup v2 (memory.max, memory.swap.max, memory.peak, memory.events) when its
# memory controller can be enabled, else cgroup v1 (memory.limit_in_bytes,
# memory.memsw.limit_in_bytes, memory.max_usage_in_bytes, memory.oom_control), else
# `systemd-run --scope -p MemoryMax=…`. The cgroup is removed on exit.
set -u

usage() { echo "usage: $0 [--evict FILE]... LIMIT -- COMMAND [ARGS...]" >&2; exit 2; }

evict=()
while [ $# -gt 0 ] && [ "$1" = "--evict" ]; do
    [ $# -ge 2 ] || usage
    evict+=("$2"); shift 2
done
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
limit_text=$1; shift 2

to_bytes() {
    local v=${1^^}
    case $v in
        *K) echo $(( ${v%K} * 1024 )) ;;
        *M) echo $(( ${v%M} * 1024 * 1024 )) ;;
        *G) echo $(( ${v%G} * 1024 * 1024 * 1024 )) ;;
        *[!0-9]*|'') return 1 ;;
        *) echo "$v" ;;
    esac
}
limit=$(to_bytes "$limit_text") || { echo "bad LIMIT: $limit_text" >&2; exit 2; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

for f in "${evict[@]}"; do
    dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || echo "note: could not evict $f from the page cache" >&2
done

name="pocketsd-mem-$$"
cg=""
flavour=""

# cgroup v2: the unified hierarchy at /sys/fs/cgroup, or at /sys/fs/cgroup/unified on
# hybrid systems; the parent must delegate the memory controller to its children.
for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    [ -f "$root/cgroup.controllers" ] || continue
    grep -qw memory "$root/cgroup.controllers" || continue
    grep -qw memory "$root/cgroup.subtree_control" 2>/dev/null || echo +memory > "$root/cgroup.subtree_control" 2>/dev/null
    grep -qw memory "$root/cgroup.subtree_control" 2>/dev/null || continue
    mkdir "$root/$name" 2>/dev/null || continue
    if echo "$limit" > "$root/$name/memory.max" 2>/dev/null; then
        echo 0 > "$root/$name/memory.swap.max" 2>/dev/null
        cg="$root/$name"; flavour="cgroup v2 ($root)"
        break
    fi
    rmdir "$root/$name"
done

# cgroup v1: the memory hierarchy.
if [ -z "$cg" ] && [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ] && mkdir "/sys/fs/cgroup/memory/$name" 2>/dev/null; then
    d="/sys/fs/cgroup/memory/$name"
    if echo "$limit" > "$d/memory.limit_in_bytes" 2>/dev/null; then
        # memsw (memory + swap) exists only when swap accounting is on; same limit = no swap.
        [ -f "$d/memory.memsw.limit_in_bytes" ] && echo "$limit" > "$d/memory.memsw.limit_in_bytes" 2>/dev/null
        echo 0 > "$d/memory.swappiness" 2>/dev/null
        cg="$d"; flavour="cgroup v1 (/sys/fs/cgroup/memory)"
    else
        rmdir "$d"
    fi
fi

cleanup() {
    if [ -n "$cg" ] && [ -d "$cg" ]; then
        # Anything the command left behind goes first; an empty group can be removed.
        for pid in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$cg" 2>/dev/null && break; sleep 0.2; done
        [ -d "$cg" ] && echo "warning: could not remove $cg" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s.%N)
if [ -n "$cg" ]; then
    # The subshell moves itself into the group and then becomes the command.
    ( echo "$BASHPID" > "$cg/cgroup.procs" || exit 125; exec "$@" )
    status=$?
elif command -v systemd-run >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    flavour="systemd-run --scope (MemoryMax=$limit, MemorySwapMax=0)"
    systemd-run --quiet --scope -p MemoryMax="$limit" -p MemorySwapMax=0 -- "$@"
    status=$?
else
    echo "error: no usable memory cgroup here (cgroup v2 memory controller not delegated," \
         "cgroup v1 memory hierarchy not writable, no running systemd); not running the command" >&2
    exit 3
fi
end=$(date +%s.%N)

peak="" oom=0
if [[ $flavour == cgroup\ v2* ]]; then
    [ -f "$cg/memory.peak" ] && peak=$(cat "$cg/memory.peak")
    oom=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events" 2>/dev/null)
elif [[ $flavour == cgroup\ v1* ]]; then
    peak=$(cat "$cg/memory.max_usage_in_bytes" 2>/dev/null)
    oom=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.oom_control" 2>/dev/null)
fi

{
    echo "memory limit: $(mib "$limit") via $flavour"
    if [ "$status" -eq 0 ]; then echo "completed: yes (exit status 0)"
    else echo "completed: no (exit status $status$( [ "$status" -gt 128 ] && echo ", signal $((status - 128))"))"; fi
    echo "oom kills: ${oom:-unknown}"
    echo "wall time: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f s", b - a }')"
    [ -n "$peak" ] && echo "peak memory (cgroup, page cache included): $(mib "$peak")"
} >&2
exit "$status"

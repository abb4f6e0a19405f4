#!/bin/bash
# The longest gap in the master's answers to `xe vm-list` while a host of a
# running lab pool fails over and joins again (docs/benchmarks.md).
#
#   scripts/api-gap.sh DIR [HOST] [SECONDS]
#
# DIR is a lab started with `xapid lab --ha --dir DIR`; HOST (default
# host3, not the master) is powered off, then on again after SECONDS
# (default 45); each phase polls `xe vm-list` every 100 ms for SECONDS.
set -euo pipefail
dir=${1:?usage: scripts/api-gap.sh DIR [HOST] [SECONDS]}
host=${2:-host3}
secs=${3:-45}
export $(cat "$dir/env")
ms() { echo $(( $(date +%s%N) / 1000000 )); }

poll() {
    local end=$(( $(ms) + secs * 1000 )) last max=0 failed=0 err=""
    last=$(ms)
    while [ "$(ms)" -lt "$end" ]; do
        if out=$(xe vm-list --minimal 2>&1); then
            local now; now=$(ms)
            [ $((now - last)) -gt $max ] && max=$((now - last))
            last=$now
        else
            failed=$((failed + 1)); err=$out
        fi
        sleep 0.1
    done
    echo "$1: longest gap ${max} ms, ${failed} failed calls${err:+ (last: $err)}"
}

xapid lab power-off "$host" --dir "$dir" >/dev/null
poll "power-off of $host (failover)"
xapid lab power-on "$host" --dir "$dir" >/dev/null
poll "power-on of $host (join)"

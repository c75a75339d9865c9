#!/usr/bin/env bash
# tests/no_strays.sh NAME=VALUE: fails if a process still runs with NAME=VALUE
# in its environment, names each one, and stops it.
#
# The tests run with IOMODELS_TEST_RUN=<build dir> in their environment, and
# the tour with IOMODELS_TEST_RUN=<build dir>/tour; every process they start
# inherits it, however it was started (a server's children, strace, the
# benchmark's servers in process groups of their own). ctest runs this check
# after all the other tests and the tour at its end, so a process found here
# was left behind. It is killed (SIGKILL), so that the next run starts clean.
#
# usage: bash tests/no_strays.sh IOMODELS_TEST_RUN=/path/to/build

set -uo pipefail

if [[ $# -ne 1 || $1 != *=* ]]; then
    echo "usage: bash tests/no_strays.sh NAME=VALUE" >&2
    exit 2
fi
marker=$1
name=${marker%%=*}
unset "$name"  # not in this script's environment, nor in grep's

strays=()
for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    # grep -z: the entries are separated by NUL bytes. A process that has
    # ended since the glob, or is another user's, cannot be read: skipped.
    if [[ $pid != "$$" ]] && grep -qzxF -- "$marker" "$environ" 2>/dev/null; then
        strays+=("$pid")
    fi
done

if [[ ${#strays[@]} -eq 0 ]]; then
    echo "no process with $marker is running"
    exit 0
fi
echo "${#strays[@]} processes with $marker are still running:" >&2
for pid in "${strays[@]}"; do
    command=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
    parent=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    echo "  pid $pid (parent ${parent:-?}): ${command:-(ended)}" >&2
done
kill -KILL "${strays[@]}" 2>/dev/null
echo "(killed now; the test or tour that started them must stop them)" >&2
exit 1

#!/usr/bin/env bash
# tests/tour.sh: the tour of every chapter that has been built.
#
# For each chapter directory in BUILD_DIR it starts the chapter's servers on
# port 0, reads each ready line ("listening on 127.0.0.1:PORT"), runs a
# client or a demo against it, prints what happened, asks for its status
# line with SIGUSR1, and stops the server with SIGTERM, showing its exit
# status and its summary line. It only ever
# talks to 127.0.0.1 and takes a few seconds.
#
# usage: bash tests/tour.sh BUILD_DIR
#   run by `cmake --workflow --preset tour` (the CMake target `tour`).
#
# Adding a chapter: write a function named after its directory, with "-"
# turned into "_" (02-nonblocking -> tour_02_nonblocking), next to
# tour_01_blocking below. main() calls it when BUILD_DIR/02-nonblocking
# exists. The helpers at the top do the starting, checking and stopping.
#
# Nothing is left behind: an EXIT trap stops every process the tour started
# and removes its temporary directory, also on failure or Ctrl-C.

set -euo pipefail

readonly DEADLINE_SECONDS=5  # for a ready line, an echo, an exit after SIGTERM

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: bash tests/tour.sh BUILD_DIR" >&2
    exit 2
fi
BUILD_DIR=$1
if [[ ! -d $BUILD_DIR ]]; then
    echo "tour: no build directory $BUILD_DIR (build first: cmake --workflow --preset tour)" >&2
    exit 2
fi

TOUR_TMP=$(mktemp -d "${TMPDIR:-/tmp}/iomodels-tour.XXXXXX")
declare -A STARTED=()        # pid -> name of every background process not yet waited for
declare -A SERVER_PID=()     # server name -> pid
declare -A SERVER_PORT=()    # server name -> port from its ready line
declare -A SERVER_STDOUT=()  # server name -> our read end of its stdout FIFO
declare -A SERVER_STDERR=()  # server name -> file with its log and summary

# ---------------------------------------------------------------- helpers

# True while PID runs (a zombie does not count: it has exited).
is_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }  # the fields after "(comm) "; the first is the state
    [[ ${stat%% *} != Z ]]
}

# Waits up to SECONDS for PID to exit; false if it is still running.
wait_for_exit() {
    local pid=$1 seconds=$2 tenths
    for ((tenths = 0; tenths < seconds * 10; tenths++)); do
        is_running "$pid" || return 0
        sleep 0.1
    done
    ! is_running "$pid"
}

# Collects the exit status of PID, which has exited, into the variable
# named by $2, and forgets PID (the kernel may give its number to another
# process now, which the cleanup must not kill).
# shellcheck disable=SC2034  # status_variable is a reference: the caller reads it
collect_status() {
    local -n status_variable=$2
    status_variable=0
    wait "$1" || status_variable=$?
    unset "STARTED[$1]"
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    # SIGTERM first, so that a server stops its children and threads itself;
    # SIGKILL for whatever is still running after a short while.
    for pid in "${!STARTED[@]}"; do
        is_running "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${!STARTED[@]}"; do
        if ! wait_for_exit "$pid" 2; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TOUR_TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "tour: interrupted" >&2; exit 130' INT
trap 'echo "tour: terminated" >&2; exit 143' TERM

fail() {
    echo "tour: FAILED: $*" >&2
    exit 1
}

heading() { printf '\n== %s\n' "$*"; }  # a chapter
step() { printf '  %s\n' "$*"; }        # a server or a demo
show() { printf '    %s\n' "$*"; }      # what happened

# start_server NAME PROGRAM [ARGS...]: starts PROGRAM ARGS in the
# background, its stdout on a FIFO, its stderr in a file, and reads its
# ready line within the deadline. Sets SERVER_PID/SERVER_PORT[NAME].
start_server() {
    local name=$1 program=$2
    shift 2
    [[ -x $program ]] || fail "$program: not built"
    local fifo="$TOUR_TMP/$name.stdout" stderr_file="$TOUR_TMP/$name.stderr"
    mkfifo "$fifo"
    "$program" "$@" <"/dev/null" >"$fifo" 2>"$stderr_file" &
    local pid=$!
    STARTED[$pid]=$name
    SERVER_PID[$name]=$pid
    SERVER_STDERR[$name]=$stderr_file

    # Opening the FIFO waits for the server's end; a read-only end gives
    # end of file if the server exits before its ready line.
    local stdout_fd line="" read_status=0
    exec {stdout_fd}<"$fifo"
    SERVER_STDOUT[$name]=$stdout_fd
    IFS= read -r -t "$DEADLINE_SECONDS" -u "$stdout_fd" line || read_status=$?
    if ((read_status > 128)); then
        fail "$name printed no ready line within $DEADLINE_SECONDS s"
    elif ((read_status != 0)); then
        wait_for_exit "$pid" "$DEADLINE_SECONDS" && collect_status "$pid" read_status
        echo "tour: $name's stderr:" >&2
        cat "$stderr_file" >&2
        fail "$name exited (status $read_status) before printing its ready line"
    fi
    if [[ ! $line =~ ^listening\ on\ ${READY_KIND:-}127\.0\.0\.1:([0-9]+)$ ]]; then
        fail "$name: expected \"listening on ${READY_KIND:-}127.0.0.1:PORT\", got \"$line\""
    fi
    SERVER_PORT[$name]=${BASH_REMATCH[1]}
    step "$name started: pid $pid, $line"
}

# start_udp_server NAME PROGRAM [ARGS...]: the same for a UDP server, whose
# ready line is "listening on udp 127.0.0.1:PORT".
start_udp_server() {
    local name=$1 program=$2
    shift 2
    READY_KIND="udp " start_server "$name" "$program" 0 "$@"
}

# show_status NAME: SIGUSR1 asks the server for a status line (its counts
# so far); waits for it and shows it. Fails if none comes within the deadline.
show_status() {
    local name=$1 pid=${SERVER_PID[$1]} status_line="" waited=0
    kill -USR1 "$pid" 2>/dev/null || fail "$name had exited before the tour asked for its status"
    while ! status_line=$(grep -m1 'status:' "${SERVER_STDERR[$name]}"); do
        ((waited++ < DEADLINE_SECONDS * 20)) || fail "$name printed no status line within $DEADLINE_SECONDS s of SIGUSR1"
        sleep 0.05
    done
    show "SIGUSR1 -> $status_line"
}

# stop_server NAME: asks for its status line (show_status), then SIGTERM;
# waits for the exit and shows its status and summary line. Fails unless it
# exits 0 with a summary.
stop_server() {
    local name=$1 pid=${SERVER_PID[$1]} status
    show_status "$name"
    kill -TERM "$pid" 2>/dev/null || fail "$name had exited before the tour stopped it"
    wait_for_exit "$pid" "$DEADLINE_SECONDS" || fail "$name did not exit within $DEADLINE_SECONDS s of SIGTERM"
    collect_status "$pid" status
    local stdout_fd=${SERVER_STDOUT[$name]}
    exec {stdout_fd}<&-
    local summary
    summary=$(grep 'summary:' "${SERVER_STDERR[$name]}") || fail "$name printed no summary line on SIGTERM"
    show "SIGTERM -> exit status $status; $summary"
    ((status == 0)) || fail "$name exited with status $status after SIGTERM (expected 0)"
}

# Server log lines that match a pattern, indented.
show_server_log() {
    local name=$1 pattern=$2 line
    while IFS= read -r line; do
        show "log: $line"
    done < <(grep -- "$pattern" "${SERVER_STDERR[$name]}" || true)
}

# expect_echo CLIENT PORT WORDS...: runs `CLIENT --port PORT WORDS...` and
# checks that what comes back is the message it sent.
expect_echo() {
    local client=$1 port=$2
    shift 2
    local message="$*" echo status=0
    # --foreground: Ctrl-C still reaches the client.
    echo=$(timeout --foreground "$DEADLINE_SECONDS" "$client" --port "$port" "$@" 2>"$TOUR_TMP/client.stderr") ||
        status=$?
    if ((status != 0)); then
        cat "$TOUR_TMP/client.stderr" >&2
        fail "client --port $port $message: exit status $status$( ((status == 124)) && echo ' (timed out)')"
    fi
    [[ $echo == "$message" ]] || fail "client sent \"$message\" but got back \"$echo\""
    show "client sent \"$message\", got back \"$echo\""
}

# show_waiting_client CLIENT NAME HOLD: holds HOLD connections open to the
# server NAME (bash /dev/tcp descriptors, each served: a line sent, its echo
# read), then starts CLIENT: it connects but waits, no echo, until the first
# held connection closes; then it is served. For the servers that serve a
# bounded number of clients at once.
show_waiting_client() {
    local client=$1 hold=$3 port=${SERVER_PORT[$2]} held=() fd reply i client_pid status
    for ((i = 1; i <= hold; i++)); do
        exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "cannot connect to 127.0.0.1:$port"
        held+=("$fd")
        printf 'held %d\n' "$i" >&"$fd"
        IFS= read -r -t "$DEADLINE_SECONDS" -u "$fd" reply || fail "no echo on held connection $i"
        show "held connection $i (a bash /dev/tcp fd) is being served: got back \"$reply\""
    done
    # The client must not inherit the held connections.
    (
        for fd in "${held[@]}"; do exec {fd}>&-; done
        exec "$client" --port "$port" waiting client
    ) >"$TOUR_TMP/waiting.stdout" 2>"$TOUR_TMP/waiting.stderr" </dev/null &
    client_pid=$!
    STARTED[$client_pid]="waiting client"
    sleep 0.5
    is_running "$client_pid" || fail "the client finished while $hold connection(s) were held"
    [[ ! -s $TOUR_TMP/waiting.stdout ]] || fail "the client got an echo while $hold connection(s) were held"
    show "client started: after 0.5 s it is still waiting (connected, not accepted), no echo yet"
    fd=${held[0]}
    exec {fd}>&-
    wait_for_exit "$client_pid" "$DEADLINE_SECONDS" ||
        fail "the client did not finish within $DEADLINE_SECONDS s after held connection 1 closed"
    collect_status "$client_pid" status
    ((status == 0)) || fail "the client exited with status $status: $(cat "$TOUR_TMP/waiting.stderr")"
    [[ $(<"$TOUR_TMP/waiting.stdout") == "waiting client" ]] ||
        fail "the client got back \"$(<"$TOUR_TMP/waiting.stdout")\""
    show "held connection 1 closed: the client is accepted and gets back \"$(<"$TOUR_TMP/waiting.stdout")\""
    for fd in "${held[@]:1}"; do exec {fd}>&-; done
}

# ------------------------------------------------------------- the chapters

# 01-blocking: four blocking servers that differ in who runs the echo loop.
tour_01_blocking() {
    local dir=$1
    heading "01-blocking: recv() sleeps through both phases (wait for data, copy it)"

    start_server server "$dir/server" 0
    expect_echo "$dir/client" "${SERVER_PORT[server]}" hello from the tour
    expect_echo "$dir/client" "${SERVER_PORT[server]}" a second client
    show_server_log server "child pid"
    stop_server server

    start_server server_thread "$dir/server_thread" 0
    expect_echo "$dir/client" "${SERVER_PORT[server_thread]}" hello from the tour
    stop_server server_thread

    start_server server_iterative "$dir/server_iterative" 0
    expect_echo "$dir/client" "${SERVER_PORT[server_iterative]}" hello from the tour
    # One connection at a time: while one is held open, the next client waits
    # in the listen queue.
    show_waiting_client "$dir/client" server_iterative 1
    stop_server server_iterative

    # Two threads made at start: two clients at once are served, a third
    # waits in the listen queue until a worker is free.
    start_server server_pool "$dir/server_pool" 0 --threads 2
    expect_echo "$dir/client" "${SERVER_PORT[server_pool]}" hello from the tour
    show_waiting_client "$dir/client" server_pool 2
    show_server_log server_pool "worker"
    stop_server server_pool
}

# 02-nonblocking: one thread polls every socket; EAGAIN means "not yet".
tour_02_nonblocking() {
    local dir=$1 port reply status=0
    heading "02-nonblocking: recv() answers EAGAIN instead of sleeping; the loop asks again"

    start_server nonblocking_server "$dir/server" 0
    port=${SERVER_PORT[nonblocking_server]}
    reply=$(timeout --foreground "$DEADLINE_SECONDS" "$dir/client" --port "$port" hello from the tour \
        2>"$TOUR_TMP/client.stderr") || status=$?
    ((status == 0)) || fail "client --port $port: exit status $status: $(cat "$TOUR_TMP/client.stderr")"
    [[ $reply == "hello from the tour" ]] || fail "client got back \"$reply\""
    show "client sent \"hello from the tour\", got back \"$reply\""
    show "$(cat "$TOUR_TMP/client.stderr")"
    stop_server nonblocking_server
}

# 03-select: one pselect() watches every socket; its own client selects on stdin and the socket.
tour_03_select() {
    local dir=$1
    heading "03-select: pselect() sleeps for all sockets at once; recv() then copies without waiting"

    start_server select_server "$dir/server" 0
    expect_echo "$dir/client" "${SERVER_PORT[select_server]}" hello from the tour
    expect_echo "$dir/client" "${SERVER_PORT[select_server]}" a second client
    stop_server select_server
}

# 04-poll: one ppoll() waits for every socket at once.
tour_04_poll() {
    local dir=$1 client=$BUILD_DIR/01-blocking/client
    heading "04-poll: ppoll() sleeps for all sockets at once; recv() then copies without waiting"

    start_server poll_server "$dir/server" 0
    expect_echo "$client" "${SERVER_PORT[poll_server]}" hello from the tour
    expect_echo "$client" "${SERVER_PORT[poll_server]}" a second client
    stop_server poll_server
}

# 05-epoll-lt: the interest list is edited once; epoll_wait returns only what is ready.
tour_05_epoll_lt() {
    local dir=$1 client=$BUILD_DIR/01-blocking/client
    heading "05-epoll-lt: epoll_wait() sleeps until the ready list has entries; level-triggered"

    start_server epoll_lt_server "$dir/server" 0
    expect_echo "$client" "${SERVER_PORT[epoll_lt_server]}" hello from the tour
    expect_echo "$client" "${SERVER_PORT[epoll_lt_server]}" a second client
    stop_server epoll_lt_server
}

# 06-epoll-et: edge-triggered; the LT/ET/ONESHOT demo; the stall of a server that does not drain.
tour_06_epoll_et() {
    local dir=$1 client=$BUILD_DIR/01-blocking/client line status=0
    heading "06-epoll-et: EPOLLET reports changes, not states: read and write until EAGAIN"

    step "lt_vs_et: 5 bytes, one byte read per wakeup"
    while IFS= read -r line; do
        show "$line"
    done < <("$dir/lt_vs_et" | grep -E '^(level|edge|one-shot)')

    start_server epoll_et_server "$dir/server" 0
    expect_echo "$client" "${SERVER_PORT[epoll_et_server]}" hello from the tour
    stop_server epoll_et_server

    # The classic bug: one read per notification. 100000 bytes arrive; the
    # server reads 4096 and waits for an edge that does not come.
    start_server epoll_et_no_drain "$dir/server" 0 --no-drain
    head -c 100000 /dev/zero |
        timeout 1 "$client" --port "${SERVER_PORT[epoll_et_no_drain]}" >/dev/null 2>&1 || status=$?
    ((status == 124)) || fail "the client of server --no-drain ended with status $status, expected a stall (124)"
    show "server --no-drain: a client sending 100000 bytes is still waiting for its echo after 1 s (timeout: 124)"
    show_server_log epoll_et_no_drain "once (--no-drain)"
    stop_server epoll_et_no_drain
}

# 07-rtsig-udp: a real-time signal says a datagram is waiting; the classic SIGIO variant.
tour_07_rtsig_udp() {
    local dir=$1 name reply status
    heading "07-rtsig-udp: F_SETSIG + O_ASYNC: a signal says \"ready\"; sigwaitinfo takes it, recvfrom copies"

    for name in server server_sigio; do
        start_udp_server "rtsig_udp_$name" "$dir/$name"
        status=0
        reply=$(timeout --foreground "$DEADLINE_SECONDS" "$dir/client" --port "${SERVER_PORT[rtsig_udp_$name]}" \
            hello "from the tour" 2>"$TOUR_TMP/client.stderr") || status=$?
        ((status == 0)) || fail "client of $name: exit status $status: $(cat "$TOUR_TMP/client.stderr")"
        [[ $reply == $'hello\nfrom the tour' ]] || fail "client of $name got back \"$reply\""
        show "client sent 2 datagrams (\"hello\", \"from the tour\"), got both back; $(cat "$TOUR_TMP/client.stderr")"
        show_server_log "rtsig_udp_$name" "SIGRTMIN+1\|SIGIO"
        stop_server "rtsig_udp_$name"
    done
}

# 08-rtsig-tcp: one real-time signal for every TCP socket, si_fd says which.
tour_08_rtsig_tcp() {
    local dir=$1 client=$BUILD_DIR/01-blocking/client name
    heading "08-rtsig-tcp: one real-time signal for the listening socket and every connection; si_fd says which"

    for name in server server_handler; do
        start_server "rtsig_tcp_$name" "$dir/$name" 0
        expect_echo "$client" "${SERVER_PORT[rtsig_tcp_$name]}" hello from the tour
        show_server_log "rtsig_tcp_$name" "SIGRTMIN+1"
        stop_server "rtsig_tcp_$name"
    done
}

# 09-aio-kernel: io_submit queues, io_getevents collects; the aio poll server.
tour_09_aio_kernel() {
    local dir=$1 client=$BUILD_DIR/01-blocking/client line
    heading "09-aio-kernel: io_submit returns at once; io_getevents says how each request ended (res)"

    step "aio_write then aio_read (O_DIRECT) of a file in the tour's temporary directory"
    "$dir/aio_write" "$TOUR_TMP/aio.txt" hello from the tour >"$TOUR_TMP/aio.out" ||
        fail "aio_write: $(cat "$TOUR_TMP/aio.out")"
    while IFS= read -r line; do show "$line"; done <"$TOUR_TMP/aio.out"
    "$dir/aio_read" "$TOUR_TMP/aio.txt" >"$TOUR_TMP/aio.out" || fail "aio_read: $(cat "$TOUR_TMP/aio.out")"
    while IFS= read -r line; do show "$line"; done < <(grep -E 'io_getevents|^hello' "$TOUR_TMP/aio.out")

    step "aio_copy of 4 MiB + 3 bytes, 8 requests in flight"
    head -c $((4 * 1024 * 1024 + 3)) /dev/urandom >"$TOUR_TMP/aio.src"
    "$dir/aio_copy" "$TOUR_TMP/aio.src" "$TOUR_TMP/aio.dst" --quiet >"$TOUR_TMP/aio.out" 2>&1 ||
        fail "aio_copy: $(cat "$TOUR_TMP/aio.out")"
    cmp -s "$TOUR_TMP/aio.src" "$TOUR_TMP/aio.dst" || fail "aio_copy: the copy differs from the source"
    show "$(cat "$TOUR_TMP/aio.out")"
    show "cmp: the copy is identical"

    start_server aio_kernel_server "$dir/server" 0
    expect_echo "$client" "${SERVER_PORT[aio_kernel_server]}" hello from the tour
    stop_server aio_kernel_server

    heading "09-aio-kernel, part two: io_uring, the kernel waits and copies; a CQE says done"
    step "uring_copy of the same file, 8 requests in flight"
    if ! "$dir/uring_copy" "$TOUR_TMP/aio.src" "$TOUR_TMP/uring.dst" --depth 8 --quiet >"$TOUR_TMP/aio.out" 2>&1; then
        if grep -q 'io_uring is switched off' "$TOUR_TMP/aio.out"; then
            show "skipped: $(head -n 1 "$TOUR_TMP/aio.out")"  # kernel.io_uring_disabled, or seccomp
            return
        fi
        fail "uring_copy: $(cat "$TOUR_TMP/aio.out")"
    fi
    cmp -s "$TOUR_TMP/aio.src" "$TOUR_TMP/uring.dst" || fail "uring_copy: the copy differs from the source"
    show "$(cat "$TOUR_TMP/aio.out")"
    show "cmp: the copy is identical"

    local mode name
    for mode in "" --multishot; do
        name=uring_server${mode:+_${mode#--}}  # uring_server, uring_server_multishot
        start_server "$name" "$dir/uring_server" 0 ${mode:+"$mode"}
        expect_echo "$client" "${SERVER_PORT[$name]}" hello from the tour
        stop_server "$name"
    done
}

# 10-aio-posix: glibc's AIO, done by helper threads.
tour_10_aio_posix() {
    local dir=$1 client=$BUILD_DIR/01-blocking/client line
    heading "10-aio-posix: aio_read/aio_write return at once; glibc's threads do the I/O"

    step "aio_read_files: one request per file, completion by signal"
    printf 'first file\n' >"$TOUR_TMP/posix.a"
    printf 'second file\n' >"$TOUR_TMP/posix.b"
    "$dir/aio_read_files" "$TOUR_TMP/posix.a" "$TOUR_TMP/posix.b" >"$TOUR_TMP/aio.out" ||
        fail "aio_read_files: $(cat "$TOUR_TMP/aio.out")"
    while IFS= read -r line; do show "${line//$TOUR_TMP\//}"; done <"$TOUR_TMP/aio.out"

    step "aio_read_files --listio-wait: both reads in one lio_listio(LIO_WAIT), which returns when both are over"
    "$dir/aio_read_files" "$TOUR_TMP/posix.a" "$TOUR_TMP/posix.b" --listio-wait >"$TOUR_TMP/aio.out" ||
        fail "aio_read_files --listio-wait: $(cat "$TOUR_TMP/aio.out")"
    grep -q '^lio_listio(LIO_WAIT, 2 reads): 0, every one done$' "$TOUR_TMP/aio.out" ||
        fail "aio_read_files --listio-wait: $(cat "$TOUR_TMP/aio.out")"
    while IFS= read -r line; do show "${line//$TOUR_TMP\//}"; done <"$TOUR_TMP/aio.out"

    step "aio_copy of 4 MiB + 3 bytes with lio_listio and aio_suspend"
    head -c $((4 * 1024 * 1024 + 3)) /dev/urandom >"$TOUR_TMP/posix.src"
    "$dir/aio_copy" "$TOUR_TMP/posix.src" "$TOUR_TMP/posix.dst" --quiet >"$TOUR_TMP/aio.out" 2>&1 ||
        fail "aio_copy: $(cat "$TOUR_TMP/aio.out")"
    cmp -s "$TOUR_TMP/posix.src" "$TOUR_TMP/posix.dst" || fail "aio_copy: the copy differs from the source"
    show "$(cat "$TOUR_TMP/aio.out")"

    start_server aio_posix_server "$dir/server" 0
    expect_echo "$client" "${SERVER_PORT[aio_posix_server]}" hello from the tour
    stop_server aio_posix_server
}

# --------------------------------------------------------------------- main

main() {
    local dir chapter function toured=0
    for dir in "$BUILD_DIR"/[0-9][0-9]-*/; do
        [[ -d $dir ]] || continue
        dir=${dir%/}
        chapter=${dir##*/}
        function="tour_${chapter//-/_}"
        if declare -F "$function" >/dev/null; then
            "$function" "$dir"
            toured=$((toured + 1))
        else
            heading "$chapter: built, but the tour has no stop for it yet"
        fi
    done
    ((toured > 0)) || fail "no chapter built in $BUILD_DIR"
    printf '\ntour: done, %d chapter(s), every server stopped cleanly\n' "$toured"
}

main

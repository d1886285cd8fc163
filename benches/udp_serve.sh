# Sourced by benches/udp_syscalls.sh and benches/udp_profile.sh: starting one loadgen UDP echo
# server. Not run on its own.
#
#   udp_serve NAME OUTFILE   starts `loadgen serve --server NAME --service udp-echo` with its
#                            output in OUTFILE, waits (up to 5 s) for its READY line, and sets
#                            LG (the loadgen binary), P (its pid) and A (its address);
#                            returns 1 (the server stopped) if no address came.
#                            With WRAP set (e.g. WRAP="taskset -c 1"), the server runs
#                            under that command.
udp_serve() {
    LG=$(ls -t target/release/deps/loadgen-* 2>/dev/null | grep -v '\.d$' | head -1)
    [ -n "$LG" ] || { echo "build first: cargo bench --bench loadgen --no-run" >&2; return 1; }
    # shellcheck disable=SC2086 # WRAP is a command and its arguments
    $WRAP "$LG" serve --server "$1" --service udp-echo > "$2" 2>&1 & P=$!
    A=""
    for _ in $(seq 50); do
        A=$(grep -oE '127.0.0.1:[0-9]+' "$2" | head -1)
        [ -n "$A" ] && return 0
        sleep 0.1
    done
    echo "$1: no address" >&2
    kill $P; wait $P 2>/dev/null
    return 1
}

#!/usr/bin/env bash
# CPU of one worker per thread while it keeps up with a fixed offered rate ("live mode").
#
# `stream bench` measures throughput on a backlog (batches of max_batch) and latency at an
# offered rate; this script shows where a live worker's CPU goes, thread by thread, with
# what its /metrics say about batches and stages over the same 10 seconds. Per-thread
# times come from /proc/<pid>/task/*/stat (not sampled), so they are steadier than a
# profile and are not inflated by threads waiting for the GIL or for a core.
#
# Needs a broker (`stream broker start`) with the pipeline's topics (`stream topics create
# --partitions 8`). Usage:  benchmarks/live_threads.sh [rate events/s, default 40000]
# Settings pass through the environment, e.g. STREAM_MAX_INFLIGHT_BATCHES=8.
set -euo pipefail
RATE=${1:-40000}
PORT=${STREAM_WEB_PORT:-6077}
BIN=$(dirname "$0")/../.venv/bin
LOG=$(mktemp -d)

STREAM_WEB_PORT=$PORT "$BIN/stream" worker >"$LOG/worker.log" 2>&1 &
W=$!
trap 'kill -TERM $W 2>/dev/null; wait $W 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "localhost:$PORT/ready" >/dev/null 2>&1 && break
    if ! kill -0 $W 2>/dev/null; then # no broker, no topics, a bad setting: its one line
        echo "the worker exited before it was ready:" >&2
        tail -3 "$LOG/worker.log" >&2
        exit 1
    fi
    sleep 0.5
done
curl -sf "localhost:$PORT/ready" >/dev/null 2>&1 || { echo "worker not ready after 60 s ($LOG/worker.log)" >&2; exit 1; }
"$BIN/stream" loadgen --rate "$RATE" --duration 22 --no-progress >"$LOG/loadgen.txt" 2>&1 &
L=$!
sleep 6 # past the load generator's start and the first seconds of load

threads() { for t in /proc/$W/task/*; do awk -v t="${t##*/}" '{print t, $2, $14+$15}' "$t/stat"; done; }
threads >"$LOG/t0"
curl -s "localhost:$PORT/metrics" >"$LOG/m0"
sleep 10
threads >"$LOG/t1"
curl -s "localhost:$PORT/metrics" >"$LOG/m1"

echo "worker CPU seconds per thread over 10 s at $RATE events/s offered:"
join <(sort "$LOG/t0") <(sort "$LOG/t1") |
    awk '{d=($5-$3)/100; tot+=d; if (d>=0.05) printf "  %6.2f  %s (tid %s)\n", d, $2, $1} END {printf "  %6.2f  total\n", tot}' |
    sort -rn
"$BIN/python" - "$LOG/m0" "$LOG/m1" <<'PY'
import sys

def read(path):
    values = {}
    for line in open(path):
        if line.startswith(("stream_batch_size_", "stream_end_to_end_latency_seconds_",
                            "stream_stage_duration_seconds_sum", "stream_gc_pause_seconds_")):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values

a, b = read(sys.argv[1]), read(sys.argv[2])
d = {k: b[k] - a.get(k, 0.0) for k in b}
batches, events = d.get("stream_batch_size_count", 0), d.get("stream_batch_size_sum", 0)
e2e_n = d.get("stream_end_to_end_latency_seconds_count", 0) or 1
print(f"batches {batches:.0f}, events {events:.0f} (mean batch {events / max(batches, 1):.0f}); "
      f"mean end-to-end latency of a batch's last record {d.get('stream_end_to_end_latency_seconds_sum', 0) / e2e_n * 1000:.1f} ms")
for k, v in d.items():
    if k.startswith("stream_stage_duration_seconds_sum"):
        stage = k.split('stage="')[1].rstrip('"}')
        print(f"  stage {stage:>10}: {v / max(events, 1) * 1e6:.2f} µs/event")
gc = sum(v for k, v in d.items() if k.startswith("stream_gc_pause_seconds_sum"))
gcn = sum(v for k, v in d.items() if k.startswith("stream_gc_pause_seconds_count"))
print(f"  gc: {gcn:.0f} collections, {gc * 1000:.0f} ms")
PY
wait $L

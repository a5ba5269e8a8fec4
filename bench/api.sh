#!/usr/bin/env bash
# API load bench (not a timed test): builds tds and a bare axum "hello" server in release mode,
# starts both on loopback, and loads them with wrk at 32 connections:
#   1. GET /            on the bare axum route            (the reference)
#   2. GET …/status     of one deployment                 (target: >= 50 % of the reference)
#   3. POST /deployments with a 4 KiB artifact (base64)   (target: >= 2,500/s, p99 < 20 ms)
# Each acknowledged submission is committed to SQLite before its 202 (group commit); the script
# counts the store's deployments afterwards against the 202s that wrk saw. The target
# environment is paused so that the bench measures the API and the durable commit, not the
# deployments' own processes competing for the same 2 cores.
#
#   bench/api.sh [seconds per run, default 10]
# ROUNDS=N (default 2) alternates the GET runs N times and runs the POST N times; the summary
# quotes medians. API_SKIP_BUILD=1 skips the build (bench/run.sh builds first). The last line is
# `BENCH_JSON {...}` with every run, for bench/suite.py.
# Needs wrk (apt-get install wrk) or set WRK=/path/to/wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${ROUNDS:-2}
conns=32
wrk=${WRK:-wrk}
command -v "$wrk" > /dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }

[ -n "${API_SKIP_BUILD:-}" ] || cargo build --release --quiet --bin tds --example bench-hello
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tds_port=$(free_port)
hello_port=$(free_port)
cat > "$work/tds.toml" <<TOML
[server]
listen = "127.0.0.1:$tds_port"
drain_timeout = "1s"
[storage]
data_dir = "$work/data"
[[environments]]
name = "bench"
root = "$work/envs/bench"
steps = [{ name = "noop", run = "true" }]
TOML

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
target/release/tds --serve --config "$work/tds.toml" > "$work/tds.out" 2>&1 &
pids+=($!)
target/release/examples/bench-hello "127.0.0.1:$hello_port" > "$work/hello.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$tds_port/healthz" > /dev/null 2>&1 && curl -fsS "http://127.0.0.1:$hello_port/" > /dev/null 2>&1 && break
    sleep 0.1
done
base="http://127.0.0.1:$tds_port/api/v1"

# One deployment to read, then pause the environment so that submissions only queue.
head -c 4096 /dev/urandom > "$work/blob.bin"
b64=$(base64 -w0 "$work/blob.bin")
printf '{"environment":"bench","artifact":{"name":"blob.bin","content_base64":"%s"},"version":"bench"}' "$b64" > "$work/body.json"
id=$(curl -fsS -X POST "$base/deployments" -H 'content-type: application/json' --data-binary @"$work/body.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -X PUT "$base/environments/bench/pause" > /dev/null

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json", "rb")
wrk.body = f:read("*a")
f:close()
LUA

run() { # name, then wrk arguments
    local name=$1; shift
    "$wrk" -t2 -c"$conns" -d"${secs}s" --latency "$@" > "$work/$name.txt"
    local rps p99 non2xx
    rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$name.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$name.txt")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$name.txt")
    printf '%-22s %10s req/s   p99 %8s   non-2xx %s\n' "$name" "$rps" "$p99" "${non2xx:-0}"
    echo "$rps" > "$work/$name.rps"
}

echo "wrk, $conns connections, ${secs}s each, $rounds round(s), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The GET runs alternate, so that a burst of other work on the machine hits both alike.
for round in $(seq 1 "$rounds"); do
    run "hello_$round" "http://127.0.0.1:$hello_port/"
    run "status_get_$round" "$base/deployments/$id/status"
done
for round in $(seq 1 "$rounds"); do
    run "submit_post_$round" -s "$work/post.lua" "$base/deployments"
done

acknowledged=0
for round in $(seq 1 "$rounds"); do
    acknowledged=$((acknowledged + $(awk '/requests in/ {print $1}' "$work/submit_post_$round.txt")))
done
stored=$(curl -fsS "$base/deployments/history?environment=bench&limit=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"] - 1)')
python3 - "$work" "$rounds" "$acknowledged" "$stored" <<'PY'
import json, re, statistics, sys
work, rounds, acknowledged, stored = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
def load(name):
    text = open(f"{work}/{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    return {"rps": rps, "p99_ms": p99}
result = {k: [load(f"{k}_{r}") for r in range(1, rounds + 1)] for k in ("hello", "status_get", "submit_post")}
med = {k: statistics.median(x["rps"] for x in v) for k, v in result.items()}
print(f"status GET = {100 * med['status_get'] / med['hello']:.0f} % of the bare route (medians: {med['status_get']:.0f} vs {med['hello']:.0f} req/s)")
print(f"submit POST median {med['submit_post']:.0f} req/s")
print(f"submissions: {acknowledged} answered by wrk, {stored} in the store")
result.update(acknowledged=acknowledged, stored=stored)
print("BENCH_JSON " + json.dumps(result))
PY

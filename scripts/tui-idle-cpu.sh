#!/usr/bin/env bash
# Measures what an idle dashboard costs: starts `tds` in a detached tmux session with a
# configuration that has no work (one environment, no probe, nothing queued), waits, then reads
# the process's CPU ticks from /proc over SECONDS and its resident memory.
#
# Usage: scripts/tui-idle-cpu.sh [SECONDS]        (default 30; builds with `cargo build --release`)
#        TDS_BIN=target/debug/tds scripts/tui-idle-cpu.sh 60
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_TO_MEASURE="${1:-30}"
command -v tmux >/dev/null || { echo "tui-idle-cpu: tmux is not installed" >&2; exit 2; }
if [[ -z "${TDS_BIN:-}" ]]; then
    cargo build --quiet --release --bin tds
    TDS_BIN=target/release/tds
fi
BIN="$(realpath "$TDS_BIN")"
WORK="$(mktemp -d)"
SESSION="tds-idle-$$"
trap 'tmux kill-session -t "$SESSION" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat >"$WORK/tds.toml" <<EOF
[storage]
data_dir = "$WORK/data"
[[environments]]
name = "staging"
root = "$WORK/envs/staging"
steps = [{ name = "install", run = "true" }]
EOF

tmux new-session -d -s "$SESSION" -x 120 -y 36 "exec '$BIN' --config '$WORK/tds.toml' --no-api"
for _ in $(seq 1 100); do
    tmux capture-pane -p -t "$SESSION" | grep -qF "1 Queue" && break
    sleep 0.1
done
tmux capture-pane -p -t "$SESSION" | grep -qF "1 Queue" || { echo "tui-idle-cpu: the dashboard did not start" >&2; exit 1; }
sleep 3
pid="$(tmux display-message -p -t "$SESSION" '#{pane_pid}')"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz="$(getconf CLK_TCK)"
t0="$(date +%s.%N)"; c0="$(ticks)"
sleep "$SECONDS_TO_MEASURE"
t1="$(date +%s.%N)"; c1="$(ticks)"
rss="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
awk -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v rss="$rss" 'BEGIN {
    t = t1 - t0
    printf "idle dashboard: %.3f%% of one core over %.0f s (%d clock ticks of 1/%d s), RSS %.1f MiB\n",
        100 * c / hz / t, t, c, hz, rss / 1024 }'

#!/usr/bin/env bash
# Checks the generated OpenAPI document against the running server with schemathesis (PyPI):
# installs it, starts `tds --serve` on loopback with a temporary config (one admin token, two
# environments), and runs schemathesis against /api/v1/openapi.json. Fails on any 500, any
# undocumented status code or content type, any response that does not match its schema, and
# any schema-violating request that the API accepts.
#
#   scripts/schemathesis.sh [extra schemathesis options, e.g. --max-examples 200]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
cargo build --quiet --bin tds

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="schemathesis-$(date +%s%N)"
hash=$(printf %s "$token" | target/debug/tds token hash)
cat > "$work/tds.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
drain_timeout = "1s"
[storage]
data_dir = "$work/data"
[defaults]
max_artifact_size = "1MiB"
retry = { max_retries = 1, initial_delay = "100ms" }
[[tokens]]
name = "schemathesis"
sha256 = "$hash"
role = "admin"
[[environments]]
name = "staging"
root = "$work/envs/staging"
steps = [{ name = "show", run = "echo \"\$TDS_VERSION\"" }]
[[environments]]
name = "qa"
root = "$work/envs/qa"
max_concurrent = 1
steps = [{ name = "wait", run = "sleep 1" }]
TOML

target/debug/tds --serve --config "$work/tds.toml" > "$work/serve.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done

status=0
schemathesis run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method,ignored_auth,missing_required_header \
    --max-examples 40 --workers 2 --seed 1 \
    "$@" || status=$?
if grep -q "panicked" "$work/serve.log"; then
    echo "the server panicked:" >&2
    grep -A5 panicked "$work/serve.log" >&2
    status=1
fi
exit $status

#!/usr/bin/env bash
# Checks that GET /openapi.json is exact: schemathesis runs every operation of the
# document against a `keypal serve` this script starts (all phases, a fixed seed, a
# bounded number of examples) and any finding fails; then a Python client generated
# from the same document calls every endpoint.
#
#   scripts/schemathesis.sh
#
# Needs python3 (3.10 or later, with venv) and PyPI the first time: schemathesis and the
# client generator are installed, at the versions in scripts/schemathesis/requirements.txt,
# into target/schemathesis-venv (KEYPAL_SCHEMATHESIS_VENV to put it elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
here="$root/scripts/schemathesis"
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv="${KEYPAL_SCHEMATHESIS_VENV:-$target/schemathesis-venv}"

if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

cargo build --quiet -p keypal-cli --bin keypal

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A server of its own: a new SQLite database and master key, a free port.
# The admin password is the document's example of one, so the examples phase logs in.
export KEYPAL_ADMIN_PASSWORD="correct horse battery staple"
KEYPAL_LOG=warn "$target/debug/keypal" serve --listen 127.0.0.1:0 \
  --database-url "sqlite://$work/keypal.db" --key-file "$work/keypal.key" >"$work/serve.out" 2>"$work/serve.log" &
server=$!
KEYPAL_URL=""
for _ in $(seq 300); do
  KEYPAL_URL=$(sed -n 's/^keypal: listening on //p' "$work/serve.out")
  [ -n "$KEYPAL_URL" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    cat "$work/serve.log" >&2
    echo "schemathesis.sh: keypal serve did not start" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$KEYPAL_URL" ]; then
  echo "schemathesis.sh: keypal serve did not listen within 30 s" >&2
  exit 1
fi
export KEYPAL_URL
echo "schemathesis.sh: keypal serve on $KEYPAL_URL"

status=0
# A client generated from the document calls every endpoint (first: the run below
# rotates the service key and makes the login throttle refuse this address).
"$venv/bin/python" "$here/client.py" "$venv" "$work" || status=$?

if [ "$status" -eq 0 ]; then
  (cd "$work" && SCHEMATHESIS_HOOKS="$here/hooks.py" "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" \
    run "$KEYPAL_URL/openapi.json") || status=$?
fi

if [ "$status" -ne 0 ]; then
  echo "--- keypal serve's log" >&2
  tail -n 50 "$work/serve.log" >&2
fi
exit "$status"

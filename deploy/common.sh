# Shared by the deploy/*.sh scripts (sourced, not run). Everything a deployment writes (Flower's
# FLWR_HOME, the SuperLink database, logs, PID files) lives under the deployment directory the
# user names, never in the repository.

FEDMM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
#: Name of the SuperLink connection the scripts write into $FLWR_HOME/config.toml.
CONNECTION="${FEDMM_CONNECTION:-fedmm}"

die() { echo "error: $*" >&2; exit 2; }

check_args() {  # check_args MIN MAX "$@": -h/--help prints $usage; a wrong count exits 2 with it
    local min=$1 max=$2
    shift 2
    if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then echo "$usage"; exit 0; fi
    if (( $# < min || $# > max )); then echo "$usage" >&2; exit 2; fi
}

need() {  # need TOOL...: each must be on PATH
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "'$t' not found on PATH (for Flower's tools: source .venv/bin/activate or put the venv's bin/ first on PATH)"
    done
}

deploy_env() {  # deploy_env DEPLOY_DIR: absolute DEPLOY_DIR in $DEPLOY, Flower's environment
    mkdir -p "$1"
    DEPLOY="$(cd "$1" && pwd)"
    mkdir -p "$DEPLOY/logs" "$DEPLOY/pids" "$DEPLOY/flwr-home"
    export FLWR_HOME="$DEPLOY/flwr-home"
    export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
    export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
    export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning}"
}

pid_alive() {  # pid_alive PID: running (a zombie, exited but not reaped, is not)
    local st
    if [[ -d /proc/self ]]; then  # Linux, also where ps is not installed
        st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        st=${st##*) }
    else
        st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    fi
    [[ -n "$st" && "$st" != Z* ]]
}

pid_args() {  # pid_args PID: its command line
    if [[ -d /proc/self ]]; then
        tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null || true
    else
        ps -o args= -p "$1" 2>/dev/null || true
    fi
}

pid_children() {  # pid_children PID: its direct children (ps, or /proc where ps is missing)
    if command -v ps >/dev/null 2>&1; then
        ps -o pid= --ppid "$1" 2>/dev/null || true
        return 0
    fi
    local f st ppid
    for f in /proc/[0-9]*/stat; do
        st=$(cat "$f" 2>/dev/null) || continue
        st=${st##*) }
        read -r _ ppid _ <<< "$st"
        [[ "$ppid" == "$1" ]] && { f=${f#/proc/}; echo "${f%/stat}"; }
    done
    return 0
}

port_open() {  # port_open HOST PORT: something accepts connections there
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() {  # wait_port HOST PORT PID SECONDS LOG: until HOST:PORT accepts, or fail
    local host=$1 port=$2 pid=$3 secs=$4 logf=$5 t=0
    while ! port_open "$host" "$port"; do
        if ! pid_alive "$pid"; then
            echo "error: process $pid exited before $host:$port opened; last lines of $logf:" >&2
            tail -n 20 "$logf" >&2 || true
            exit 1
        fi
        if (( t >= secs * 5 )); then
            echo "error: $host:$port not open after ${secs}s (process $pid still running); see $logf" >&2
            exit 1
        fi
        sleep 0.2
        t=$((t + 1))
    done
}

write_connection() {  # write_connection ADDRESS CA_CERT: [superlink.$CONNECTION] in config.toml
    local addr=$1 ca=$2 cfg="$FLWR_HOME/config.toml"
    [[ -f "$ca" ]] || die "CA certificate $ca not found (deploy/make_certs.sh makes certs/ca.crt)"
    ca="$(cd "$(dirname "$ca")" && pwd)/$(basename "$ca")"
    local body
    body="$(printf '[superlink.%s]\naddress = "%s"\nroot-certificates = "%s"\n' "$CONNECTION" "$addr" "$ca")"
    if [[ -f "$cfg" ]]; then  # drop an older [superlink.$CONNECTION] table, keep the rest
        awk -v t="[superlink.$CONNECTION]" '
            /^\[/ { skip = ($0 == t) } !skip' "$cfg" > "$cfg.tmp"
    else
        printf '[superlink]\ndefault = "%s"\n\n' "$CONNECTION" > "$cfg.tmp"
    fi
    printf '%s\n' "$body" >> "$cfg.tmp"
    mv "$cfg.tmp" "$cfg"
}

#!/usr/bin/env bash
# Runs the Autobahn testsuite (fuzzing client, RFC 6455 conformance) against the echo example.
#
#   scripts/autobahn.sh
#
# Steps: find Python 2.7 (the suite runs only there), make a virtualenv in target/autobahn-venv with the
# pinned packages of scripts/autobahn/requirements-py27.txt (kept between runs), build and start
# `examples/echo --deflate` on a free loopback port, run every case (the suite's 517, permessage-deflate's
# 12.* and 13.* included), stop the server, then print one summary line and the 9.x, 12.x and 13.x durations.
# The HTML/JSON report lands in reports/servers/ (not tracked by git).
#
# Exits non-zero on any FAILED or UNIMPLEMENTED case, on any NON-STRICT case not justified in
# scripts/autobahn/non-strict.txt, or if the server died during the run.
#
# Environment (all optional):
#   AUTOBAHN_PYTHON2      path of a python2.7 to use instead of searching pyenv and PATH
#   AUTOBAHN_SERVER_CMD   server command line to test instead of the echo example; run by bash with
#                         $PORT set, it must listen on 127.0.0.1:$PORT (e.g. 'python3 echo.py --port $PORT')
#   AUTOBAHN_CASES        JSON list of cases to run (default ["*"]), e.g. '["1.*", "9.1.*"]'
#   AUTOBAHN_TIMEOUT      seconds the whole fuzzing run may take (default 1500)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/scripts/autobahn"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="$target_dir/autobahn-venv"
reports="$root/reports"
outdir="$reports/servers"
requirements="$here/requirements-py27.txt"
justified="$here/non-strict.txt"
virtualenv_pin="virtualenv==16.7.12"   # the last virtualenv that is one module and runs on Python 2.7

# quiet pip's notices about old Pythons (as variables: old pips would reject unknown flags)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1 PIP_ROOT_USER_ACTION=ignore

say() { echo "autobahn: $*"; }
die() { echo "autobahn: error: $*" >&2; exit 1; }

apt_install() {
    command -v apt-get >/dev/null || die "missing $*, and no apt-get to install it with"
    say "installing $* with apt-get"
    if [ -z "${apt_updated:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- tools: python3 (port picking, report parsing), a C compiler (wsaccel builds from source) ---
command -v python3 >/dev/null || apt_install python3
command -v cc >/dev/null || apt_install gcc libc6-dev

# --- Python 2.7: $AUTOBAHN_PYTHON2, then pyenv's 2.7.x versions, then python2.7 / python2 on PATH ---
is_python27() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; }

find_python27() {
    local candidate version pyenv
    # pyenv on PATH, else where its installer puts it (a shell without `pyenv init` lacks it on PATH)
    pyenv=$(command -v pyenv 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv")
    if [ -x "$pyenv" ]; then
        # newest 2.7.x first; `pyenv prefix` resolves the install folder wherever pyenv keeps it
        for version in $("$pyenv" versions --bare 2>/dev/null | grep -E '^2\.7(\.[0-9]+)?$' | sort -t. -k3,3nr); do
            candidate="$("$pyenv" prefix "$version" 2>/dev/null)/bin/python2.7"
            if is_python27 "$candidate"; then echo "$candidate"; return; fi
        done
    fi
    for candidate in python2.7 python2; do
        candidate=$(command -v "$candidate" 2>/dev/null) || continue
        if is_python27 "$candidate"; then echo "$candidate"; return; fi
    done
    return 1
}

if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then
    is_python27 "$AUTOBAHN_PYTHON2" || die "AUTOBAHN_PYTHON2=$AUTOBAHN_PYTHON2 is not a working Python 2.7"
    python2=$AUTOBAHN_PYTHON2
else
    python2=$(find_python27) || die "no Python 2.7 found, and the Autobahn testsuite runs only on Python 2.7.
  Looked at: pyenv versions 2.7.x, then python2.7 and python2 on PATH.
  Install one (for example: pyenv install 2.7.18) or set AUTOBAHN_PYTHON2=/path/to/python2.7."
fi
say "using $python2 ($("$python2" -c 'import sys; print(sys.version.split()[0])'))"

# --- the virtualenv: rebuilt only when the interpreter or the pins change ---
stamp="$venv/.requirements-stamp"
want_stamp="$python2 $(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -x "$venv/bin/wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
    say "virtualenv $venv is up to date"
else
    say "creating virtualenv $venv"
    rm -rf "$venv"
    bootstrap="$target_dir/autobahn-bootstrap"
    mkdir -p "$target_dir"
    if [ ! -f "$bootstrap/virtualenv.py" ]; then
        # Python 2.7's own pip when it has one, else python3's pip (virtualenv 16 is a py2.py3 wheel)
        pip_for_bootstrap="$python2"
        if ! "$python2" -m pip --version >/dev/null 2>&1; then
            pip_for_bootstrap=python3
            python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        fi
        # (stderr to a log: Python 2.7's old pip warns about its age on every call)
        "$pip_for_bootstrap" -m pip install --quiet --no-deps --target "$bootstrap" "$virtualenv_pin" \
            2> "$target_dir/autobahn-bootstrap.log" \
            || { cat "$target_dir/autobahn-bootstrap.log" >&2; die "could not install $virtualenv_pin into $bootstrap"; }
    fi
    PYTHONPATH="$bootstrap" "$python2" -m virtualenv --quiet --no-download "$venv" \
        || die "could not create the virtualenv $venv"
    "$venv/bin/python" -m pip install --quiet \
        -r "$requirements" || die "could not install $requirements"
    [ -x "$venv/bin/wstest" ] || die "wstest is missing from $venv after the install"
    echo "$want_stamp" > "$stamp"
fi
say "$("$venv/bin/wstest" --autobahnversion 2>&1 | tr '\n' ' ')"

# --- the server under test ---
if [ -z "${AUTOBAHN_SERVER_CMD:-}" ]; then
    say "building the echo example (release)"
    (cd "$root" && nice -n 10 cargo build --release --example echo)
    echo_bin="$target_dir/release/examples/echo"
    [ -x "$echo_bin" ] || die "$echo_bin was not built"
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORT

rm -rf "$outdir"
mkdir -p "$outdir"
server_log="$reports/server.log"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

if [ -n "${AUTOBAHN_SERVER_CMD:-}" ]; then
    say "starting: $AUTOBAHN_SERVER_CMD (PORT=$PORT)"
    bash -c "exec $AUTOBAHN_SERVER_CMD" > "$server_log" 2>&1 &
else
    say "starting: $echo_bin --host 127.0.0.1 --port $PORT --deflate"
    "$echo_bin" --host 127.0.0.1 --port "$PORT" --deflate > "$server_log" 2>&1 &
fi
server_pid=$!

# wait (at most 30 s) until the port accepts connections
for attempt in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        status=0
        wait "$server_pid" || status=$?
        echo "autobahn: error: the server (pid $server_pid) exited with status $status before it listened;" \
            "last lines of $server_log:" >&2
        tail -n 20 "$server_log" >&2 || true
        exit 1
    fi
    if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$PORT" 2>/dev/null; then
        break
    fi
    [ "$attempt" -lt 300 ] || die "the server did not listen on 127.0.0.1:$PORT within 30 s"
    sleep 0.1
done

# --- the fuzzing run ---
spec="$reports/fuzzingclient.json"
cases=${AUTOBAHN_CASES:-'["*"]'}
cat > "$spec" <<EOF
{
  "outdir": "$outdir",
  "options": {"failByDrop": true},
  "servers": [{"agent": "wsloop", "url": "ws://127.0.0.1:$PORT"}],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
say "running the fuzzing client against ws://127.0.0.1:$PORT (log: $reports/wstest.log)"
started=$(date +%s)
wstest_status=0
(cd "$reports" && timeout "${AUTOBAHN_TIMEOUT:-1500}" "$venv/bin/wstest" -m fuzzingclient -s "$spec") \
    > "$reports/wstest.log" 2>&1 || wstest_status=$?
say "fuzzing client finished in $(( $(date +%s) - started )) s"

# stop the server, or find it already gone (a crash: its exit status is kept for the report below)
server_status=""
if kill -0 "$server_pid" 2>/dev/null; then
    stop_server
else
    server_status=0
    wait "$server_pid" || server_status=$?
    dead_pid=$server_pid
    server_pid=""   # reaped: nothing left for the exit trap to stop
fi

summary_status=0
python3 "$here/summary.py" "$outdir" "$justified" || summary_status=$?

if [ "$wstest_status" -ne 0 ]; then
    echo "autobahn: error: wstest exited with status $wstest_status; last lines of $reports/wstest.log:" >&2
    tail -n 20 "$reports/wstest.log" >&2 || true
fi
if [ -n "$server_status" ]; then
    echo "autobahn: error: the server (pid $dead_pid) died during the run, exit status $server_status;" \
        "the results above are incomplete; last lines of $server_log:" >&2
    tail -n 20 "$server_log" >&2 || true
fi

[ -z "$server_status" ] && [ "$wstest_status" -eq 0 ] && [ "$summary_status" -eq 0 ]

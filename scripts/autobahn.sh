#!/usr/bin/env bash
# Runs the Autobahn testsuite (fuzzing client, RFC 6455 conformance) against the echo example, over ws:// and,
# at the same time, over wss://.
#
#   scripts/autobahn.sh
#
# Steps: find Python 2.7 (the suite runs only there), make a virtualenv in target/autobahn-venv with the
# pinned packages of scripts/autobahn/requirements-py27.txt (kept between runs; pyOpenSSL and service_identity
# there give the client its TLS), build the echo example, make a throwaway self-signed certificate for
# localhost and 127.0.0.1 with openssl in target/autobahn-tls/, then start two servers on two free loopback
# ports: `examples/echo --deflate` and `examples/echo --deflate --tls-cert C --tls-key K`. Two fuzzing clients
# run side by side, one against ws://, one against wss://, each with every case (the suite's 517,
# permessage-deflate's 12.* and 13.* included); a client spends much of its run waiting rather than computing,
# so even on two cores the pair takes about as long as one run alone. Each server stops when its client is
# done; then each run prints its summary line and its 9.x, 12.x and 13.x durations, and
# scripts/autobahn/compare.py says whether both runs gave every case the same result.
# The HTML/JSON reports land in reports/servers/ (ws://) and reports/servers-wss/ (wss://), not tracked by git.
#
# Exits non-zero if either run has a FAILED or UNIMPLEMENTED case, or a NON-STRICT case not justified in
# scripts/autobahn/non-strict.txt, if a server died during its run, or if the two runs differ in any case.
#
# Environment (all optional):
#   AUTOBAHN_PYTHON2      path of a python2.7 to use instead of searching pyenv and PATH
#   AUTOBAHN_SERVER_CMD   server command line to test instead of the echo example; run by bash with
#                         $PORT set, it must listen on 127.0.0.1:$PORT (e.g. 'python3 echo.py --port $PORT');
#                         only the ws:// run happens then (nothing is built, no certificate is made)
#   AUTOBAHN_TLS          0 skips the wss:// run (default 1)
#   AUTOBAHN_CASES        JSON list of cases to run (default ["*"]), e.g. '["1.*", "9.1.*"]'
#   AUTOBAHN_TIMEOUT      seconds each fuzzing run may take (default 1500; the two run side by side)
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

case "${AUTOBAHN_TLS:-1}" in
    0|1) ;;
    *) die "AUTOBAHN_TLS must be 0 or 1, not '$AUTOBAHN_TLS'" ;;
esac

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

# --- which runs: ws:// always, wss:// beside it unless switched off or another server is under test ---
runs=(ws)
if [ -n "${AUTOBAHN_SERVER_CMD:-}" ]; then
    say "AUTOBAHN_SERVER_CMD is set: only the ws:// run"
elif [ "${AUTOBAHN_TLS:-1}" = 0 ]; then
    say "AUTOBAHN_TLS=0: only the ws:// run"
else
    runs+=(wss)
fi

# Per run: its port, URL, report folder, spec, logs, and the processes and their outcomes.
declare -A port url outdir_of spec_of wstest_log server_log server_pid wstest_pid wstest_status server_status
outdir_of[ws]="$outdir"
spec_of[ws]="$reports/fuzzingclient.json"
wstest_log[ws]="$reports/wstest.log"
server_log[ws]="$reports/server.log"
outdir_of[wss]="$reports/servers-wss"
spec_of[wss]="$reports/fuzzingclient-wss.json"
wstest_log[wss]="$reports/wstest-wss.log"
server_log[wss]="$reports/server-wss.log"

# --- the server under test ---
if [ -z "${AUTOBAHN_SERVER_CMD:-}" ]; then
    say "building the echo example (release)"
    (cd "$root" && nice -n 10 cargo build --release --example echo)
    echo_bin="$target_dir/release/examples/echo"
    [ -x "$echo_bin" ] || die "$echo_bin was not built"
fi

# A certificate made for this run only (valid two days), never committed.
if [ "${#runs[@]}" -gt 1 ]; then
    command -v openssl >/dev/null || apt_install openssl
    tls_dir="$target_dir/autobahn-tls"
    mkdir -p "$tls_dir"
    tls_cert="$tls_dir/cert.pem"
    tls_key="$tls_dir/key.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$tls_key" -out "$tls_cert" > "$tls_dir/openssl.log" 2>&1 \
        || { cat "$tls_dir/openssl.log" >&2; die "openssl could not make a certificate in $tls_dir"; }
fi

# One free loopback port per run, all held at once so that no two are the same.
read -r -a free_ports <<< "$(python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "${#runs[@]}")"
port[ws]=${free_ports[0]}
url[ws]="ws://127.0.0.1:${port[ws]}"
if [ "${#runs[@]}" -gt 1 ]; then
    port[wss]=${free_ports[1]}
    url[wss]="wss://127.0.0.1:${port[wss]}"
fi
PORT=${port[ws]}
export PORT

# (both report folders go: one left from an earlier run would look like this run's)
rm -rf "${outdir_of[ws]}" "${outdir_of[wss]}"
for name in "${runs[@]}"; do mkdir -p "${outdir_of[$name]}"; done

# Stops a run's server if it is still there (SIGTERM, then SIGKILL after 5 s).
stop_server() {
    local pid=${server_pid[$1]:-}
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    server_pid[$1]=""
}
# On the way out, whatever happened: the fuzzing clients (`timeout` passes the signal on to wstest), then
# the servers.
cleanup() {
    local name pid
    for name in "${!wstest_pid[@]}"; do
        pid=${wstest_pid[$name]}
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    done
    for name in "${!server_pid[@]}"; do stop_server "$name"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for name in "${runs[@]}"; do
    if [ -n "${AUTOBAHN_SERVER_CMD:-}" ]; then
        say "starting: $AUTOBAHN_SERVER_CMD (PORT=$PORT)"
        bash -c "exec $AUTOBAHN_SERVER_CMD" > "${server_log[$name]}" 2>&1 &
    elif [ "$name" = wss ]; then
        say "starting: $echo_bin --host 127.0.0.1 --port ${port[$name]} --deflate --tls-cert $tls_cert --tls-key $tls_key"
        "$echo_bin" --host 127.0.0.1 --port "${port[$name]}" --deflate --tls-cert "$tls_cert" --tls-key "$tls_key" \
            > "${server_log[$name]}" 2>&1 &
    else
        say "starting: $echo_bin --host 127.0.0.1 --port ${port[$name]} --deflate"
        "$echo_bin" --host 127.0.0.1 --port "${port[$name]}" --deflate > "${server_log[$name]}" 2>&1 &
    fi
    server_pid[$name]=$!
done

# wait (at most 30 s each) until every server's port accepts connections
for name in "${runs[@]}"; do
    pid=${server_pid[$name]}
    for attempt in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            status=0
            wait "$pid" || status=$?
            server_pid[$name]=""
            echo "autobahn: error: the $name server (pid $pid) exited with status $status before it listened;" \
                "last lines of ${server_log[$name]}:" >&2
            tail -n 20 "${server_log[$name]}" >&2 || true
            exit 1
        fi
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "${port[$name]}" 2>/dev/null; then
            break
        fi
        [ "$attempt" -lt 300 ] || die "the $name server did not listen on 127.0.0.1:${port[$name]} within 30 s"
        sleep 0.1
    done
done

# --- the fuzzing runs, side by side ---
cases=${AUTOBAHN_CASES:-'["*"]'}
declare -A agent=([ws]=wsloop [wss]=wsloop-wss)
started=$(date +%s)
for name in "${runs[@]}"; do
    # The client does not check the server's certificate (no "hostname" in the spec: no SNI, no verification),
    # so the self-signed one above needs no trust store.
    cat > "${spec_of[$name]}" <<EOF
{
  "outdir": "${outdir_of[$name]}",
  "options": {"failByDrop": true},
  "servers": [{"agent": "${agent[$name]}", "url": "${url[$name]}"}],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
    say "running the fuzzing client against ${url[$name]} (log: ${wstest_log[$name]})"
    # exec: the background job is `timeout` itself, which the exit trap can stop
    (cd "$reports" && exec timeout "${AUTOBAHN_TIMEOUT:-1500}" "$venv/bin/wstest" -m fuzzingclient -s "${spec_of[$name]}") \
        > "${wstest_log[$name]}" 2>&1 &
    wstest_pid[$name]=$!
done

# Report each run as it ends; stop its server then (or find it already gone: a crash, whose exit status is
# kept for the report below).
pending=("${runs[@]}")
while [ "${#pending[@]}" -gt 0 ]; do
    sleep 1
    still=()
    for name in "${pending[@]}"; do
        pid=${wstest_pid[$name]}
        if kill -0 "$pid" 2>/dev/null; then still+=("$name"); continue; fi
        status=0
        wait "$pid" || status=$?
        wstest_status[$name]=$status
        wstest_pid[$name]=""
        say "${url[$name]}: fuzzing client finished in $(( $(date +%s) - started )) s"
        spid=${server_pid[$name]}
        if kill -0 "$spid" 2>/dev/null; then
            stop_server "$name"
        else
            status=0
            wait "$spid" || status=$?
            server_status[$name]="$spid $status"
            server_pid[$name]=""   # reaped: nothing left for the exit trap to stop
        fi
    done
    pending=("${still[@]}")
done
say "all fuzzing finished in $(( $(date +%s) - started )) s"

# --- the results ---
ok=1
for name in "${runs[@]}"; do
    echo
    say "=== ${url[$name]} (report: ${outdir_of[$name]}/index.html)"
    python3 "$here/summary.py" "${outdir_of[$name]}" "$justified" || ok=0
    if [ "${wstest_status[$name]}" -ne 0 ]; then
        ok=0
        echo "autobahn: error: wstest against ${url[$name]} exited with status ${wstest_status[$name]};" \
            "last lines of ${wstest_log[$name]}:" >&2
        tail -n 20 "${wstest_log[$name]}" >&2 || true
    fi
    if [ -n "${server_status[$name]:-}" ]; then
        ok=0
        read -r dead_pid status <<< "${server_status[$name]}"
        echo "autobahn: error: the ${url[$name]} server (pid $dead_pid) died during the run, exit status $status;" \
            "the results above are incomplete; last lines of ${server_log[$name]}:" >&2
        tail -n 20 "${server_log[$name]}" >&2 || true
    fi
done

if [ "${#runs[@]}" -gt 1 ]; then
    echo
    python3 "$here/compare.py" "${outdir_of[ws]}" "${outdir_of[wss]}" || ok=0
fi

[ "$ok" = 1 ]

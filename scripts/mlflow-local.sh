#!/usr/bin/env bash
# A local MLflow tracking server for the tests marked `mlflow` (make test-mlflow) and for trying
# logger=mlflow: `mlflow server` on 127.0.0.1 (a free port), runs in SQLite, artifacts in a folder.
#   scripts/mlflow-local.sh start   # prints `export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`
#   scripts/mlflow-local.sh stop    # stops the server (its whole process group) by its pid file and
#                                   # removes the folder: database, artifacts, log
# Everything lives in $MLFLOW_LOCAL_DIR, so a server that already runs on this host is left alone.
# The server is `$PYTHON -m mlflow` (PYTHON defaults to python3; make test-mlflow passes the venv's).
set -euo pipefail

DIR="${MLFLOW_LOCAL_DIR:-${TMPDIR:-/tmp}/transfer-lightning-mlflow}"
PYTHON="${PYTHON:-python3}"

running() {
    [[ -f "$DIR/server.pid" ]] && kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    if running; then
        echo "mlflow-local: already running (state in $DIR)" >&2
        echo "export MLFLOW_TRACKING_URI=$(cat "$DIR/uri")"
        return
    fi
    "$PYTHON" -c 'import mlflow.server' 2>/dev/null || {
        echo "mlflow-local: $PYTHON has no mlflow server; pip install 'transfer_lightning[mlflow]'" >&2; exit 1; }
    mkdir -p "$DIR/artifacts"
    local port uri
    port="$(free_port)"
    uri="http://127.0.0.1:$port"
    echo "$uri" >"$DIR/uri"
    # its own session (setsid): stop ends the server and every worker it started, and nothing else
    # no job runner (MLflow's GenAI evaluation jobs: a dozen processes these runs never use)
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$PYTHON" -m mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
        --backend-store-uri "sqlite:///$DIR/mlflow.db" --artifacts-destination "$DIR/artifacts" \
        >"$DIR/server.log" 2>&1 </dev/null &
    echo $! >"$DIR/server.pid"
    for _ in $(seq 180); do
        if "$PYTHON" -c "import urllib.request as u; u.urlopen('$uri/health', timeout=2)" 2>/dev/null; then
            echo "mlflow-local: server at $uri (state in $DIR; $("$PYTHON" -m mlflow --version))" >&2
            echo "export MLFLOW_TRACKING_URI=$uri"
            return
        fi
        running || break
        sleep 1
    done
    echo "mlflow-local: the server did not answer at $uri in 180 s; its log:" >&2
    tail -20 "$DIR/server.log" >&2 || true
    stop
    exit 1
}

stop() {
    [[ -d "$DIR" ]] || return 0
    if running; then
        local pid
        pid="$(cat "$DIR/server.pid")"
        kill -TERM -- "-$pid" 2>/dev/null || true  # the process group setsid gave the server
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -rf "$DIR"
    echo "mlflow-local: stopped" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

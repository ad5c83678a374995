#!/usr/bin/env bash
# The local AWS stack: a DynamoDB + SQS + Secrets Manager emulator (moto) on 127.0.0.1.
#
#   infra/local-stack.sh install   # create .venv with the pinned Python tools (idempotent, fast when done)
#   infra/local-stack.sh start     # install, then start the emulator unless it already answers
#   infra/local-stack.sh stop      # stop the emulator started by `start`
#   infra/local-stack.sh status    # exit 0 when the emulator answers
#   infra/local-stack.sh env       # print the exports that point the AWS SDK at it
#
# WXBRIDGE_LOCAL_PORT picks the port (default 4566). Nothing here reaches AWS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
state="$root/.local"
port="${WXBRIDGE_LOCAL_PORT:-4566}"
pidfile="$state/moto-$port.pid"
log="$state/moto-$port.log"
requirements="$root/infra/requirements-local.txt"

say() { printf 'local-stack: %s\n' "$*" >&2; }

install() {
  local stamp="$venv/.requirements.sha"
  local want
  want="$(sha1sum "$requirements" | cut -d' ' -f1)"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  say "installing pinned tools into .venv (once)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
}

answers() {
  curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/moto-api/" 2>/dev/null
}

start() {
  install
  mkdir -p "$state"
  if answers; then
    say "emulator already answers on 127.0.0.1:$port"
    return 0
  fi
  say "starting emulator on 127.0.0.1:$port"
  # moto's server, with DynamoDB conditional writes made atomic (see infra/emulator.py).
  nohup "$venv/bin/python" "$root/infra/emulator.py" 127.0.0.1 "$port" >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if answers; then
      say "ready"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      say "the emulator exited; its log:"
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  say "the emulator did not answer within 10 s; its log:"
  cat "$log" >&2
  return 1
}

stop() {
  if [[ -f "$pidfile" ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    say "stopped"
  fi
}

env_exports() {
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
EOF
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  env) env_exports ;;
  *)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Stops the development services that scripts/services-up.sh started (`npm run services:down`)
# and deletes the Kafka storage directory. A Kafka or Redis that services-up found already
# running has no pid file here and is left alone. Logs stay in the run directory.
#
# Environment: AFFINITY_RUN_DIR as for services-up.sh (default ~/.cache/affinity/run).
set -euo pipefail

RUN_DIR="${AFFINITY_RUN_DIR:-$HOME/.cache/affinity/run}"
KAFKA_PID_FILE="$RUN_DIR/kafka.pid"
KAFKA_STORAGE_DIR="$RUN_DIR/kafka/data"
# A controlled shutdown of a one-node KRaft broker takes a few seconds; 30 s leaves room.
KAFKA_STOP_TIMEOUT_SECONDS=30
REDIS_PID_FILE="$RUN_DIR/redis.pid"
REDIS_STOP_TIMEOUT_SECONDS=10

log() { printf 'services-down: %s\n' "$*"; }

# Same check as in services-up.sh: alive, not a zombie, and the expected command line.
live_pid() {
  local pid state
  [[ -s $1 ]] || return 1
  pid="$(<"$1")"
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
  state="$(sed 's/^.*) \(.\).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ $state != Z ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
  printf '%s\n' "$pid"
}

# stop NAME PID_FILE COMMAND_PATTERN TIMEOUT_SECONDS: SIGTERM, wait, SIGKILL if it must.
stop() {
  local name=$1 pid_file=$2 pattern=$3 timeout_seconds=$4 pid tick started=$SECONDS
  if [[ ! -e $pid_file ]]; then
    log "$name: not started by services-up; nothing to stop"
    return
  fi
  if ! pid="$(live_pid "$pid_file" "$pattern")"; then
    log "$name: pid file $pid_file is stale; removing it"
    rm -f "$pid_file"
    return
  fi

  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((tick = 0; tick < timeout_seconds * 10; tick++)); do
    if ! live_pid "$pid_file" "$pattern" >/dev/null; then
      rm -f "$pid_file"
      log "$name: stopped ($((SECONDS - started)) s)"
      return
    fi
    sleep 0.1
  done

  log "$name: still running after $timeout_seconds s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((tick = 0; tick < 50; tick++)); do
    live_pid "$pid_file" "$pattern" >/dev/null || break
    sleep 0.1
  done
  rm -f "$pid_file"
}

main() {
  if [[ ! -d $RUN_DIR ]]; then
    log "no run directory $RUN_DIR; nothing to stop"
    return
  fi
  exec 9>"$RUN_DIR/services.lock"
  flock 9

  stop Kafka "$KAFKA_PID_FILE" kafka.Kafka "$KAFKA_STOP_TIMEOUT_SECONDS"
  stop Redis "$REDIS_PID_FILE" redis-server "$REDIS_STOP_TIMEOUT_SECONDS"

  # The storage directory belongs to the run directory, whoever ran the broker: a broker
  # found running by services-up used its own storage, never this one.
  if [[ -d $KAFKA_STORAGE_DIR ]] && ! live_pid "$KAFKA_PID_FILE" kafka.Kafka >/dev/null; then
    rm -rf "$KAFKA_STORAGE_DIR"
    log "removed $KAFKA_STORAGE_DIR"
  fi
}

main "$@"

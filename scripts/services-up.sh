#!/usr/bin/env bash
# Starts the development services without Docker (`npm run services:up`):
#   - Kafka: a single-node KRaft broker (broker and controller in one JVM) on
#     PLAINTEXT 127.0.0.1:19092, controller 127.0.0.1:19093, run from the Maven Central jars
#     pinned in deploy/kafka/pom.xml, on a freshly formatted storage directory;
#   - Redis on 127.0.0.1:6379.
# A service that already answers is left alone, so running this twice is harmless.
# What it starts is recorded in pid files in the run directory, and services-down.sh stops
# exactly that and nothing else.
#
# Environment:
#   AFFINITY_CACHE_DIR  jar cache, outside git (default ~/.cache/affinity)
#   AFFINITY_RUN_DIR    pid files, logs, Kafka storage (default ~/.cache/affinity/run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${AFFINITY_CACHE_DIR:-$HOME/.cache/affinity}"
RUN_DIR="${AFFINITY_RUN_DIR:-$HOME/.cache/affinity/run}"

KAFKA_BOOTSTRAP=127.0.0.1:19092
KAFKA_READY_TIMEOUT_SECONDS=90
KAFKA_HEAP=512m
KAFKA_POM="$ROOT/deploy/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"
KAFKA_LIBS_DIR="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_RUN_DIR="$RUN_DIR/kafka"
KAFKA_STORAGE_DIR="$KAFKA_RUN_DIR/data"
KAFKA_PID_FILE="$RUN_DIR/kafka.pid"
KAFKA_LOG_OPTS=(
  "-Dlog4j2.configurationFile=$ROOT/deploy/kafka/log4j2.xml"
  "-Dkafka.logs.dir=$KAFKA_RUN_DIR"
)

REDIS_HOST=127.0.0.1
REDIS_PORT=6379
REDIS_READY_TIMEOUT_SECONDS=10
REDIS_PID_FILE="$RUN_DIR/redis.pid"

log() { printf 'services-up: %s\n' "$*"; }
die() {
  printf 'services-up: error: %s\n' "$*" >&2
  exit 1
}

require_command() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"
}

# Prints the pid recorded in pid file $1 if that process is alive, not a zombie, and its
# command line contains $2 (a recycled pid must never be taken for our process).
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

kafka_answers() {
  AFFINITY_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" node "$ROOT/scripts/wait-kafka.mjs" 0 >/dev/null 2>&1
}

redis_answers() {
  [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

# Copies the broker's runtime jars from Maven Central into the cache, once per pom content.
# Resolution goes to a staging directory renamed into place, so an interrupted download never
# leaves a cache that looks complete.
resolve_kafka_jars() {
  local marker="$KAFKA_LIBS_DIR/.resolved" wanted staging started=$SECONDS
  wanted="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
  if [[ -f $marker && "$(<"$marker")" == "$wanted" ]]; then
    return
  fi

  require_command mvn "install Maven 3.8+ (apt-get install maven)"
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS_DIR"
  staging="$KAFKA_LIBS_DIR.partial.$$"
  rm -rf "$staging"
  mkdir -p "$staging"
  # Maven's output goes to a file shown only on failure: even with -q -B, Maven 3.8 prints
  # stray ANSI reset sequences.
  if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$staging" >"$staging.maven.log" 2>&1; then
    cat "$staging.maven.log" >&2
    rm -rf "$staging" "$staging.maven.log"
    die "Maven could not resolve the Kafka jars (its output is above)"
  fi
  rm -f "$staging.maven.log"

  printf '%s\n' "$wanted" >"$staging/.resolved"
  rm -rf "$KAFKA_LIBS_DIR"
  mv "$staging" "$KAFKA_LIBS_DIR"
  log "resolved $(find "$KAFKA_LIBS_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - started)) s"
}

# The last lines of the broker's output and log, stack frames left out so that the
# "Caused by" lines fit on a screen.
print_kafka_logs() {
  local file
  for file in "$KAFKA_RUN_DIR/broker.out" "$KAFKA_RUN_DIR/broker.log"; do
    if [[ -s $file ]]; then
      printf -- '--- last lines of %s, without stack frames ---\n' "$file" >&2
      grep -vE '^[[:space:]]+(at |\.\.\. [0-9]+ more)' "$file" | tail -n 30 >&2 || true
    fi
  done
}

# A cluster id as `kafka-storage.sh random-uuid` makes one, without starting a JVM: 16
# random bytes in unpadded base64url (22 characters), never starting with "-" (Kafka's
# Uuid.randomUuid redraws those so that the id cannot be taken for a command-line option).
new_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    [[ $id == -* ]] || break
  done
  printf '%s\n' "$id"
}

# Writes server.properties, formats a fresh storage directory with a new cluster id.
prepare_kafka_run_dir() {
  local template cluster_id
  rm -rf "$KAFKA_RUN_DIR"
  mkdir -p "$KAFKA_STORAGE_DIR"
  template="$(<"$ROOT/deploy/kafka/server.properties.template")"
  printf '%s\n' "${template//@KAFKA_DATA_DIR@/"$KAFKA_STORAGE_DIR"}" \
    >"$KAFKA_RUN_DIR/server.properties"

  cluster_id="$(new_cluster_id)"
  # --standalone makes this node the single voter of the controller quorum (KIP-853); it
  # needs controller.quorum.bootstrap.servers, not controller.quorum.voters. A one-shot tool
  # starts faster with C1 only and the serial collector (about 2 s instead of 3-5 s here).
  if ! java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${KAFKA_LOG_OPTS[@]}" \
    -cp "$KAFKA_LIBS_DIR/*" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
    -c "$KAFKA_RUN_DIR/server.properties" >"$KAFKA_RUN_DIR/format.out" 2>&1; then
    cat "$KAFKA_RUN_DIR/format.out" >&2
    die "formatting the Kafka storage directory failed"
  fi
}

start_kafka() {
  local pid started=$SECONDS
  if kafka_answers; then
    log "Kafka already answers on $KAFKA_BOOTSTRAP; leaving it alone"
    return
  fi

  if pid="$(live_pid "$KAFKA_PID_FILE" kafka.Kafka)"; then
    log "Kafka (pid $pid) is still starting; waiting for it"
  else
    require_command java "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
    resolve_kafka_jars
    prepare_kafka_run_dir
    rm -f "$KAFKA_PID_FILE"

    # setsid: its own session, so Ctrl-C in the terminal that ran `npm test` does not reach
    # it. The inner shell records its pid and then becomes the JVM (exec keeps the pid).
    # 9>&- : the JVM must not inherit the lock held by this script.
    # shellcheck disable=SC2016 # $$ and $@ are the inner shell's, hence the single quotes
    setsid bash -c 'printf "%s\n" "$$" >"$1"; shift; exec "$@"' _ "$KAFKA_PID_FILE" \
      java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "${KAFKA_LOG_OPTS[@]}" \
      -cp "$KAFKA_LIBS_DIR/*" kafka.Kafka "$KAFKA_RUN_DIR/server.properties" \
      </dev/null >"$KAFKA_RUN_DIR/broker.out" 2>&1 9>&- &
    for _ in $(seq 50); do
      [[ -s $KAFKA_PID_FILE ]] && break
      sleep 0.1
    done
    [[ -s $KAFKA_PID_FILE ]] || die "the broker process did not start (no $KAFKA_PID_FILE)"
    pid="$(<"$KAFKA_PID_FILE")"
    log "Kafka $KAFKA_VERSION starting (pid $pid, storage $KAFKA_STORAGE_DIR)"
  fi

  if AFFINITY_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" node "$ROOT/scripts/wait-kafka.mjs" \
    "$KAFKA_READY_TIMEOUT_SECONDS" --pid "$pid" --coordinator; then
    log "Kafka ready on $KAFKA_BOOTSTRAP ($((SECONDS - started)) s)"
    return
  fi

  print_kafka_logs
  if ! live_pid "$KAFKA_PID_FILE" kafka.Kafka >/dev/null; then
    rm -f "$KAFKA_PID_FILE"
    die "the Kafka broker exited during start-up (logs in $KAFKA_RUN_DIR)"
  fi
  # A broker that does not answer after the whole deadline is stuck: it is stopped, so that
  # the next services-up starts afresh instead of waiting for it again.
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$KAFKA_PID_FILE"
  die "Kafka did not answer on $KAFKA_BOOTSTRAP within $KAFKA_READY_TIMEOUT_SECONDS s;" \
    "stopped it (pid $pid); logs in $KAFKA_RUN_DIR"
}

start_redis() {
  local attempt
  require_command redis-cli "install Redis 7 (apt-get install redis-server)"
  if redis_answers; then
    log "Redis already answers on $REDIS_HOST:$REDIS_PORT; leaving it alone"
    return
  fi

  require_command redis-server "install Redis 7 (apt-get install redis-server)"
  redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$RUN_DIR" --pidfile "$REDIS_PID_FILE" \
    --logfile "$RUN_DIR/redis.log" 9>&-
  for ((attempt = 0; attempt < REDIS_READY_TIMEOUT_SECONDS * 10; attempt++)); do
    if redis_answers; then
      log "Redis started on $REDIS_HOST:$REDIS_PORT (pid file $REDIS_PID_FILE)"
      return
    fi
    sleep 0.1
  done

  tail -n 20 "$RUN_DIR/redis.log" >&2 || true
  die "Redis did not answer on $REDIS_HOST:$REDIS_PORT within $REDIS_READY_TIMEOUT_SECONDS s"
}

main() {
  [[ -n $KAFKA_VERSION ]] || die "no <kafka.version> in $KAFKA_POM"
  require_command node "install Node.js 20+"
  [[ -d $ROOT/node_modules/kafkajs ]] || die "kafkajs is not installed; run 'npm ci' first"

  mkdir -p "$RUN_DIR"
  # One services-up or services-down at a time per run directory.
  exec 9>"$RUN_DIR/services.lock"
  flock 9

  start_redis
  start_kafka
}

main "$@"

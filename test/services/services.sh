# shellcheck shell=bash
# Services for the integration tests: a Docker Engine, an open Docker registry and a
# registry with htpasswd basic auth, all on 127.0.0.1 and all kept in one temporary folder.
# Needs root and the Debian packages docker.io, docker-registry, apache2-utils and curl.
#
# By hand, from the repository root:
#   source test/services/services.sh && services_start
#   npm test
#   services_stop
#
# From a shell that should not source it:
#   eval "$(bash test/services/services.sh start)"   # prints the export lines
#   bash test/services/services.sh stop              # reads PPA_TEST_SERVICES_DIR
#
# services_start exports DOCKER_HOST, PPA_TEST_REGISTRY, PPA_TEST_AUTH_REGISTRY,
# PPA_TEST_AUTH_USER, PPA_TEST_AUTH_PASSWORD, PPA_TEST_SERVICES_DIR and DOCKER_CONFIG.

# Seconds that each service gets to pass its readiness check, and to exit after SIGTERM.
SERVICES_START_TIMEOUT=60
SERVICES_STOP_TIMEOUT=30

# Name of the file that marks a folder as made by services_start, so that services_stop
# never deletes a folder that PPA_TEST_SERVICES_DIR points at by mistake.
_SERVICES_MARKER=.ppa-load-services

_services_log() {
  printf 'services: %s\n' "$*" >&2
}

# Print COUNT random bytes as lowercase hex.
_services_random_hex() {
  od -An -N "$1" -tx1 /dev/urandom | tr -d ' \n'
}

# Print COUNT distinct free TCP ports on 127.0.0.1. All sockets stay open until every port
# is known, so the ports differ. Another program could still take a port before the service binds it.
_services_free_ports() {
  node -e '
    const net = require("node:net");
    const count = Number(process.argv[1]);
    const servers = [];
    const listenNext = () => {
      if (servers.length === count) {
        console.log(servers.map((server) => server.address().port).join(" "));
        servers.forEach((server) => server.close());
        return;
      }
      const server = net.createServer();
      server.listen(0, "127.0.0.1", listenNext);
      servers.push(server);
    };
    listenNext();
  ' "$1"
}

# Succeed while PID runs. A zombie counts as stopped, because the services are orphans and
# PID 1 may reap them seconds later.
_services_is_running() {
  local pid=$1 state
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# Start a command in the background with its output in LOG and record its pid in
# DIR/pids/NAME. The subshell exits at once, so the daemon is not a job of the calling
# shell and any shell can stop it from the pid file.
_services_spawn() {
  local name=$1 log=$2
  shift 2
  (
    "$@" </dev/null >>"$log" 2>&1 &
    echo "$!" >"$PPA_TEST_SERVICES_DIR/pids/$name"
  )
}

# Print the reason a service failed and the end of its log.
_services_report_failure() {
  local name=$1 log=$2 reason=$3
  _services_log "$name $reason. Last lines of $log:"
  tail -n 40 "$log" >&2 2>/dev/null || true
}

# Poll CHECK (a command) until it succeeds, the service exits or the timeout passes.
_services_wait_ready() {
  local name=$1 log=$2
  shift 2
  local pid deadline=$((SECONDS + SERVICES_START_TIMEOUT))
  pid=$(cat "$PPA_TEST_SERVICES_DIR/pids/$name" 2>/dev/null) || pid=
  while ! "$@"; do
    if [[ -z "$pid" ]] || ! _services_is_running "$pid"; then
      _services_report_failure "$name" "$log" "exited before it was ready"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      _services_report_failure "$name" "$log" "not ready after ${SERVICES_START_TIMEOUT} s"
      return 1
    fi
    sleep 0.5
  done
  _services_log "$name ready (pid $pid)"
}

_services_docker_ping() {
  [[ "$(curl -sS --max-time 5 --unix-socket "$1" http://localhost/_ping 2>/dev/null)" == OK ]]
}

_services_registry_status_is() {
  local url=$1 expected=$2
  [[ "$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "$url")" == "$expected" ]]
}

_services_start_dockerd() {
  local dir=$PPA_TEST_SERVICES_DIR
  local socket=$dir/docker.sock
  # An empty config file keeps /etc/docker/daemon.json out, because a setting there that
  # repeats a flag below makes dockerd exit at start.
  echo '{}' >"$dir/daemon.json" || return 1
  # ppa-load only loads, tags and pushes images, so dockerd gets no bridge network and
  # leaves the host firewall alone. vfs copies each layer in full, which is slow for big
  # images, but it works on any file system and needs no kernel modules.
  _services_spawn dockerd "$dir/dockerd.log" \
    dockerd \
    --config-file "$dir/daemon.json" \
    --iptables=false \
    --ip6tables=false \
    --bridge=none \
    --storage-driver=vfs \
    --data-root "$dir/docker" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" \
    -H "unix://$socket" || return 1
  _services_wait_ready dockerd "$dir/dockerd.log" _services_docker_ping "$socket" || return 1
  export DOCKER_HOST="unix://$socket"
}

# Write the configuration of one registry (Docker Distribution 2.8 format).
# AUTH_FILE, when given, is an htpasswd file that turns on basic auth.
_services_write_registry_config() {
  local name=$1 port=$2 auth_file=${3:-}
  local dir=$PPA_TEST_SERVICES_DIR
  mkdir -p "$dir/$name" || return 1
  # http.secret signs the upload state that clients carry between requests. Without it
  # the registry generates one at start and logs a warning.
  cat >"$dir/$name.yml" <<EOF || return 1
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/$name
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(_services_random_hex 32)
EOF
  if [[ -n "$auth_file" ]]; then
    cat >>"$dir/$name.yml" <<EOF || return 1
auth:
  htpasswd:
    realm: ppa-load-test
    path: $auth_file
EOF
  fi
}

_services_start_open_registry() {
  local port=$1
  local dir=$PPA_TEST_SERVICES_DIR
  _services_write_registry_config registry-open "$port" || return 1
  _services_spawn registry-open "$dir/registry-open.log" \
    docker-registry serve "$dir/registry-open.yml" || return 1
  _services_wait_ready registry-open "$dir/registry-open.log" \
    _services_registry_status_is "http://127.0.0.1:$port/v2/" 200 || return 1
  export PPA_TEST_REGISTRY=127.0.0.1:$port
}

_services_start_auth_registry() {
  local port=$1
  local dir=$PPA_TEST_SERVICES_DIR
  local user=ppa-test
  local password
  password=$(_services_random_hex 16) || return 1
  # -i reads the password from stdin, which keeps it out of the process list.
  printf '%s\n' "$password" | htpasswd -Bin "$user" >"$dir/htpasswd" || {
    _services_log "htpasswd failed to write $dir/htpasswd"
    return 1
  }
  _services_write_registry_config registry-auth "$port" "$dir/htpasswd" || return 1
  _services_spawn registry-auth "$dir/registry-auth.log" \
    docker-registry serve "$dir/registry-auth.yml" || return 1
  _services_wait_ready registry-auth "$dir/registry-auth.log" \
    _services_registry_status_is "http://127.0.0.1:$port/v2/" 401 || return 1
  export PPA_TEST_AUTH_REGISTRY=127.0.0.1:$port
  export PPA_TEST_AUTH_USER=$user
  export PPA_TEST_AUTH_PASSWORD=$password
}

_services_check_prerequisites() {
  local missing=() command
  if [[ $EUID -ne 0 ]]; then
    _services_log "must run as root, because dockerd needs it"
    return 1
  fi
  for command in dockerd docker-registry htpasswd curl node od awk; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
  done
  if ((${#missing[@]} > 0)); then
    _services_log "missing commands: ${missing[*]}"
    _services_log "install them with: apt-get install -y docker.io docker-registry apache2-utils curl"
    return 1
  fi
}

# Start dockerd and both registries, and export the variables that the tests read.
# On failure, stop whatever already started and return 1.
services_start() {
  local dir ports open_port auth_port
  if [[ -n "${PPA_TEST_SERVICES_DIR:-}" && -e "$PPA_TEST_SERVICES_DIR/$_SERVICES_MARKER" ]]; then
    _services_log "already started in $PPA_TEST_SERVICES_DIR; run services_stop first"
    return 1
  fi
  _services_check_prerequisites || return 1

  dir=$(mktemp -d -t ppa-load-services.XXXXXX) || return 1
  touch "$dir/$_SERVICES_MARKER" || return 1
  export PPA_TEST_SERVICES_DIR=$dir
  mkdir "$dir/pids" || return 1
  # Unix socket paths are limited to 107 bytes, and the containerd that dockerd starts
  # puts exec/containerd/containerd.sock.ttrpc below this folder.
  if ((${#dir} > 60)); then
    _services_log "temporary folder path $dir is too long for Unix sockets; set TMPDIR to a shorter folder"
    services_stop
    return 1
  fi
  # docker login writes credentials here instead of into ~/.docker.
  mkdir "$dir/docker-config" || return 1
  export DOCKER_CONFIG=$dir/docker-config
  _services_log "starting in $dir"

  ports=$(_services_free_ports 2) || {
    _services_log "failed to find free ports on 127.0.0.1"
    services_stop
    return 1
  }
  read -r open_port auth_port <<<"$ports"

  if ! _services_start_dockerd ||
    ! _services_start_open_registry "$open_port" ||
    ! _services_start_auth_registry "$auth_port"; then
    services_stop
    return 1
  fi
}

# Send SIGTERM to the process in PID_FILE and wait for it to exit, then SIGKILL it.
# The process must have DIR in its command line, so a pid that the system reused after
# the service died is left alone.
_services_stop_process() {
  local name=$1 pid_file=$2 dir=$3 pid command_line deadline
  [[ -f "$pid_file" ]] || return 0
  pid=$(cat "$pid_file" 2>/dev/null) || return 0
  rm -f "$pid_file"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  _services_is_running "$pid" || return 0
  command_line=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
  if [[ "$command_line" != *"$dir/"* ]]; then
    _services_log "pid $pid from $pid_file is no longer $name; leaving it alone"
    return 0
  fi

  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + SERVICES_STOP_TIMEOUT))
  while _services_is_running "$pid" && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if _services_is_running "$pid"; then
    _services_log "$name (pid $pid) still running after ${SERVICES_STOP_TIMEOUT} s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  if _services_is_running "$pid"; then
    _services_log "$name (pid $pid) did not exit after SIGKILL"
  else
    _services_log "$name stopped (pid $pid)"
  fi
}

# Print the mount points at or below DIR, deepest first.
_services_mounts_under() {
  awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r
}

_services_unmount_all() {
  local dir=$1 mount_point
  while read -r mount_point; do
    [[ -n "$mount_point" ]] || continue
    _services_log "unmounting $mount_point"
    umount "$mount_point" 2>/dev/null || umount -l "$mount_point" 2>/dev/null ||
      _services_log "failed to unmount $mount_point"
  done < <(_services_mounts_under "$dir")
}

# Stop every service that services_start started and delete its folder.
# Without a started set of services this does nothing, so it is safe to call twice.
services_stop() {
  local dir=${PPA_TEST_SERVICES_DIR:-}
  local name
  if [[ -z "$dir" || ! -e "$dir/$_SERVICES_MARKER" ]]; then
    return 0
  fi

  for name in registry-auth registry-open dockerd; do
    _services_stop_process "$name" "$dir/pids/$name" "$dir"
  done
  _services_unmount_all "$dir"

  if [[ -n "$(_services_mounts_under "$dir")" ]]; then
    _services_log "kept $dir because something is still mounted below it"
  else
    # --one-file-system keeps rm out of any mount that appeared after the check.
    rm -rf --one-file-system "$dir" || _services_log "failed to delete $dir"
  fi

  if [[ "${DOCKER_HOST:-}" == "unix://$dir/docker.sock" ]]; then
    unset DOCKER_HOST
  fi
  if [[ "${DOCKER_CONFIG:-}" == "$dir/docker-config" ]]; then
    unset DOCKER_CONFIG
  fi
  unset PPA_TEST_REGISTRY PPA_TEST_AUTH_REGISTRY PPA_TEST_AUTH_USER PPA_TEST_AUTH_PASSWORD \
    PPA_TEST_SERVICES_DIR
  _services_log "stopped"
  return 0
}

# Run as a script: start prints export lines for eval, stop uses PPA_TEST_SERVICES_DIR.
_services_main() {
  case "${1:-}" in
    start)
      services_start || return 1
      local name
      for name in DOCKER_HOST DOCKER_CONFIG PPA_TEST_SERVICES_DIR PPA_TEST_REGISTRY \
        PPA_TEST_AUTH_REGISTRY PPA_TEST_AUTH_USER PPA_TEST_AUTH_PASSWORD; do
        printf 'export %s=%q\n' "$name" "${!name}"
      done
      ;;
    stop)
      services_stop
      ;;
    *)
      echo "usage: bash ${BASH_SOURCE[0]} start|stop" >&2
      return 2
      ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  _services_main "$@"
  exit
fi

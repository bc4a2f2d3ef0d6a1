# shellcheck shell=bash disable=SC2154  # ${dir} and say() are the sourcing script's
# Background processes of the local clusters (hack/local-cluster.sh, hack/real-node.sh):
# each has DIR/NAME.log and DIR/NAME.pid, in the script's ${dir}. Sourced, not run.

# start NAME COMMAND...: run COMMAND in the background, detached from the terminal
start() {
  local name=$1; shift
  nohup "$@" >"${dir}/${name}.log" 2>&1 &
  echo $! >"${dir}/${name}.pid"
}

# running PID: the process exists and has not exited. An exited one that nobody reaped (a
# zombie: on machines whose PID 1 does not reap orphans) answers kill -0, so ps decides.
running() { [[ $(ps -o stat= -p "$1" 2>/dev/null) =~ ^[^Z] ]]; }

alive() { [[ -f "${dir}/$1.pid" ]] && running "$(cat "${dir}/$1.pid")"; }

# stop NAME: SIGTERM, up to 10 s to exit, then SIGKILL
stop() {
  local pidfile="${dir}/$1.pid" pid
  [[ -f "${pidfile}" ]] || return 0
  pid=$(cat "${pidfile}")
  if kill "${pid}" 2>/dev/null; then
    for _ in $(seq 100); do running "${pid}" || break; sleep 0.1; done
    kill -9 "${pid}" 2>/dev/null || true
    say "stopped $1"
  fi
  rm -f "${pidfile}"
}

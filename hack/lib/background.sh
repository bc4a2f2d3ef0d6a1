# shellcheck shell=bash disable=SC2154  # ${dir} and say() are the sourcing script's
# Background processes of the local clusters (hack/local-cluster.sh, hack/real-node.sh):
# each has DIR/NAME.log and DIR/NAME.pid, in the script's ${dir}. Sourced, not run.

# start NAME COMMAND...: run COMMAND in the background, detached from the terminal
start() {
  local name=$1; shift
  nohup "$@" >"${dir}/${name}.log" 2>&1 &
  echo $! >"${dir}/${name}.pid"
}

alive() { [[ -f "${dir}/$1.pid" ]] && kill -0 "$(cat "${dir}/$1.pid")" 2>/dev/null; }

# stop NAME: SIGTERM, up to 10 s to exit, then SIGKILL
stop() {
  local pidfile="${dir}/$1.pid" pid
  [[ -f "${pidfile}" ]] || return 0
  pid=$(cat "${pidfile}")
  if kill "${pid}" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${pid}" 2>/dev/null || true
    say "stopped $1"
  fi
  rm -f "${pidfile}"
}

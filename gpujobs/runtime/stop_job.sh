# Stop every process of one gpujobs job on this node: TERM first (the workload saves a
# checkpoint), KILL after the grace. Sourced by `sh -c` with the job's folder as $1 and the grace
# in tenths of a second as $2; it exits only on failure (5), so a caller may append more.
#
# The launch script's pid is not enough: it exits with the workload, while a child the workload
# put in the background (`sleep 60 & echo x`) lives on. So processes are found by what cannot go
# stale: the job's checkpoint folder in their environment (GPUJOBS_CKPT_DIR, inherited by every
# child, in or out of the job's process group), plus the job's process group while its leader
# still works in the job's folder (a recycled pid is never trusted).
job_folder=$1
grace_tenths=$2
marker="GPUJOBS_CKPT_DIR=$job_folder/ckpt"

job_processes() {
  if [ -d /proc/self ]; then
    # One grep over every process's environment (NUL-separated lines, matched whole).
    grep -lzxF -- "$marker" /proc/[0-9]*/environ 2>/dev/null | sed -n 's#^/proc/\([0-9]*\)/environ$#\1#p'
  fi
}

leader=$(cat "$job_folder/pid" 2>/dev/null || cat "$job_folder/.started/pid" 2>/dev/null)
case $leader in '' | *[!0-9]*) leader= ;; esac
if [ -n "$leader" ] && [ -d /proc/self ] && [ "$(readlink "/proc/$leader/cwd" 2>/dev/null)" != "$job_folder" ]; then
  leader=
fi

signal_all() {
  # $1: the signal. The group first (members that cleared their environment), then each process.
  [ -n "$leader" ] && kill "-$1" "-$leader" 2>/dev/null
  for p in $(job_processes); do kill "-$1" "$p" 2>/dev/null; done
}

group_alive() {
  # A member of the group that is not a zombie (a zombie is gone, waiting for its parent to
  # reap it). Without procfs, kill -0 is all there is.
  [ -n "$leader" ] || return 1
  if [ -d /proc/self ]; then
    # One read of every process's stat: after the command name, field 1 is the state and
    # field 3 the process group.
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$leader" \
      '{ sub(/^.*\) /, ""); if ($3 == g && $1 != "Z") found = 1 } END { exit !found }'
  else
    kill -0 "-$leader" 2>/dev/null
  fi
}

any_left() {
  group_alive && return 0
  [ -n "$(job_processes)" ]
}

if any_left; then
  signal_all TERM
  n=0
  while any_left && [ "$n" -lt "$grace_tenths" ]; do sleep 0.1; n=$((n + 1)); done
  if any_left; then
    signal_all KILL
    n=0
    while any_left && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    if any_left; then
      echo "processes of job folder $job_folder survived SIGKILL: $(job_processes | tr '\n' ' ')" >&2
      exit 5
    fi
  fi
fi

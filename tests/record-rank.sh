#!/bin/sh
# Runs one rank of a job with its output and exit status in files, for tests in which the
# launcher cannot forward them (the rank's link to the launcher is cut):
#   record-rank.sh DIR COMMAND...
# writes DIR/rank-R.out, DIR/rank-R.err, DIR/rank-R.pid (the command's pid) and, when it ends,
# DIR/rank-R.status (its exit status; 128+N for signal N). R comes from the launcher's
# variables (Open MPI, torchrun-style RANK, Slurm), as wave-dist reads them.
dir=$1
shift
rank=${OMPI_COMM_WORLD_RANK:-${RANK:-${SLURM_PROCID:-0}}}
"$@" >"$dir/rank-$rank.out" 2>"$dir/rank-$rank.err" &
child=$!
echo "$child" >"$dir/rank-$rank.pid"
# The launcher signals this wrapper; pass it on and keep waiting for the real status.
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
echo "$status" >"$dir/rank-$rank.status.tmp"
mv "$dir/rank-$rank.status.tmp" "$dir/rank-$rank.status"
exit "$status"

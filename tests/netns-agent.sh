#!/bin/sh
# An `ssh` stand-in for Open MPI's rsh launcher (`--mca plm_rsh_agent tests/netns-agent.sh`):
# runs the daemon command in the network namespace of the "host" named by the first argument,
# for multi-host tests on one machine (wave-testkit's NetLab, which sets WAVE_NETNS_HOSTS to
# "ADDRESS=NETNS ADDRESS=NETNS ...").
#   netns-agent.sh HOST COMMAND...
host=$1
shift
for pair in $WAVE_NETNS_HOSTS; do
  if [ "${pair%%=*}" = "$host" ]; then
    # Like ssh, hand the words to a shell: Open MPI quotes them for one.
    exec ip netns exec "${pair#*=}" /bin/sh -c "$*"
  fi
done
echo "netns-agent.sh: unknown host $host (WAVE_NETNS_HOSTS=$WAVE_NETNS_HOSTS)" >&2
exit 255

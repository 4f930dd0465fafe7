#!/bin/sh
# One Redis Cluster node, in the redis-cluster component and in compose's "cluster" profile:
# cluster mode, every write on disk before the reply (AOF, fsync always), never evicting (an
# evicted marker or event is lost data; at maxmemory writes fail visibly instead). The
# password comes from REDIS_PASSWORD through stdin, never on the command line, where `ps`
# would show it; replicas use it to authenticate to their master too. REDIS_PORT, REDIS_DIR
# and REDIS_BIND (default: every interface) let tests run several on one machine.
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD must hold the cluster password}"
exec redis-server - ${REDIS_BIND:+--bind "$REDIS_BIND"} \
    --port "${REDIS_PORT:-6379}" \
    --dir "${REDIS_DIR:-/data}" \
    --cluster-enabled yes \
    --cluster-config-file nodes.conf \
    --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT_MS:-5000}" \
    --appendonly yes \
    --appendfsync always \
    --maxmemory "${REDIS_MAXMEMORY:-768mb}" \
    --maxmemory-policy noeviction <<CONF
requirepass "$REDIS_PASSWORD"
masterauth "$REDIS_PASSWORD"
CONF

#!/bin/sh
# Makes the nodes of CLUSTER_NODES one Redis Cluster, and is safe to run again at any time:
# the redis-cluster component's Job and compose's redis-cluster-init run it on every start.
#
#   CLUSTER_NODES="redis-node-0 ... redis-node-5" REDIS_PASSWORD=... sh cluster-init.sh
#
# CLUSTER_NODES lists host names (or addresses), each with an optional :port (default
# CLUSTER_PORT, 6379). It waits until every node answers PING, then:
# - every node empty (it knows only itself, no slots): creates the cluster with
#   `redis-cli --cluster create`, CLUSTER_REPLICAS (default 1) replicas per master, so six
#   nodes make three masters and three replicas;
# - a cluster exists (a node sees all 16384 slots assigned): introduces every member again at
#   its current address (CLUSTER MEET, a no-op for a node already connected). That reunites
#   nodes which all restarted with new addresses, as pods do; a single restarted node
#   announces its new address by itself;
# - anything else (slots partly assigned: a create cut short), or an empty node beside an
#   existing cluster (a node that lost its volume): it says what a person must do, and fails.
# Then it waits for cluster_state:ok on every node and for every replica to be seen.
set -eu
: "${CLUSTER_NODES:?CLUSTER_NODES must list the node host names}"
: "${REDIS_PASSWORD:?REDIS_PASSWORD must hold the cluster password}"
PORT="${CLUSTER_PORT:-6379}"
REPLICAS="${CLUSTER_REPLICAS:-1}"
TIMEOUT="${CLUSTER_INIT_TIMEOUT_SECONDS:-300}"
export REDISCLI_AUTH="$REDIS_PASSWORD" # redis-cli reads it: no password in argv
DEADLINE=$(($(date +%s) + TIMEOUT))

say() { printf 'cluster-init: %s\n' "$*"; }
cli() { # cli IP:PORT COMMAND...
    node="$1"
    shift
    redis-cli -h "${node%:*}" -p "${node##*:}" "$@" | tr -d '\r'
}
field() { cli "$1" cluster info | sed -n "s/^$2://p"; } # field IP:PORT NAME -> value
in_time() { [ "$(date +%s)" -lt "$DEADLINE" ]; }

# Addresses, not names: CLUSTER MEET and `--cluster create` take IP addresses.
ADDRESSES=""
for entry in $CLUSTER_NODES; do
    case "$entry" in
    *:*) host="${entry%:*}" port="${entry##*:}" ;;
    *) host="$entry" port="$PORT" ;;
    esac
    until ip="$(getent hosts "$host" | awk 'NR == 1 { print $1 }')" && [ -n "$ip" ] &&
        cli "$ip:$port" ping 2>/dev/null | grep -q PONG; do
        in_time || {
            say "$entry does not answer PING after ${TIMEOUT} s"
            exit 1
        }
        sleep 2
    done
    ADDRESSES="$ADDRESSES $ip:$port"
done
ADDRESSES="${ADDRESSES# }"
say "every node answers: $ADDRESSES"

MEMBER=""
EMPTY=""
for node in $ADDRESSES; do
    slots="$(field "$node" cluster_slots_assigned)"
    known="$(field "$node" cluster_known_nodes)"
    [ "$slots" = 16384 ] && MEMBER="$node"
    [ "$slots" = 0 ] && [ "$known" = 1 ] && EMPTY="${EMPTY:+$EMPTY }$node"
done

if [ "$EMPTY" = "$ADDRESSES" ]; then
    say "no cluster yet: creating it with $REPLICAS replica(s) per master"
    # $ADDRESSES unquoted: one argument per address.
    redis-cli --cluster create $ADDRESSES --cluster-replicas "$REPLICAS" --cluster-yes
elif [ -n "$MEMBER" ]; then
    say "the cluster exists: introducing every member at its current address"
    for node in $ADDRESSES; do
        case " $EMPTY " in *" $node "*) continue ;; esac
        cli "$MEMBER" cluster meet "${node%:*}" "${node##*:}" >/dev/null
    done
    if [ -n "$EMPTY" ]; then
        say "empty node(s) beside the cluster: $EMPTY (a node that lost its data)."
        say "Add each as a replica: redis-cli --cluster add-node IP:PORT $MEMBER" \
            "--cluster-slave; then CLUSTER FORGET the failed node's id on every node" \
            "(redis-cli --cluster check $MEMBER lists it)."
        exit 1
    fi
else
    say "slots are partly assigned and no node sees them all: not touching it."
    say "Inspect with: redis-cli --cluster check IP:PORT; repair with --cluster fix."
    exit 1
fi

# Done when, twice in a row a second apart, every node says ok and the first one sees every
# node connected, replicas included: after a create or a MEET gossip takes a moment to
# spread, and after a MEET a node that said ok may still mark a peer failed at its old
# address (cluster_state back to fail) until the new one has reached everyone.
COUNT=$(echo "$ADDRESSES" | wc -w)
WANTED_REPLICAS=$((COUNT - COUNT / (REPLICAS + 1)))
FIRST="${ADDRESSES%% *}"
view() { # "<connected nodes> <replicas>" as FIRST sees them; a failed node is not counted
    cli "$FIRST" cluster nodes | awk '$8 == "connected" && $3 !~ /fail/ { n++; if ($3 ~ /slave/) r++ }
        END { printf "%d %d", n, r }'
}
states() { # "IP:PORT=state ..." for every node
    for node in $ADDRESSES; do printf '%s=%s ' "$node" "$(field "$node" cluster_state)"; done
}
settled() { # every node ok, and FIRST sees every node connected
    for node in $ADDRESSES; do
        [ "$(field "$node" cluster_state)" = ok ] || return 1
    done
    [ "$(view)" = "$COUNT $WANTED_REPLICAS" ]
}
passes=0
until [ "$passes" -ge 2 ]; do
    if settled; then passes=$((passes + 1)); else passes=0; fi
    [ "$passes" -ge 2 ] && continue
    in_time || {
        say "after ${TIMEOUT} s, cluster_state: $(states);" \
            "$FIRST sees (connected nodes, replicas) $(view), wants $COUNT $WANTED_REPLICAS"
        exit 1
    }
    sleep 1
done
say "cluster_state:ok on every node; $((COUNT - WANTED_REPLICAS)) masters, $WANTED_REPLICAS replicas"

#!/usr/bin/env bash
# Create the `admlops` Docker bridge network idempotently and say what was done.
#
#   scripts/setup_network.sh            # admlops, 172.28.0.0/16, gateway 172.28.0.1
#   ADMLOPS_NETWORK=... ADMLOPS_SUBNET=... ADMLOPS_GATEWAY=... scripts/setup_network.sh
#
# The host owns the gateway address on the bridge (br-admlops), so a roscore on the host is
# reachable from every container on the network at http://172.28.0.1:11311.
# Exit codes: 0 created or already there with the same config; 1 exists with another config;
# 2 no Docker engine reachable / docker client missing; 3 docker refused to create it.
set -euo pipefail

NET="${ADMLOPS_NETWORK:-admlops}"
SUBNET="${ADMLOPS_SUBNET:-172.28.0.0/16}"
GATEWAY="${ADMLOPS_GATEWAY:-172.28.0.1}"
BRIDGE_NAME="${ADMLOPS_BRIDGE_NAME:-br-admlops}"
DOCKER="${DOCKER:-docker}"

say() { echo "[setup_network] $*"; }
err() { echo "[setup_network] ERROR: $*" >&2; }

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  err "the docker client '$DOCKER' is not installed (https://docs.docker.com/engine/install/)"
  exit 2
fi
if ! info_err=$("$DOCKER" info --format '{{.ServerVersion}}' 2>&1 >/dev/null); then
  err "no Docker engine reachable (DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}): ${info_err}"
  err "fix: start it (sudo systemctl start docker) and make sure you may use it"
  err "     (sudo usermod -aG docker \$USER, then log in again), or set DOCKER_HOST"
  exit 2
fi

if current=$("$DOCKER" network inspect "$NET" \
      --format '{{.Driver}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{end}}' 2>/dev/null); then
  read -r driver cur_subnet cur_gateway _rest <<<"$current"
  if [ "$driver" = "bridge" ] && [ "${cur_subnet:-}" = "$SUBNET" ] && [ "${cur_gateway:-}" = "$GATEWAY" ]; then
    say "network '$NET' exists with the same config (bridge, subnet $SUBNET, gateway $GATEWAY): nothing to do"
    exit 0
  fi
  err "network '$NET' exists with a DIFFERENT config: driver ${driver:-?}, subnet ${cur_subnet:-none}, gateway ${cur_gateway:-none}"
  err "wanted: driver bridge, subnet $SUBNET, gateway $GATEWAY"
  err "fix: disconnect its containers and remove it, then run this again:"
  err "       $DOCKER network inspect $NET --format '{{range .Containers}}{{.Name}} {{end}}'"
  err "       $DOCKER network rm $NET && $0"
  err "  or keep it and point everything at it: ADMLOPS_SUBNET=${cur_subnet:-?} ADMLOPS_GATEWAY=${cur_gateway:-?}"
  err "       and ROS_MASTER_URI=http://${cur_gateway:-?}:11311 (docker/.env: ADMLOPS_MASTER_IP)"
  exit 1
fi

if ! out=$("$DOCKER" network create --driver bridge --subnet "$SUBNET" --gateway "$GATEWAY" \
      --opt "com.docker.network.bridge.name=$BRIDGE_NAME" "$NET" 2>&1); then
  err "docker network create failed: $out"
  case "$out" in
    *overlap*) err "fix: another network or interface already uses $SUBNET (docker network ls;" \
                   "ip -br addr); remove it or choose ADMLOPS_SUBNET/ADMLOPS_GATEWAY elsewhere" ;;
  esac
  exit 3
fi
say "created network '$NET' (bridge $BRIDGE_NAME, subnet $SUBNET, gateway $GATEWAY, id ${out:0:12})"
say "the host is $GATEWAY on it: run roscore on the host with 'source scripts/ros_env.sh --no-check'"

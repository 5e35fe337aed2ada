#!/usr/bin/env bash
# The local lab: one Redis host and two worker hosts as systemd containers on
# a private podman network, deployed with the playbook users run, then real
# tasks sent from this machine through the cluster.
#   scripts/lab.sh up     create or reuse the hosts, deploy, run tasks
#   scripts/lab.sh down   remove the hosts and the network
set -euo pipefail
cd "$(dirname "$0")/.."

network=bundle-lab
hosts=(lab-redis1 lab-worker1 lab-worker2)
# Redis's port on the controller's loopback, for the smoke tasks below.
redis_port_on_controller=16379
image=$(cat .venv/base-image)

up() {
  podman network exists "$network" || podman network create "$network" >/dev/null
  for h in "${hosts[@]}"; do
    # Reuse a running host only if it runs the current base image.
    if [[ $(podman inspect -f '{{.State.Running}} {{.ImageName}}' "$h" 2>/dev/null) == "true $image" ]]; then
      continue
    fi
    podman rm -f "$h" >/dev/null 2>&1 || true
    publish=()
    [[ $h == lab-redis1 ]] && publish=(-p "127.0.0.1:${redis_port_on_controller}:6379")
    podman run -d --name "$h" --hostname "$h" --network "$network" --systemd=always \
      "${publish[@]}" "$image" /sbin/init >/dev/null
  done
  for h in "${hosts[@]}"; do
    for _ in $(seq 60); do
      state=$(podman exec "$h" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && break
      sleep 1
    done
  done

  .venv/bin/ansible-playbook deploy.yml -i inventories/lab

  mkdir -p .lab
  password=$(.venv/bin/python -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["vault_redis_password"])' \
    inventories/lab/group_vars/all/vault.yml)
  umask 077
  printf '[redis]\nhost = "127.0.0.1"\nport = %s\npassword = "%s"\n' \
    "$redis_port_on_controller" "$password" >.lab/controller.toml
  echo
  echo "Sending tasks from this machine through the lab cluster:"
  TASKAPP_CONFIG=.lab/controller.toml .venv/bin/python -m taskapp smoke --count 10
}

down() {
  podman rm -f "${hosts[@]}" >/dev/null 2>&1 || true
  podman network rm -f "$network" >/dev/null 2>&1 || true
  rm -rf .lab
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

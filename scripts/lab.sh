#!/usr/bin/env bash
# The local lab: systemd containers on a private podman network, one per host
# of the inventory, deployed with the playbook users run, then real tasks sent
# from this machine through the cluster.
#   scripts/lab.sh up     create or reuse the hosts, deploy, run tasks
#   scripts/lab.sh down   remove the hosts and the network
# Other labs (chaos, bench) run beside it with their own names:
#   LAB_NAME        network bundle-NAME and state dir .lab/NAME (default: lab)
#   LAB_INVENTORY   inventory whose hosts become containers (default: inventories/lab)
#   LAB_REDIS_PORT  loopback port published to the first redis host's 6379 (default: 16379)
#   LAB_SMOKE       0 skips the smoke tasks after the deploy
#   LAB_DEPLOY      0 only creates the blank hosts (bench/deploy_speed.py times the deploy)
set -euo pipefail
cd "$(dirname "$0")/.."

name=${LAB_NAME:-lab}
inventory=${LAB_INVENTORY:-inventories/lab}
redis_port_on_controller=${LAB_REDIS_PORT:-16379}
network=bundle-$name
state=.lab/$name
image=$(cat .venv/base-image)

inventory_hosts() {
  .venv/bin/ansible-inventory -i "$inventory" --list 2>/dev/null |
    .venv/bin/python -c 'import json,sys; d=json.load(sys.stdin); g=sys.argv[1]
hosts=[h for grp in d if grp!="_meta" for h in d[grp].get("hosts",[])] if g=="all" else d.get(g,{}).get("hosts",[])
print("\n".join(dict.fromkeys(hosts)))' "$1"
}

up() {
  mapfile -t hosts < <(inventory_hosts all)
  redis_host=$(inventory_hosts redis | head -n1)
  podman network exists "$network" || podman network create "$network" >/dev/null
  for h in "${hosts[@]}"; do
    # Reuse a running host only if it runs the current base image.
    if [[ $(podman inspect -f '{{.State.Running}} {{.ImageName}}' "$h" 2>/dev/null) == "true $image" ]]; then
      continue
    fi
    podman rm -f "$h" >/dev/null 2>&1 || true
    publish=()
    [[ $h == "$redis_host" ]] && publish=(-p "127.0.0.1:${redis_port_on_controller}:6379")
    podman run -d --name "$h" --hostname "$h" --network "$network" --systemd=always \
      "${publish[@]}" "$image" /sbin/init >/dev/null
  done
  for h in "${hosts[@]}"; do
    for _ in $(seq 60); do
      state_of_host=$(podman exec "$h" systemctl is-system-running 2>/dev/null || true)
      [[ $state_of_host == running || $state_of_host == degraded ]] && break
      sleep 1
    done
  done

  [[ ${LAB_DEPLOY:-1} == 0 ]] && return
  .venv/bin/ansible-playbook deploy.yml -i "$inventory"

  mkdir -p "$state"
  password=$(.venv/bin/python -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["vault_redis_password"])' \
    "$inventory/group_vars/all/vault.yml")
  umask 077
  printf '[redis]\nhost = "127.0.0.1"\nport = %s\npassword = "%s"\n' \
    "$redis_port_on_controller" "$password" >"$state/controller.toml"
  [[ ${LAB_SMOKE:-1} == 0 ]] && return
  echo
  echo "Sending tasks from this machine through the $name cluster:"
  RCBUNDLE_CONFIG=$state/controller.toml .venv/bin/python -m taskapp smoke --count 10
}

down() {
  mapfile -t hosts < <(inventory_hosts all)
  podman rm -f "${hosts[@]}" >/dev/null 2>&1 || true
  podman network rm -f "$network" >/dev/null 2>&1 || true
  rm -rf "$state"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

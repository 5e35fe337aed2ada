#!/usr/bin/env bash
# Installs everything the lab and the tests need on a fresh Debian 12 machine,
# and nothing twice: system packages only when missing, the tool virtualenv
# only when its lock changed, the base image only when its recipe changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# netavark and aardvark-dns are only Recommends of podman: without them podman falls back to
# CNI, whose containers cannot resolve each other by name. netavark 1.4 sets up each network's
# NAT with iptables, which it does not depend on ("netavark: No such file or directory").
packages=(podman netavark aardvark-dns iptables runc debootstrap redis-server redis-tools openssl sslscan python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The app's integration tests start their own redis-server on loopback.
  service redis-server stop >/dev/null 2>&1 || true
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements/controller.txt runtime/pyproject.toml app/pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: creating .venv from requirements/controller.txt"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip==26.3
  .venv/bin/pip install -q -r requirements/controller.txt
  .venv/bin/pip install -q --no-deps -e runtime -e app
  echo "$want" >"$stamp"
fi

# ansible.cfg names mitogen's strategy by this link, whatever the Python version.
# Relative to .venv, so that the link survives the checkout being moved.
ln -sfn "$(.venv/bin/python -c 'import ansible_mitogen as m, os, sys
print(os.path.relpath(os.path.dirname(m.__file__), sys.prefix))')/plugins/strategy" .venv/mitogen-strategy

scripts/build-base-image.sh >.venv/base-image
echo "bootstrap: base image $(cat .venv/base-image)"

#!/usr/bin/env bash
# Installs the Debian packages the operator and its test bed need, once.
# Idempotent: does nothing when every package is already present.
set -euo pipefail

packages=(redis-server etcd-server docker-registry git gnupg rsync golang-go openssl make
          golang-github-modern-go-reflect2-dev chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# kubectl: the image may ship one (with kustomize built in); Debian 13's kubernetes-client is
# the fallback. Debian 12's kubernetes-client (1.20) conflicts with the shipped one, so only
# install it where no kubectl exists at all.
if ! command -v kubectl >/dev/null 2>&1; then
  missing+=(kubernetes-client)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run this script as root, or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's packages start their daemons; the project runs its own private instances.
for svc in etcd docker-registry; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

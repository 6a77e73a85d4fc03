#!/usr/bin/env bash
# Builds kube-apiserver from Debian's bookworm `kubernetes` source package (its orig tarball
# ships vendor/, so the build needs no module downloads) and caches the binary outside the
# repo, keyed by version. Prints the binary's path. Debian 13 only packages a repacked source
# without vendor/, so on every release we fetch the bookworm source (see TESTBED notes).
set -euo pipefail

cache="${GITOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gitops-pipeline}"
# Bump when the recipe changes, so machines holding an older build rebuild.
recipe=2
mkdir -p "$cache"
find_existing() {
  existing=$(ls -1 "$cache"/kube-apiserver-*-r"$recipe" 2>/dev/null | head -n1 || true)
  if [ -n "$existing" ] && [ -x "$existing" ]; then
    echo "$existing"
    exit 0
  fi
}
find_existing
# One build at a time (parallel test runs and `make install` may all ask at once): the others
# wait here, then find the binary.
exec 9>"$cache/.build.lock"
flock 9
find_existing

src_list=/etc/apt/sources.list.d/gitops-pipeline-src.sources
if [ ! -f "$src_list" ]; then
  # Derive a deb-src entry from the machine's own Debian source list (same URIs and keyring),
  # for suite bookworm, whatever release this machine runs.
  base=/etc/apt/sources.list.d/debian.sources
  uri=$(awk '/^URIs:/ {print $2; exit}' "$base")
  keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$base")
  cat >"$src_list" <<SRC
Types: deb-src
URIs: $uri
Suites: bookworm
Components: main
Signed-By: $keyring
SRC
  apt-get update -qq
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source --download-only -qq kubernetes/bookworm >/dev/null 2>&1 || apt-get source --download-only -qq kubernetes >/dev/null
orig=$(ls -1 kubernetes_*.orig.tar.* | head -n1)
version=$(echo "$orig" | sed -E 's/^kubernetes_(.*)\.orig\.tar\..*$/\1/')
mkdir src
tar -xf "$orig" -C src --strip-components=1
cd src
# Kubernetes 1.20 vendors reflect2 1.0.1, which crashes the API server (SIGSEGV in map
# iteration) on Go >= 1.18 as soon as it serves a custom resource. 1.0.2 is the upstream fix,
# API-compatible; Debian packages its source.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
mkdir -p .go/src/k8s.io
ln -s ../../.. .go/src/k8s.io/kubernetes
cd .go/src/k8s.io/kubernetes
export GOPATH="$work/src/.go" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=vendor
export GOCACHE="$work/gocache"
make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
out="$cache/kube-apiserver-$version-r$recipe"
cp _output/bin/kube-apiserver "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"

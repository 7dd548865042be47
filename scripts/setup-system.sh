#!/usr/bin/env bash
# Installs the Debian packages the tests need, when missing: a C compiler (the C ABI example),
# Graphviz `dot` (the layout of `tessera show` pages) and Chromium (the headless-browser test
# of those pages). A no-op when all are present.
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v dot >/dev/null || need+=(graphviz)
command -v chromium >/dev/null || need+=(chromium)
if ((${#need[@]})); then
    sudo=()
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
    echo "setup-system: installing ${need[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Installs the Debian packages the tests need, when missing: a C compiler (the C ABI example),
# Graphviz `dot` (the layout of `tessera show` pages), Chromium (the headless-browser test
# of those pages), LLVM 22 (the `llvm` cargo feature: the llvm-x86_64 target links
# libLLVM-22.so) and, for the static libraries of the cross targets (llvm-aarch64,
# llvm-riscv64), Debian's cross C compilers and qemu-user to run what they build. A no-op
# when all are present.
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v dot >/dev/null || need+=(graphviz)
command -v chromium >/dev/null || need+=(chromium)
# llvm-sys links libLLVM-22.so and reads llvm-config; the -dev packages bring both.
# libclang-22-dev is not needed: llvm-sys links libLLVM only, and it would add ~370 MB.
[ -x /usr/lib/llvm-22/bin/llvm-config ] || need+=(llvm-22-dev libpolly-22-dev)
# `--emit static-lib` for llvm-aarch64 / llvm-riscv64: the C driver is cross-compiled
# (statically, so qemu-user needs no sysroot) and run under qemu-aarch64 / qemu-riscv64.
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v riscv64-linux-gnu-gcc >/dev/null || need+=(gcc-riscv64-linux-gnu libc6-dev-riscv64-cross)
command -v qemu-aarch64 >/dev/null && command -v qemu-riscv64 >/dev/null || need+=(qemu-user)
for dev in zlib1g-dev libzstd-dev libffi-dev libxml2-dev; do
    dpkg-query -W -f='${Status}' "$dev" 2>/dev/null | grep -q "install ok installed" || need+=("$dev")
done
if ((${#need[@]})); then
    sudo=()
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
    echo "setup-system: installing ${need[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

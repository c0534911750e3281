#!/usr/bin/env bash
# Compile the C++ core's kernel units for AArch64 (NEON) on an x86 machine, to check that the ARM build still
# compiles. It uses zig's bundled clang as a cross compiler (pip install ziglang); it compiles, it does not run.
# The nanobind module (csrc/module.cpp) is left out: it needs the target's Python headers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in csrc/kernels/isa_neon.cpp csrc/kernels/isa_scalar.cpp csrc/registry.cpp csrc/cpu_features.cpp; do
  python -m ziglang c++ -target aarch64-linux-gnu -std=c++17 -O2 -Wall -Wextra -Wno-unused-parameter \
    -DSPARSA_HAVE_NEON -Icsrc -c "$src" -o "$out/$(basename "$src").o"
  echo "ok  $src"
done

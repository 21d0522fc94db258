#!/usr/bin/env bash
# Installs what a fresh machine lacks to build keyquorum: libclang (RocksDB's bindgen), a
# C++ compiler, and libfaketime for the Jepsen harness. Idempotent; needs root (or sudo) only
# when something is missing.
set -euo pipefail
need=()
# bindgen needs libclang itself (libclang.so or libclang-N.so), not libclang-cpp, which some
# images ship alone.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* \
  >/dev/null 2>&1 || need+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# The Jepsen harness's clock nemesis runs nodes under libfaketime.
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(faketime)
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

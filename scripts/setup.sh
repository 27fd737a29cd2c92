#!/usr/bin/env bash
# Installs the system packages BackdoorLab builds against (Debian 12). Idempotent.
set -euo pipefail
# slurm-wlm and munge: the one-node cluster of the Slurm tests (scripts/slurm/start-local-cluster.sh).
packages=(libdnnl-dev libpng-dev zlib1g-dev slurm-wlm munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

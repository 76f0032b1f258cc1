#!/bin/sh
# Make OpenBLAS available to the training worker where the platform allows.
# mlx's Linux CPU wheel bundles a slow reference BLAS; the worker preloads
# OpenBLAS (see trainer/blas.py). Everything still works without it, slower.
set -u
case "$(uname -s)" in
  Linux) ;;
  *) echo "openblas: not needed on $(uname -s) (mlx uses Accelerate/Metal)"; exit 0 ;;
esac
if ldconfig -p 2>/dev/null | grep -q 'libopenblas.*\.so\.0'; then
  echo "openblas: present"; exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "openblas: not found; install your distribution's OpenBLAS (pthread build) for ~40x faster CPU training"; exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "openblas: not found; run 'sudo apt-get install libopenblas0-pthread' for ~40x faster CPU training"; exit 0
fi
echo "openblas: installing libopenblas0-pthread"
$SUDO apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1; } \
  || echo "openblas: install failed; training works without it, slower"
exit 0

#!/bin/sh
# System packages the scale-out tests use: PostgreSQL (the shared store; the
# tests start a throwaway server with initdb/pg_ctl) and openssh-server (sshd
# in the second network namespace of the two-host test). Installed with apt
# where this is Debian/Ubuntu and we may; otherwise those tests skip, saying why.
set -u
missing=""
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || missing="$missing postgresql"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
[ -z "$missing" ] && { echo "scale packages: present"; exit 0; }
if ! command -v apt-get >/dev/null 2>&1; then
  echo "scale packages: missing$missing; install them for the PostgreSQL and two-host tests"; exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "scale packages: missing$missing; run 'sudo apt-get install$missing'"; exit 0
fi
echo "scale packages: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$SUDO apt-get install -y -q $missing >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q $missing >/dev/null 2>&1; } \
  || echo "scale packages: install failed; the PostgreSQL and two-host tests will skip"
exit 0

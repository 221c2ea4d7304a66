#!/bin/sh
# Install the Debian packages the real-Slurm test bed needs, only if missing.
# Idempotent: a machine that has them all does nothing (no apt-get update).
# Service auto-start is blocked during the install (policy-rc.d returning 101):
# the test bed runs its own munged/slurmctld/slurmd out of a private directory.
set -eu

PACKAGES="slurmctld slurmd slurm-client munge libslurm-dev gcc make sudo"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: missing packages:$missing (run as root)" >&2
    exit 1
fi

echo "install-system-deps: installing$missing"
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT INT TERM

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing

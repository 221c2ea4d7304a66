#!/usr/bin/env bash
# The Slurm 24.11 test bed: a Debian 13 (trixie) chroot beside the Debian 12 host.
#
#   tests/testbed/slurm24.sh build        debootstrap the chroot once (reused: a stamp file)
#   tests/testbed/slurm24.sh test [ARGS]  build, mount, run the real-Slurm tests inside, unmount
#   tests/testbed/slurm24.sh run CMD...   the same set-up, then CMD instead of pytest (debugging)
#
# The chroot lives in $TRIXIE_ROOT (default .testbed/trixie). The repository is bind-mounted at
# its own absolute path inside, so every path the tests print is the same on both sides; the
# chroot gets its own venv (.venv-trixie, python 3.13), SPANK build (spank/slurm24/fsx_stage.so)
# and test bed directory (.testbed/slurm24), so the host's 22.05 cluster is never touched.
# /proc, /sys, /dev and the repository are mounted only while `test` runs and always
# unmounted (trap), also on failure. Nothing on the host outside the repository is written.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${TRIXIE_ROOT:-$repo/.testbed/trixie}
mirror=${TRIXIE_MIRROR:-http://deb.debian.org/debian}
stamp=$root/.fsx-stage-chroot
packages=slurmctld,slurmd,slurm-client,munge,libslurm-dev,gcc,libc6-dev,make,python3,python3-venv,ca-certificates,procps,passwd,util-linux,sudo

build() {
  [ -f "$stamp" ] && return 0
  command -v debootstrap >/dev/null || {
    echo "slurm24: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
  }
  local started=$SECONDS
  rm -rf "$root.partial"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include="$packages" trixie "$root.partial" "$mirror" \
    >"$(dirname "$root")/trixie-debootstrap.log" 2>&1 || {
    echo "slurm24: debootstrap failed; see $(dirname "$root")/trixie-debootstrap.log" >&2
    exit 1
  }
  rm -rf "$root"
  mv "$root.partial" "$root"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  chroot "$root" slurmd -V >"$stamp"
  echo "slurm24: chroot built in $((SECONDS - started)) s: $(cat "$stamp")"
}

mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -R "${mounted[i]}" 2>/dev/null || umount -R -l "${mounted[i]}" 2>/dev/null || true
  done
  mounted=()
}

mount_into() { # mount_into TARGET mount-args...
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

run_tests() {
  build
  trap unmount_all EXIT INT TERM
  mount_into "$root/proc" -t proc proc
  mount_into "$root/sys" -t sysfs sysfs
  mount_into "$root/dev" --rbind /dev
  mount --make-rslave "$root/dev"
  mount_into "$root$repo" --bind "$repo"
  # A site CA the host trusts for PyPI (e.g. a TLS-inspecting proxy): the chroot's pip
  # trusts it too. Copied, not mounted; nothing else of the host's /etc goes in.
  local ca_env=()
  local host_ca=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}
  if [ -n "$host_ca" ] && [ -f "$host_ca" ]; then
    cp "$host_ca" "$root/etc/ssl/certs/fsx-stage-host-ca.crt"
    ca_env=(PIP_CERT=/etc/ssl/certs/fsx-stage-host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/fsx-stage-host-ca.crt)
  fi
  local args=("$@")
  [ ${#args[@]} -gt 0 ] || args=(-m slurm tests/)
  chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "${ca_env[@]}" \
    TESTBED="$repo/.testbed/slurm24" FSX_STAGE_SPANK_SO="$repo/spank/slurm24/fsx_stage.so" \
    FSX_STAGE_SLURM24_RUN="${FSX_STAGE_SLURM24_RUN:-}" \
    /bin/bash -c 'set -e; cd "$1"; shift
      make -s venv VENV="$PWD/.venv-trixie" PYTHON=/usr/bin/python3
      mkdir -p "$(dirname "$FSX_STAGE_SPANK_SO")"
      make -s spank SPANK_SO="$FSX_STAGE_SPANK_SO"
      echo "slurm24: $(slurmd -V), $(/usr/bin/python3 -V)"
      if [ -n "${FSX_STAGE_SLURM24_RUN:-}" ]; then exec "$@"; fi
      exec "$PWD/.venv-trixie/bin/python" -m pytest -p no:cacheprovider "$@"' \
    fsx-stage-slurm24 "$repo" "${args[@]}"
}

case "${1:-test}" in
  build) build ;;
  test) shift || true; run_tests "$@" ;;
  run) shift; FSX_STAGE_SLURM24_RUN=1 run_tests "$@" ;;
  *) echo "usage: $0 build | test [PYTEST ARGS] | run CMD..." >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Installs Debian packages for the project's own tools, as root: the one place that runs apt-get.
#
#   scripts/apt-install.sh PACKAGE...
#
# Callers: the deployment checks (docker-compose), the browser tests (chromium,
# chromium-driver), the rule checks (prometheus, for promtool), `make bench` (wrk) and the tool
# virtualenvs (python3-venv, when there is no uv).
#
# `make test` runs the deployment checks on one pytest-xdist worker while the other reaches the
# browser and rule tests, so on a fresh machine two installs can start at once, and apt-get fails
# at once on a lock another apt-get holds. So every install here
#   - holds the project's own lock (flock on APT_LOCK) for its whole update and install, and
#   - waits for the locks of any other apt user (DPkg::Lock::Timeout) instead of failing;
# both waits end after APT_WAIT_SECONDS (default 900).
# `apt-get update` runs only when apt knows no candidate for a package, and once more before a
# single retry when the install fails (stale lists: a 404 on a superseded version).
# Packages are installed without recommends and without starting their services: when no
# policy-rc.d exists, a temporary one (exit 101, the documented "do not start services" answer)
# is in place during the install. Messages go to stderr; exits 2 when not root.
set -euo pipefail

APT_LOCK="${APT_LOCK:-/run/lock/recsys-apt-install.lock}"
APT_WAIT_SECONDS="${APT_WAIT_SECONDS:-900}"
POLICY_RC_D="${POLICY_RC_D:-/usr/sbin/policy-rc.d}"

say() { printf 'apt-install: %s\n' "$*" >&2; }

if [[ $# -eq 0 ]]; then
    say "usage: $0 PACKAGE..."
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    say "FAIL: installing $* needs root: apt-get install -y --no-install-recommends $*"
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive

apt_get() { apt-get -o "DPkg::Lock::Timeout=$APT_WAIT_SECONDS" -qq "$@"; }

has_candidate() { # $1: a package -> true when apt knows a version to install
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

OWN_POLICY=0
drop_policy() { if [[ $OWN_POLICY -eq 1 ]]; then rm -f "$POLICY_RC_D"; fi; }
trap drop_policy EXIT
hold_services() {
    [[ -e "$POLICY_RC_D" ]] && return
    printf '#!/bin/sh\n# %s: install packages without starting them\nexit 101\n' "$0" \
        >"$POLICY_RC_D"
    chmod 755 "$POLICY_RC_D"
    OWN_POLICY=1
}

mkdir -p "$(dirname "$APT_LOCK")"
exec 9>"$APT_LOCK"
if ! flock --wait "$APT_WAIT_SECONDS" 9; then
    say "FAIL: another install held $APT_LOCK for ${APT_WAIT_SECONDS}s"
    exit 1
fi

for package in "$@"; do
    if ! has_candidate "$package"; then
        say "apt-get update (apt knows no $package yet)"
        apt_get update
        break
    fi
done
hold_services
say "apt-get install -y --no-install-recommends $*"
if ! apt_get install -y --no-install-recommends "$@" >/dev/null; then
    say "apt-get install failed; apt-get update and retry"
    apt_get update
    apt_get install -y --no-install-recommends "$@" >/dev/null
fi

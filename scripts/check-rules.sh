#!/usr/bin/env bash
# Checks of the Prometheus configuration, its alert and recording rules and their unit tests.
#
#   scripts/check-rules.sh
#   PROMETHEUS_DIR=/tmp/copy/prometheus scripts/check-rules.sh
#
# Runs, with promtool:
#   promtool check config  PROMETHEUS_DIR/prometheus.yml   (also loads the rule files it names)
#   promtool check rules   PROMETHEUS_DIR/rules/*.y*ml
#   promtool test rules    PROMETHEUS_DIR/tests/*.y*ml
#
# Environment:
#   PROMETHEUS_DIR  the prometheus folder to check (default: deploy/monitoring/prometheus); the
#                   mutation test in tests/monitoring points it at a broken copy
#   PROMTOOL        a promtool to use instead of the one on PATH
#
# Installs promtool when it is missing, once: Debian's `prometheus` package ships
# /usr/bin/promtool (apt-get, as root; `apt-get update` only when apt knows no candidate).
# --no-install-recommends keeps prometheus-node-exporter (a second daemon) out. The package's
# own prometheus.service is enabled by its postinst; when no policy-rc.d exists, a temporary one
# (exit 101, the documented "do not start services" answer) stops it from being started now.
# Exits non-zero, naming the step, on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROM_DIR="$(cd "${PROMETHEUS_DIR:-$ROOT/deploy/monitoring/prometheus}" && pwd)"
FAILED=()

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
fail() { say "FAIL: $*"; FAILED+=("$1"); }

# --- installation ---------------------------------------------------------------------------

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
drop_policy() { if [[ $OWN_POLICY -eq 1 ]]; then rm -f "$POLICY"; fi; }
trap drop_policy EXIT

install_promtool() {
    if [[ $(id -u) -ne 0 ]]; then
        say "FAIL: promtool is missing and installing it needs root:"
        say "      apt-get install -y --no-install-recommends prometheus"
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    local candidate
    candidate="$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        say "apt-get update (apt knows no prometheus package yet)"
        apt-get update -qq
    fi
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\n# scripts/check-rules.sh: install packages without starting them\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        OWN_POLICY=1
    fi
    say "apt-get install -y --no-install-recommends prometheus (for /usr/bin/promtool)"
    if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        # Stale package lists (a 404 on a superseded version): refresh once and retry.
        say "apt-get install failed; apt-get update and retry"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
    drop_policy
    OWN_POLICY=0
}

if [[ -z "${PROMTOOL:-}" ]]; then
    if ! command -v promtool >/dev/null 2>&1; then
        step "installing promtool"
        install_promtool
    fi
    PROMTOOL="$(command -v promtool)"
fi
say "promtool: $("$PROMTOOL" --version 2>&1 | sed -n 1p) ($PROMTOOL)"
say "prometheus dir: $PROM_DIR"

# --- checks ---------------------------------------------------------------------------------

mapfile -t RULES < <(find "$PROM_DIR/rules" -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) 2>/dev/null | sort)
mapfile -t TESTS < <(find "$PROM_DIR/tests" -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) 2>/dev/null | sort)

step "promtool check config prometheus.yml"
if ! (cd "$PROM_DIR" && "$PROMTOOL" check config prometheus.yml); then
    fail config "prometheus.yml"
fi

step "promtool check rules: ${#RULES[@]} file(s)"
if [[ ${#RULES[@]} -eq 0 ]]; then
    fail rules "no rule files in $PROM_DIR/rules"
elif ! "$PROMTOOL" check rules "${RULES[@]}"; then
    fail rules "rule files"
fi

step "promtool test rules: ${#TESTS[@]} file(s)"
if [[ ${#TESTS[@]} -eq 0 ]]; then
    fail test "no rule tests in $PROM_DIR/tests"
else
    for file in "${TESTS[@]}"; do
        # Run from the test's folder: its rule_files are relative to it.
        if ! (cd "$(dirname "$file")" && "$PROMTOOL" test rules "$(basename "$file")"); then
            fail test "$(basename "$file")"
        fi
    done
fi

step "done"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    say "FAILED checks: $(printf '%s\n' "${FAILED[@]}" | sort -u | paste -sd, -)"
    exit 1
fi
say "all rule checks passed (config, ${#RULES[@]} rule file(s), ${#TESTS[@]} test file(s))"

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
# /usr/bin/promtool (scripts/apt-install.sh, as root). Without recommends, so
# prometheus-node-exporter (a second daemon) stays out; the package's own prometheus.service is
# enabled by its postinst but not started (apt-install.sh holds services during the install).
# Exits non-zero, naming the step, on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROM_DIR="$(cd "${PROMETHEUS_DIR:-$ROOT/deploy/monitoring/prometheus}" && pwd)"
FAILED=()

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
fail() { say "FAIL: $*"; FAILED+=("$1"); }

# --- installation ---------------------------------------------------------------------------

if [[ -z "${PROMTOOL:-}" ]]; then
    if ! command -v promtool >/dev/null 2>&1; then
        step "installing promtool"
        "$ROOT/scripts/apt-install.sh" prometheus
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

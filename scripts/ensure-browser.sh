#!/usr/bin/env bash
# Installs what the headless-browser tests (tests/browser) need, once:
#   - Debian's chromium and chromium-driver (apt-get, as root) when /usr/bin/chromium or
#     /usr/bin/chromedriver is missing; `apt-get update` only when apt has no candidate for them;
#   - the Python driver (selenium, pinned in tests/browser/requirements.txt) into BROWSER_VENV
#     (default .venv-browser at the root), with uv when there is one, else python3 -m venv + pip.
# Nothing is downloaded besides Debian and PyPI packages: no browser build of Selenium's or
# Playwright's own. Safe to run again: it returns at once when everything is in place.
# Prints the paths found as KEY=value lines (CHROMIUM, CHROMEDRIVER, BROWSER_PYTHON).
set -euo pipefail
# shellcheck source=lib/tool-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tool-venv.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_VENV="${BROWSER_VENV:-$ROOT/.venv-browser}"
REQUIREMENTS="$ROOT/tests/browser/requirements.txt"
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

say() { printf '%s\n' "$*" >&2; }

has_candidate() { # $1: a Debian package -> true when apt knows a version to install
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

ensure_chromium() {
    local wanted=()
    [[ -x "$CHROMIUM" ]] || wanted+=(chromium)
    [[ -x "$CHROMEDRIVER" ]] || wanted+=(chromium-driver)
    [[ ${#wanted[@]} -eq 0 ]] && return
    if [[ $(id -u) -ne 0 ]]; then
        say "FAIL: ${wanted[*]} missing; installing needs root: apt-get install -y ${wanted[*]}"
        exit 2
    fi
    local package
    for package in "${wanted[@]}"; do
        if ! has_candidate "$package"; then
            say "apt-get update (apt has no candidate for $package)"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            break
        fi
    done
    say "apt-get install -y --no-install-recommends ${wanted[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${wanted[@]}" >/dev/null
}

ensure_venv() {
    say "the browser driver's venv: ${BROWSER_VENV#"$ROOT"/} (tests/browser/requirements.txt)"
    tool_venv "$BROWSER_VENV" "$REQUIREMENTS"
}

ensure_chromium
ensure_venv
"$CHROMIUM" --version >&2
printf 'CHROMIUM=%s\nCHROMEDRIVER=%s\nBROWSER_PYTHON=%s\n' \
    "$CHROMIUM" "$CHROMEDRIVER" "$BROWSER_VENV/bin/python"

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
    local stamp="$BROWSER_VENV/.requirements.sha256" wanted
    wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [[ -x "$BROWSER_VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        return
    fi
    say "installing tests/browser/requirements.txt into ${BROWSER_VENV#"$ROOT"/}"
    rm -rf "$BROWSER_VENV"
    local uv=()
    if [[ -n "${UV:-}" ]] && ${UV} --version >/dev/null 2>&1; then
        read -r -a uv <<<"$UV"  # the uv `make` uses (exported by the Makefile)
    elif command -v uv >/dev/null 2>&1; then
        uv=(uv)
    elif python3 -m uv --version >/dev/null 2>&1; then
        uv=(python3 -m uv)
    fi
    if [[ ${#uv[@]} -gt 0 ]]; then
        "${uv[@]}" venv --quiet --python python3 "$BROWSER_VENV"
        "${uv[@]}" pip install --quiet --python "$BROWSER_VENV/bin/python" -r "$REQUIREMENTS"
    else
        if ! python3 -m venv "$BROWSER_VENV" 2>/dev/null; then
            rm -rf "$BROWSER_VENV"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                python3-venv >/dev/null
            python3 -m venv "$BROWSER_VENV"
        fi
        "$BROWSER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$REQUIREMENTS"
    fi
    printf '*\n' >"$BROWSER_VENV/.gitignore"  # never committed, wherever it lives
    printf '%s\n' "$wanted" >"$stamp"
}

ensure_chromium
ensure_venv
"$CHROMIUM" --version >&2
printf 'CHROMIUM=%s\nCHROMEDRIVER=%s\nBROWSER_PYTHON=%s\n' \
    "$CHROMIUM" "$CHROMEDRIVER" "$BROWSER_VENV/bin/python"

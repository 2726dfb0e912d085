#!/usr/bin/env bash
# Pushes the image oci/build.sh wrote to REGISTRY/NAME:TAG, byte for byte: the manifest digest
# in the registry is the one oci/build.sh printed, so a WasmPlugin pinned to it before the push
# still matches after.
#
# Environment:
#   REGISTRY           host[:port][/path] (required)
#   TLS_VERIFY         true (default) or false for a plain-HTTP or self-signed registry
#   REGISTRY_CREDS     user:password (visible in the process list; prefer an auth file)
#   REGISTRY_AUTHFILE  an auth file as `skopeo login --authfile` writes; without it and
#                      without REGISTRY_CREDS skopeo uses its default
#                      (${XDG_RUNTIME_DIR}/containers/auth.json, or $REGISTRY_AUTH_FILE)
#   OCI_ENV            what oci/build.sh wrote (dist/oci.env)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "oci/push.sh: $*" >&2; exit 1; }

registry=${REGISTRY:-}
registry=${registry%/}
[[ -n $registry ]] || die "REGISTRY is not set; e.g. make oci-push REGISTRY=ghcr.io/you (add TLS_VERIFY=false for a plain-HTTP registry)"
[[ $registry != *://* ]] || die "REGISTRY is host[:port][/path], without a scheme: got $registry"
tls_verify=${TLS_VERIFY:-true}
[[ $tls_verify == true || $tls_verify == false ]] || die "TLS_VERIFY is true or false, got $tls_verify"
command -v skopeo >/dev/null || die "skopeo is not installed (make system-tools installs it)"

env_file=${OCI_ENV:-dist/oci.env}
[[ -f $env_file ]] || die "$env_file does not exist; run make oci"
declare -A built=()
while IFS='=' read -r key value; do
  built[$key]=$value
done <"$env_file"
for key in IMAGE_LAYOUT IMAGE_NAME IMAGE_TAG MANIFEST_DIGEST; do
  [[ -n ${built[$key]:-} ]] || die "$env_file has no $key; run make oci"
done

repo=$registry/${built[IMAGE_NAME]}
dest=$repo:${built[IMAGE_TAG]}
digest_file=$(mktemp)
trap 'rm -f "$digest_file"' EXIT

args=(--preserve-digests --digestfile "$digest_file" --dest-tls-verify="$tls_verify")
[[ -z ${REGISTRY_CREDS:-} ]] || args+=(--dest-creds "$REGISTRY_CREDS")
[[ -z ${REGISTRY_AUTHFILE:-} ]] || args+=(--dest-authfile "$REGISTRY_AUTHFILE")
skopeo copy "${args[@]}" "oci:${built[IMAGE_LAYOUT]}:${built[IMAGE_TAG]}" "docker://$dest"

pushed=$(<"$digest_file")
# --preserve-digests refuses to rewrite the manifest; checked again so that a skopeo without
# that guarantee cannot publish a digest nobody pinned.
[[ $pushed == "${built[MANIFEST_DIGEST]}" ]] ||
  die "the registry holds manifest $pushed, not the built ${built[MANIFEST_DIGEST]}"

cat <<EOF
pushed:             $dest
digest:             $repo@$pushed
                    Istio: WasmPlugin url oci://$repo@$pushed
EOF

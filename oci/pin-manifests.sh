#!/usr/bin/env bash
# Writes dist/istio/: a copy of istio/ whose WasmPlugins load the image oci/build.sh built, from
# REGISTRY, pinned by its manifest digest (in the url and in sha256), so what a cluster runs is
# exactly that image even if the tag is moved later.
#
# The files in istio/ name the image as oci://registry.example.com/progressive-delivery:VERSION
# with sha256: "": each WasmPlugin must have exactly one such url line and one sha256 line,
# or this fails instead of writing a manifest that still points at the example registry.
#
# Environment: REGISTRY (required, as for oci/push.sh), OCI_ENV (dist/oci.env), OUT (dist/istio).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "oci/pin-manifests.sh: $*" >&2; exit 1; }

registry=${REGISTRY:-}
registry=${registry%/}
[[ -n $registry ]] || die "REGISTRY is not set; e.g. make istio-manifests REGISTRY=ghcr.io/you"
[[ $registry != *://* ]] || die "REGISTRY is host[:port][/path], without a scheme: got $registry"
env_file=${OCI_ENV:-dist/oci.env}
[[ -f $env_file ]] || die "$env_file does not exist; run make oci"
name=$(sed -n 's/^IMAGE_NAME=//p' "$env_file")
digest=$(sed -n 's/^MANIFEST_DIGEST=//p' "$env_file")
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "$env_file: MANIFEST_DIGEST is '$digest'"
[[ -n $name ]] || die "$env_file has no IMAGE_NAME"
out=${OUT:-dist/istio}

url_line='^(\s*)url: oci://registry\.example\.com/'"$name"':[^ ]+$'
sha_line='^(\s*)sha256: ""$'
rm -rf "$out"
while IFS= read -r -d '' src; do
  rel=${src#istio/}
  dst=$out/$rel
  mkdir -p "$(dirname "$dst")"
  if grep -q '^kind: WasmPlugin$' "$src"; then
    urls=$(grep -cE "$url_line" "$src" || true)
    shas=$(grep -cE "$sha_line" "$src" || true)
    [[ $urls == 1 && $shas == 1 ]] ||
      die "$src: expected one 'url: oci://registry.example.com/$name:TAG' and one 'sha256: \"\"' line, found $urls and $shas"
    sed -E -e "s#$url_line#\\1url: oci://$registry/$name@$digest#" \
      -e "s#$sha_line#\\1sha256: \"${digest#sha256:}\"#" "$src" >"$dst"
  else
    cp "$src" "$dst"
  fi
done < <(find istio -type f -print0 | sort -z)

echo "$out/: WasmPlugins pinned to oci://$registry/$name@$digest"

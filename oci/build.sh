#!/usr/bin/env bash
# Packs the filter into an OCI image layout that Istio's image fetcher accepts: an OCI image
# manifest with a single application/vnd.oci.image.layer.v1.tar+gzip layer holding plugin.wasm
# at its root. Istio reads the last layer, older Istio releases demand exactly one, other
# fetchers read the first: with one layer all of them find it. Standard media types, so any
# registry takes it.
#
# Reproducible: the same commit and the same wasm give the same manifest digest. Every time in
# the image (file mtimes, config `created`, history) is the last commit's time; owners, modes,
# OS and architecture are fixed; umoci writes no timestamp into the gzip header.
#
# Environment (all optional; `make oci` sets them):
#   WASM          the module to pack               (dist/progressive_delivery.wasm)
#   OCI_DIR       the OCI image layout to write    (dist/oci; replaced as a whole)
#   OCI_ENV       machine-readable summary         (dist/oci.env)
#   IMAGE_SOURCE  org.opencontainers.image.source  (`repository` in Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "oci/build.sh: $*" >&2; exit 1; }

wasm=${WASM:-dist/progressive_delivery.wasm}
out=${OCI_DIR:-dist/oci}
env_file=${OCI_ENV:-dist/oci.env}

command -v umoci >/dev/null || die "umoci is not installed (make system-tools installs it)"
[[ -f $wasm ]] || die "$wasm does not exist; run make build"

# Only [package] keys: dependencies carry `version` too.
package_field() { sed -n '/^\[package\]/,/^\[/s/^'"$1"' *= *"\(.*\)"$/\1/p' Cargo.toml; }
name=$(package_field name)
version=$(package_field version)
description=$(package_field description)
license=$(package_field license)
source_url=${IMAGE_SOURCE:-$(package_field repository)}
[[ -n $name && -n $version ]] || die "no name or version in [package] of Cargo.toml"
[[ -n $source_url ]] || die "set IMAGE_SOURCE or repository in Cargo.toml"

git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: the image's revision and time come from git"
revision=$(git rev-parse HEAD)
# Untracked files count: a new source file not yet added changes the build as much as an edit.
[[ -z $(git status --porcelain) ]] || revision="$revision-dirty"
epoch=$(git log -1 --format=%ct)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

mkdir -p "$(dirname "$out")" "$(dirname "$env_file")"
# Built next to its destination, so that the final move is a rename and a failed build leaves
# the previous image in place.
work=$(mktemp -d "$(dirname "$out")/.oci-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout=$work/layout
bundle=$work/bundle
image=$layout:$version

umoci init --layout "$layout"
umoci new --image "$image"
umoci unpack --rootless --image "$image" "$bundle"
install -m 0644 "$wasm" "$bundle/rootfs/plugin.wasm"
chmod 0755 "$bundle/rootfs"
touch -d "@$epoch" "$bundle/rootfs/plugin.wasm" "$bundle/rootfs"
umoci repack --image "$image" \
  --history.created "$created" --history.created_by "oci/build.sh: plugin.wasm" "$bundle"

annotations=(
  "org.opencontainers.image.source=$source_url"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.title=$name"
  "org.opencontainers.image.description=$description"
  "org.opencontainers.image.licenses=$license"
)
config_args=()
for a in "${annotations[@]}"; do
  config_args+=(--manifest.annotation "$a" --config.label "$a")
done
# umoci defaults os/architecture to the build machine's: fixed here, so an arm64 laptop and an
# amd64 CI runner build the same image. wasip1/wasm is what the module targets.
umoci config --image "$image" --no-history --created "$created" \
  --os wasip1 --architecture wasm "${config_args[@]}"
umoci gc --layout "$layout"

manifest_digest=$(python3 -c '
import json, sys
(m,) = json.load(open(sys.argv[1]))["manifests"]
print(m["digest"])' "$layout/index.json")
wasm_sha256=$(sha256sum "$wasm" | cut -d' ' -f1)

rm -rf "$out"
mv "$layout" "$out"

cat >"$env_file" <<EOF
IMAGE_LAYOUT=$out
IMAGE_NAME=$name
IMAGE_TAG=$version
IMAGE_REF=oci:$out:$version
MANIFEST_DIGEST=$manifest_digest
WASM_SHA256=$wasm_sha256
REVISION=$revision
CREATED=$created
EOF

cat <<EOF
image:              oci:$out:$version
manifest digest:    $manifest_digest
                    Istio: WasmPlugin url oci://REGISTRY/$name@$manifest_digest
                    or sha256: ${manifest_digest#sha256:}
plugin.wasm sha256: $wasm_sha256
                    Envoy: vm_config.code.remote.sha256
(also in $env_file)
EOF

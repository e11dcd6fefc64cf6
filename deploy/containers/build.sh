#!/usr/bin/env bash
# Builds the mesh images from the repository root with podman (or docker):
#   localhost/mesh-control-plane:VERSION, localhost/mesh-sidecar:VERSION, localhost/mesh-cli:VERSION
# VERSION is the workspace version, the tag deploy/kubernetes/kustomization.yaml expects.
# Usage: deploy/containers/build.sh [control-plane|sidecar|mesh-cli ...]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/../.."

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then engine=podman
  elif command -v docker >/dev/null 2>&1; then engine=docker
  else echo "build.sh: neither podman nor docker found (set CONTAINER_ENGINE)" >&2; exit 1
  fi
fi

# [workspace.package] version = "X.Y.Z" in the root Cargo.toml.
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
[ -n "$version" ] || { echo "build.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }

images=("$@")
[ "${#images[@]}" -gt 0 ] || images=(control-plane sidecar mesh-cli)
for name in "${images[@]}"; do
  file="deploy/containers/${name}.Containerfile"
  [ -f "$file" ] || { echo "build.sh: no $file" >&2; exit 1; }
  # The image is named after the binary it runs.
  case "$name" in mesh-cli) image=mesh-cli ;; *) image="mesh-${name}" ;; esac
  echo "build.sh: $engine build -f $file -t localhost/${image}:${version} ."
  # BuildKit (docker) and buildah (podman) both honour RUN --mount=type=cache.
  DOCKER_BUILDKIT=1 "$engine" build -f "$file" -t "localhost/${image}:${version}" .
done

"""The zero-config builder: Cloud Native Buildpacks for a repository without a Dockerfile (pure).

Why buildpacks and not Railpack: the buildpacks lifecycle's ``creator`` runs all its phases
(detect, analyze, restore, build, export) as the builder image's own unprivileged user in one
ordinary container and exports straight to the registry, with its layer cache as an image
there too. It creates no namespaces and mounts nothing, so the task keeps Docker's default
seccomp and AppArmor profiles, unlike any rootless BuildKit or buildah (``security_opt``
unconfined, see panel/render/build.py). Railpack needs BuildKit for the build itself and its
own CLI for a ``prepare`` step first: two more moving parts with the weaker sandbox. The
builder is a trusted one, pinned: Paketo's Jammy base builder (Java, Node.js, Go, Python,
.NET, Ruby, NGINX, Procfile); ``HELIOS_BUILDPACKS_BUILDER`` chooses another.

The task replaces the ``build`` task of the Dockerfile builder; ``fetch`` is the same. Like
every build script, the text below is constant: the values arrive in the task's ``Env`` and are
only used quoted. The build context is copied into the task's own directory (the buildpacks
may write to the app directory, and the fetched source belongs to the fetch task's user);
build args become files of the platform's ``env`` directory, which is how a platform hands
variables to buildpacks (``BP_*`` settings, for instance). The registry credential becomes
``CNB_REGISTRY_AUTH`` (the lifecycle's own way to take one) and nothing else sees it.

Only builds of the tracked branch use the cache image: the lifecycle reads and writes it
through one flag, and other branches must not write it.
"""

from __future__ import annotations

__all__ = ["BUILDPACKS_BUILDER", "BUILDPACKS_SCRIPT", "PLATFORM_API", "buildpacks_env"]

# Paketo's Jammy base builder, pinned to one release (lifecycle 0.21.18: platform APIs up to
# 0.15). Bump deliberately; HELIOS_BUILDPACKS_BUILDER overrides it, also with a digest.
BUILDPACKS_BUILDER = "docker.io/paketobuildpacks/builder-jammy-base:0.4.635"
PLATFORM_API = "0.12"  # the platform API Helios speaks to the lifecycle (flags below)
WORKSPACE = "${NOMAD_TASK_DIR}/workspace"
LAYERS = "${NOMAD_TASK_DIR}/layers"
PLATFORM = "${NOMAD_TASK_DIR}/platform"

BUILDPACKS_SCRIPT = r"""set -eu
top=$(realpath "$HELIOS_SOURCE_DIR")
if [ ! -d "$HELIOS_SOURCE_DIR/$HELIOS_CONTEXT" ]; then
  printf '%s: the build context %s is not a folder of the repository\n' "$0" \
    "$HELIOS_CONTEXT" >&2
  exit 2
fi
context=$(realpath "$HELIOS_SOURCE_DIR/$HELIOS_CONTEXT")
case "$context/" in
  "$top"/*) ;;
  *)
    printf '%s: the build context %s leads outside the repository\n' "$0" "$HELIOS_CONTEXT" >&2
    exit 2
    ;;
esac
mkdir -p "$HELIOS_WORKSPACE" "$HELIOS_LAYERS" "$HELIOS_PLATFORM/env"
cp -R "$context/." "$HELIOS_WORKSPACE/"
while IFS= read -r arg; do
  if [ -n "$arg" ]; then
    name=$(printf '%s' "$arg" | cut -d = -f 1)
    printf '%s' "$arg" | cut -d = -f 2- | tr -d '\n' > "$HELIOS_PLATFORM/env/$name"
  fi
done <<EOF
$HELIOS_BUILD_ARGS
EOF
if [ "$HELIOS_REGISTRY_AUTH" = 1 ]; then
  basic=$(printf '%s:%s' "$HELIOS_REGISTRY_USERNAME" "$HELIOS_REGISTRY_PASSWORD" |
    base64 | tr -d '\n')
  CNB_REGISTRY_AUTH=$(printf '{"%s":"Basic %s"}' "$HELIOS_REGISTRY" "$basic")
  export CNB_REGISTRY_AUTH
  unset HELIOS_REGISTRY_PASSWORD basic
fi
report="$HELIOS_LAYERS/report.toml"
set -- -app "$HELIOS_WORKSPACE" -layers "$HELIOS_LAYERS" -platform "$HELIOS_PLATFORM" \
  -report "$report" -log-level info
if [ "$HELIOS_CACHE_WRITE" = 1 ]; then
  set -- "$@" -cache-image "$HELIOS_CACHE_REPO"
fi
if [ "$HELIOS_TLS_VERIFY" = false ]; then
  set -- "$@" -insecure-registry "$HELIOS_REGISTRY"
fi
"$HELIOS_CREATOR" "$@" "$HELIOS_IMAGE"
digest=$(sed -n 's/^[[:space:]]*digest[[:space:]]*=[[:space:]]*"\(sha256:[0-9a-f]\{64\}\)".*/\1/p' \
  "$report" | head -n 1)
if [ -z "$digest" ]; then
  printf '%s: the lifecycle pushed no image digest (no digest in %s)\n' "$0" "$report" >&2
  exit 1
fi
printf '%s\n' "$digest" > "$HELIOS_DIGEST_FILE"
printf 'helios-build-digest %s\n' "$digest"
"""


def buildpacks_env(common: dict[str, str]) -> dict[str, str]:
    """The build task's Env for the buildpacks builder: the values every builder gets
    (``common``) and where the lifecycle works."""
    return {
        **common,
        # Go's TLS reads extra roots from these folders: the system's and the registry's CA.
        "SSL_CERT_DIR": "/etc/ssl/certs:" + common["HELIOS_CERT_DIR"],
        "CNB_PLATFORM_API": PLATFORM_API,
        "HELIOS_CREATOR": "/cnb/lifecycle/creator",
        "HELIOS_WORKSPACE": WORKSPACE,
        "HELIOS_LAYERS": LAYERS,
        "HELIOS_PLATFORM": PLATFORM,
    }

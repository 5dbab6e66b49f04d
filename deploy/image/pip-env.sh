#!/bin/sh
# pip inside an image build (the Dockerfile's only pip entry point): build args left empty are unset first (an
# empty PIP_INDEX_URL would otherwise reach pip as a blank index), then pip runs with the rest.
#   pip-env torch        install TORCH_SPEC alone from TORCH_FIND_LINKS (a wheel folder) or else TORCH_INDEX_URL;
#                        its dependencies come with rerankd's, at the versions of constraints.txt
#   pip-env ARGS...      pip ARGS, with PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_CERT where given
set -eu
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CERT PIP_FIND_LINKS TORCH_INDEX_URL TORCH_FIND_LINKS; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || unset "$name"
done
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if [ "${1:-}" = torch ]; then
    if [ -n "${TORCH_FIND_LINKS:-}" ]; then
        exec pip install --no-deps --no-index --find-links "$TORCH_FIND_LINKS" "$TORCH_SPEC"
    fi
    exec pip install --no-deps --index-url "${TORCH_INDEX_URL:?set TORCH_INDEX_URL or TORCH_FIND_LINKS}" "$TORCH_SPEC"
fi
exec pip "$@"

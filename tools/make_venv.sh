#!/usr/bin/env bash
# Builds the virtual environment VENV from scratch: a CPU build of torch, then every package pinned in
# requirements/lock-cpu.txt and this project (editable). With --latest, the newest versions pyproject.toml's
# ranges allow instead of the lock (torch stays the lock's CPU build: PyTorch publishes CPU builds on its
# own index only). `make` calls this; VENV/.installed marks a complete environment.
#
#   tools/make_venv.sh VENV [--latest]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: tools/make_venv.sh VENV [--latest]}
mode=${2:-lock}
lock=requirements/lock-cpu.txt
case "$mode" in
  lock | --latest) ;;
  *) echo "usage: tools/make_venv.sh VENV [--latest]" >&2; exit 2 ;;
esac

rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
# -qq: errors only (machines whose pip.conf names absent local indexes warn once per package).
pip=("$venv/bin/python" -m pip -qq --disable-pip-version-check)

# torch==<version>+cpu: a local wheel where pip's find-links (e.g. PIP_FIND_LINKS) has one, else
# PyTorch's CPU index. Its dependencies come with the rest of the lock.
torch_pin=$(grep -E '^torch==' "$lock")
if ! "${pip[@]}" install --no-index --no-deps "$torch_pin" 2>/dev/null; then
  echo "no local $torch_pin wheel; installing it from https://download.pytorch.org/whl/cpu"
  "${pip[@]}" install --no-deps --index-url https://download.pytorch.org/whl/cpu "$torch_pin"
fi

if [ "$mode" = --latest ]; then
  "${pip[@]}" install --upgrade --upgrade-strategy eager --constraint <(echo "$torch_pin") -e ".[test]"
else
  "${pip[@]}" install --no-deps -r "$lock"
  "${pip[@]}" install --no-deps --no-build-isolation -e . 2>/dev/null \
    || "${pip[@]}" install --no-deps -e .
fi
"${pip[@]}" check
"$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|chex|torch|transformers) ' | tr -s ' ' | paste -sd ' '
touch "$venv/.installed"

#!/usr/bin/env bash
# Install MONAI Label 0.8.5 into its own virtual environment, with this project installed editable.
#
#   bash scripts/install_monailabel.sh [VENV]     (default: $UNET_MONAI_MONAILABEL_VENV, else <repo>/.venv-monailabel)
#
# Idempotent: when VENV already holds a working MONAI Label, torchvision and this checkout of
# unet_monai it says so and exits 0 within seconds; otherwise it (re)runs the installation, which only
# adds what is missing. PYTHON selects the interpreter the venv is made from (default: python3).
#
# Why a separate environment, and this torch: MONAI Label imports torchvision unconditionally, and no
# CPU build of torchvision exists on PyPI. PyPI's torchvision 0.28.0 (the release for torch 2.13) is
# linked against the CUDA build of torch 2.13.0 (libtorch_cuda.so), so next to the project's CPU-only
# torch 2.13.0+cpu it fails on import ("operator torchvision::nms does not exist"). The choice made
# here: PyPI's CUDA build of torch 2.13.0, the project's torch version (it runs on the CPU too), with
# torchvision 0.28.0, pinned rather than "newest" so the server trains with the torch the bundles are
# tested with. Cost: about 8 GB on disk and several minutes (docs/monailabel.md has measured figures).
# "torch===2.13.0" (arbitrary equality) matches the registry's "2.13.0" only, never the local
# "2.13.0+cpu" wheel that pip's find-links may offer, whatever the machine's pip configuration.
#
# Pins: pydicom 3 breaks pydicom-seg 0.4.1 (ImportError at server start), hence pydicom 2.4.4 with the
# dicomweb-client and pynetdicom releases that accept it.
#
# MONAI Label requires sam2, published as source only: building it installs "torch>=2.5.1" into a
# throw-away build environment, which would be the registry's newest CUDA torch (another ~4 GB). A
# constraints file passed as PIP_CONSTRAINT (pip's build environments inherit it) pins torch==2.13.0
# there, so the build takes the machine's local CPU wheel where there is one (nothing CUDA is compiled).
#
# The project is installed with --no-deps, then those of its requirements that no installed package
# provides are added without changing anything installed: pydicom-seg 0.4.1 needs jsonschema<4 where
# the project asks for jsonschema>=4 (used by `monai.bundle verify_metadata` only, never by the
# server), so the two cannot be resolved together.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${UNET_MONAI_MONAILABEL_VENV:-$REPO/.venv-monailabel}}"
PYTHON="${PYTHON:-python3}"

MONAILABEL_VERSION="0.8.5"
REQUIREMENTS=(
    "monailabel==${MONAILABEL_VERSION}"
    "torch===2.13.0"
    "torchvision==0.28.0"
    "pydicom==2.4.4"
    "dicomweb-client==0.59.3"
    "pynetdicom==2.0.2"
)

say() { printf '[install_monailabel] %s\n' "$*"; }

# The requirements of unet_monai that no installed distribution provides, one name a line.
missing_requirements() {
    "$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import PackageNotFoundError, requires, version

for requirement in requires("unet-monai") or []:
    if "extra ==" in requirement:
        continue
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    try:
        version(name)
    except PackageNotFoundError:
        print(name)
PY
}

# Exit status 0 when the venv is complete: the pinned versions import, torchvision's operators load,
# unet_monai is this checkout (editable) and none of its requirements is missing.
check() {
    [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/monailabel" ] || return 1
    "$VENV/bin/python" - "$REPO" "$MONAILABEL_VERSION" >/dev/null 2>&1 <<'PY' || return 1
import sys
from pathlib import Path

import monailabel
import torch
import torchvision.utils  # what MONAI Label imports; fails when the torch and torchvision builds disagree
import unet_monai

repo, version = Path(sys.argv[1]).resolve(), sys.argv[2]
assert monailabel.__version__ == version, monailabel.__version__
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert Path(unet_monai.__file__).resolve().is_relative_to(repo), unet_monai.__file__
PY
    [ -z "$(missing_requirements 2>/dev/null)" ]
}

pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@"; }

start=$(date +%s)
if check; then
    say "complete: $VENV (monailabel $MONAILABEL_VERSION, torch 2.13.0, torchvision 0.28.0, unet_monai from $REPO)"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtual environment $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "torch==2.13.0" >"$work/build-constraints.txt"

say "1/3 installing ${REQUIREMENTS[*]} (several GB, several minutes on a clean machine)"
PIP_CONSTRAINT="$work/build-constraints.txt" pip_install "${REQUIREMENTS[@]}"

say "2/3 installing unet_monai from $REPO (editable, --no-deps)"
pip_install --no-deps -e "$REPO"

missing=$(missing_requirements)
if [ -n "$missing" ]; then
    say "3/3 adding the missing requirements of unet_monai: $(echo "$missing" | tr '\n' ' ')(installed versions kept)"
    "$VENV/bin/python" -m pip freeze --exclude-editable >"$work/installed.txt"
    # shellcheck disable=SC2086  # one requirement name a word
    pip_install -c "$work/installed.txt" $missing
else
    say "3/3 every requirement of unet_monai has an installed distribution"
fi
# version conflicts pip knows of (expected: jsonschema, see above); informative, not fatal
"$VENV/bin/python" -m pip check 2>&1 | sed 's/^/[install_monailabel] pip check: /' || true

if ! check; then
    say "the environment $VENV is still incomplete after installing; what fails:"
    "$VENV/bin/python" -c "import monailabel, torchvision.utils, unet_monai" || true
    exit 1
fi
say "done in $(($(date +%s) - start)) s: $VENV ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
say "start a server: python -m unet_monai.apps.monailabel start --studies <folder of NIfTI studies>"

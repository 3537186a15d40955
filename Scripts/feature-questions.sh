#!/usr/bin/env bash
# Asks every tile of a fixed sample (every 37th file, three per class folder, ten class folders
# of the four organs' tile sets) a diagnosis question and three feature questions through
# `eosin chat`, and counts the feature answers flagged `off-question` and those left unflagged.
# Usage: Scripts/feature-questions.sh [BIN] [DATA]   (run from the checkout whose weights BIN uses)
set -euo pipefail
BIN=${1:-.build/release/eosin}
D=${2:-../shared/data/tiles}
off=0 unflagged=0 total=0
for spec in "lc25000-lung lung_aca lung" "lc25000-lung lung_n lung" "lc25000-lung lung_scc lung" \
  "ebhi-seg Adenocarcinoma colon" "ebhi-seg Normal colon" "ebhi-seg Polyp colon" \
  "prostate-panda gleason3 prostate" "prostate-panda stroma_or_benign prostate" \
  "endometrium EA endometrium" "endometrium NE_Luteal endometrium"; do
  set -- $spec
  for f in $(ls "$D/$1/$2" | sort | awk 'NR%37==1' | head -3); do
    lines=$(printf "What is the diagnosis in this $3 tissue?\nDescribe the features.\nWhat features do these tiles show?\nWhich findings support the diagnosis here?\n" \
      | "$BIN" chat "$D/$1/$2/$f" 2>/dev/null | grep -E "^confidence|^⚠ REVIEW" | tail -n 3)
    total=$((total + 3))
    off=$((off + $(grep -c "does not take up" <<<"$lines" || true)))
    unflagged=$((unflagged + $(grep -c "^confidence" <<<"$lines" || true)))
  done
done
echo "feature answers $total; off-question $off; unflagged $unflagged"

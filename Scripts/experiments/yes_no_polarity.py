"""Yes/no questions about polarity in `eosin chat`, scored against the tiles' labels.

    python3 Scripts/experiments/yes_no_polarity.py .build/release/eosin

For 5 tiles of each of six classes (LC25000 lung adenocarcinoma, squamous cell carcinoma and
benign lung; EBHI adenocarcinoma, normal and polyp), one scripted chat: the closed question
naming the organ, then "Is this benign?", "Is this malignant?", "Is it cancer?" and "Is this
normal tissue?". An answer opening with yes or no gives a polarity; against the tile's label
(carcinoma: malignant; benign, normal, polyp: benign) it is right or wrong. Prints how many
yes/no answers there were, how many were wrong, and how many of those were flagged for review.
Needs ../shared/data and the language model in the cache (`make lm`).
"""

import glob
import re
import subprocess
import sys

QUESTIONS = ["Is this benign?", "Is this malignant?", "Is it cancer?", "Is this normal tissue?"]
CLASSES = [
    ("lc25000-lung/lung_aca", "lung", True), ("lc25000-lung/lung_scc", "lung", True), ("lc25000-lung/lung_n", "lung", False),
    ("ebhi-seg/Adenocarcinoma", "colon", True), ("ebhi-seg/Normal", "colon", False), ("ebhi-seg/Polyp", "colon", False),
]


def answers(binary, tile, organ):
    script = f"What is the diagnosis in this {organ} tissue?\n" + "\n".join(QUESTIONS) + "\n"
    out = subprocess.run([binary, "chat", tile], input=script, capture_output=True, text=True).stdout
    found, cur = [], []
    for line in out.splitlines():
        if line.startswith(("opened ", "chat model", "(Source")):
            continue
        if line.startswith(("confidence ", "⚠ REVIEW")):
            found.append(("\n".join(cur), line.startswith("⚠")))
            cur = []
        else:
            cur.append(line)
    return found[1:]


def main(binary):
    n = wrong = flagged = 0
    for folder, organ, malignant in CLASSES:
        tiles = sorted(f for f in glob.glob(f"../shared/data/tiles/{folder}/*") if f.lower().endswith((".jpeg", ".jpg", ".png")))
        for tile in tiles[:: max(1, len(tiles) // 5)][:5]:
            for q, (text, is_flagged) in zip(QUESTIONS, answers(binary, tile, organ)):
                first = re.match(r"[A-Za-z]+", text.strip())
                if not first or first.group(0).lower() not in ("yes", "no"):
                    continue
                n += 1
                asks_malignant = "malignant" in q or "cancer" in q
                says_malignant = asks_malignant == (first.group(0).lower() == "yes")
                if says_malignant != malignant:
                    wrong += 1
                    flagged += is_flagged
    print(f"{binary}: {n} yes/no answers, {wrong} against the label, {flagged} of those flagged")


if __name__ == "__main__":
    main(sys.argv[1])

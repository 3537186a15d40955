"""How much do fixed stain and texture statistics tell the diagnostic classes apart?

Computes Eosin's 123 tissue statistics (the NumPy definition in
Scripts/reference/make_tissue_features_fixture.py) on every tile of the four diagnostic sets at 160 px
(centre square, bicubic), then fits logistic regressions (balanced class weights) on 60% of the groups and
scores balanced accuracy on the other 40%, over 3 random group splits:
  - per dataset: a probe on that dataset alone;
  - joint: one classifier over all four datasets' classes, scored within each dataset's own classes
    (roughly what a zero-shot prompt set asks of one shared embedding space).
Needs numpy, pillow and scikit-learn (a separate venv). Usage:
  python Scripts/experiments/tissue_features.py [../shared/data/tiles]
"""
import csv, os, sys
import numpy as np
from concurrent.futures import ProcessPoolExecutor
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../reference"))
from make_tissue_features_fixture import features  # noqa: E402

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../../shared/data/tiles")
SETS = [("lc25000-lung", "label"), ("ebhi-seg", "label"), ("prostate-panda", "label"), ("endometrium", "coarse_label")]
SIZE = 160


def tile(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((SIZE, SIZE), Image.BICUBIC)
    return np.array(features(np.asarray(im).astype(np.float64) / 255), np.float32)


def load(name, labcol):
    rows = list(csv.DictReader(open(os.path.join(ROOT, name, "manifest.csv"))))
    gcol = "group" if "group" in rows[0] else "case_id"
    with ProcessPoolExecutor(2) as ex:
        X = np.stack(list(ex.map(tile, [os.path.join(ROOT, name, r["path"]) for r in rows], chunksize=32)))
    return X, np.array([r[labcol] for r in rows]), np.array([r[gcol] for r in rows])


def probe(Xtr, ytr):
    sc = StandardScaler().fit(Xtr)
    clf = LogisticRegression(max_iter=5000, C=0.5, class_weight="balanced").fit(sc.transform(Xtr), ytr)
    return sc, clf


data = {n: load(n, l) for n, l in SETS}
per, joint = {n: [] for n, _ in SETS}, {n: [] for n, _ in SETS}
for seed in range(3):
    parts = {}
    for n, (X, y, g) in data.items():
        tr, te = next(GroupShuffleSplit(1, test_size=0.4, random_state=seed).split(X, y, g))
        parts[n] = (tr, te)
        sc, clf = probe(X[tr], y[tr])
        per[n].append(balanced_accuracy_score(y[te], clf.predict(sc.transform(X[te]))))
    Xtr = np.concatenate([data[n][0][parts[n][0]] for n in data])
    ytr = np.concatenate([[n + ":" + v for v in data[n][1][parts[n][0]]] for n in data])
    sc, clf = probe(Xtr, ytr)
    for n, (X, y, g) in data.items():
        te = parts[n][1]
        P = clf.predict_proba(sc.transform(X[te]))
        own = np.array([c.startswith(n + ":") for c in clf.classes_])
        pred = [c.split(":", 1)[1] for c in clf.classes_[own][P[:, own].argmax(1)]]
        joint[n].append(balanced_accuracy_score(y[te], pred))
print("| dataset | tiles | probe on the dataset | joint classifier |")
print("|---|---|---|---|")
for n, _ in SETS:
    print(f"| {n} | {len(data[n][1])} | {np.mean(per[n]):.3f} ± {np.std(per[n]):.3f} | {np.mean(joint[n]):.3f} ± {np.std(joint[n]):.3f} |")

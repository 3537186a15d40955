#!/usr/bin/env python3
"""Nearest-neighbour probe of an image encoder on the labelled tile sets of ../shared/data.

Embeds every tile of each diagnostic set with `eosin embed --encoder DIR` (HDF5, rows in input
order), splits by group exactly as Eosin does (TileManifest.splits: stratified by label, FNV-1a
rank), and classifies each test tile by the majority label of its 10 most cosine-similar train
tiles. No text is involved: this measures what the image embeddings separate, apart from the
prompts. Needs numpy and h5py.

    python3 Scripts/eval/knn_probe.py --encoder Weights/eosin-small-v2 [--eosin .build/release/eosin]
"""
import argparse, collections, csv, os, subprocess, tempfile
import h5py, numpy as np

p = argparse.ArgumentParser()
p.add_argument("--encoder", required=True)
p.add_argument("--eosin", default=".build/release/eosin")
p.add_argument("--data", default="../shared/data/tiles")
p.add_argument("--sets", nargs="+", default=["lc25000-lung", "ebhi-seg", "prostate-panda", "endometrium"])
p.add_argument("-k", type=int, default=10)
a = p.parse_args()


def fnv(ds, g):
    h = 0xCBF29CE484222325
    for b in f"{ds}/{g}".encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def splits(ds, groups, labels):
    count = collections.defaultdict(collections.Counter)
    for g, l in zip(groups, labels):
        count[g][l] += 1
    by_label = collections.defaultdict(list)
    for g, c in count.items():
        by_label[sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]].append(g)
    out = {}
    for gs in by_label.values():
        gs.sort(key=lambda g: (fnv(ds, g), g))
        for i, g in enumerate(gs):
            f = (i + 0.5) / len(gs)
            out[g] = "train" if f < 0.7 else ("val" if f < 0.8 else "test")
    return out


with tempfile.TemporaryDirectory() as tmp:
    for ds in a.sets:
        rows = list(csv.DictReader(open(os.path.join(a.data, ds, "manifest.csv"))))
        paths = [os.path.join(a.data, ds, r["path"]) for r in rows]
        out = os.path.join(tmp, ds + ".h5")
        subprocess.run([a.eosin, "embed", "--encoder", a.encoder, *paths, "--out", out], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x = h5py.File(out)["features"][:]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        groups = [r.get("group") or r.get("case_id") or r["path"] for r in rows]
        labels = np.array([r["label"] for r in rows])
        sp = splits(ds, groups, labels)
        s = np.array([sp[g] for g in groups])
        tr, te = s == "train", s == "test"
        nn = np.argsort(-(x[te] @ x[tr].T), axis=1)[:, : a.k]
        pred = np.array([collections.Counter(labels[tr][i]).most_common(1)[0][0] for i in nn])
        classes = sorted(set(labels[te]))
        recall = [np.mean(pred[labels[te] == c] == c) for c in classes]
        print(f"{ds:16s} {len(classes)} classes, {te.sum()} test tiles: kNN-{a.k} balanced accuracy {np.mean(recall):.3f}")

"""Is the image head what holds zero-shot accuracy back, or the backbone?

Fits other heads on exactly what `eosin train clip-align` fits its linear head on, against the same
class anchors (the mean text embedding of each class's training captions), and scores each on the
val and test tiles of the four diagnostic sets (balanced accuracy, each dataset's own classes and
the non-tissue class competing, as clip-align's validation does). The epoch with the best mean val
score is kept, as clip-align keeps its head; test is only reported.

Heads: the committed head as it is; a linear head on the class token and the tissue statistics
(clip-align's inputs, fitted without the pull towards the contrastive head); a linear head on the
class token, the patch-token mean and the statistics; a two-layer MLP on those.

Needs torch (CPU) and numpy in a venv. Write the two files with the default weights first:
  eosin train clip-align --out Weights/eosin-small-v2/clip --features-out /tmp/head-val.safetensors \
      --background-slide ../shared/data/slides/CMU-1-Small-Region.svs
  eosin train clip-align --out Weights/eosin-small-v2/clip --features-out /tmp/head-test.safetensors \
      --features-split test --background-slide ../shared/data/slides/CMU-1-Small-Region.svs
  python Scripts/experiments/head_probe.py /tmp/head-val.safetensors /tmp/head-test.safetensors
"""
import json, struct, sys
import numpy as np
import torch

torch.manual_seed(0)


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        blob = f.read()
    meta = head.pop("__metadata__", {})
    t = {k: np.frombuffer(blob[v["data_offsets"][0]:v["data_offsets"][1]], np.float32).reshape(v["shape"]) for k, v in head.items()}
    return t, meta


val, meta = read(sys.argv[1])
test, _ = read(sys.argv[2])
names = json.loads(meta["datasets"])
E = int(meta["backbone_width"]); C = E // 2
X, Y = val["train_rows"], val["train_labels"].astype(int)
assert np.array_equal(X, test["train_rows"]), "both files must come from the same weights and seed"
A = torch.tensor(val["anchors"]); scale = float(val["logit_scale"][0])
sets = {"val": (val["val_rows"], val["val_labels"].astype(int), val["val_datasets"].astype(int)),
        "test": (test["val_rows"], test["val_labels"].astype(int), test["val_datasets"].astype(int))}
nt = int(meta["non_tissue_slot"])
own = {d: sorted(set(sets["val"][1][sets["val"][2] == d]) | set(sets["test"][1][sets["test"][2] == d])) + [nt] for d in range(len(names))}


def balanced(z, L, Dd):
    out = {}
    for d, name in enumerate(names):
        i = Dd == d
        pred = np.array(own[d])[z[i][:, own[d]].argmax(1)]
        out[name] = np.mean([np.mean(pred[L[i] == c] == c) for c in set(L[i])])
    return out


def show(tag, r):
    return f"{tag:5s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()) + f"  | mean {np.mean(list(r.values())):.3f}"


def committed(rows):
    e = rows[:, :C] @ val["visual_projection"].T
    if "visual_tissue_projection" in val:
        e = e + rows[:, E:] @ val["visual_tissue_projection"].T
    return (e / np.linalg.norm(e, axis=1, keepdims=True)) @ val["anchors"].T


print("committed head")
for s, (R, L, Dd) in sets.items():
    print("  " + show(s, balanced(committed(R), L, Dd)))

mu, sd = X.mean(0), X.std(0) + 1e-6
columns = {"class token + statistics": np.r_[0:C, E:X.shape[1]], "class token + patch mean + statistics": np.r_[0:X.shape[1]]}


def fit(cols, hidden, drop, epochs=300, wd=1e-4):
    x = lambda R: torch.tensor((R - mu) / sd)[:, cols]
    Xt, Yt = x(X), torch.tensor(Y)
    P = len(cols)
    layers = [torch.nn.Dropout(drop), torch.nn.Linear(P, hidden), torch.nn.GELU(), torch.nn.Dropout(drop), torch.nn.Linear(hidden, A.shape[1])] if hidden else [torch.nn.Linear(P, A.shape[1])]
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=wd)
    best = (-1.0, None, 0)
    for ep in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(Xt))
        for b in range(0, len(Xt), 1024):
            i = perm[b:b + 1024]
            z = scale * torch.nn.functional.normalize(net(Xt[i]), dim=1) @ A.T
            loss = torch.nn.functional.cross_entropy(z, Yt[i])
            opt.zero_grad(); loss.backward(); opt.step()
        if ep % 10 == 0:
            net.eval()
            with torch.no_grad():
                z = {s: (torch.nn.functional.normalize(net(x(R)), dim=1) @ A.T).numpy() for s, (R, _, _) in sets.items()}
            r = {s: balanced(z[s], L, Dd) for s, (_, L, Dd) in sets.items()}
            if np.mean(list(r["val"].values())) > best[0]:
                best = (np.mean(list(r["val"].values())), r, ep)
    return best


for cname, cols in columns.items():
    for hidden, drop in [(0, 0.0), (512, 0.1)]:
        _, r, ep = fit(cols, hidden, drop)
        print(f"{'MLP 512' if hidden else 'linear'} on {cname} (epoch {ep} kept)")
        for s in sets:
            print("  " + show(s, r[s]))

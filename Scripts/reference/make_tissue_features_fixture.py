"""Writes Tests/EosinModelsTests/Fixtures/tissue-features.json: a small H&E-like test image and its
123 tissue statistics as NumPy (and skimage's rgb2hed convention) defines them, for
TissueFeaturesTests. Needs numpy only. Run once: python3 Scripts/reference/make_tissue_features_fixture.py"""
import json, os
import numpy as np

RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def rgb2hed(a):  # skimage.color.rgb2hed
    od = np.log(np.maximum(a, 1e-6)) / np.log(1e-6)
    return np.maximum(od @ HED_FROM_RGB, 0)


def pool2(x):
    h, w = x.shape
    return x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean((1, 3))


def lbp(x):  # rotation-invariant uniform LBP over the 3x3 ring, neighbour >= centre
    c = x[1:-1, 1:-1]
    ring = [x[0:-2, 0:-2], x[0:-2, 1:-1], x[0:-2, 2:], x[1:-1, 2:], x[2:, 2:], x[2:, 1:-1], x[2:, 0:-2], x[1:-1, 0:-2]]
    bits = np.stack([n >= c for n in ring]).astype(np.int32)
    ones = bits.sum(0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(0)
    code = np.where(transitions <= 2, ones, 9)
    return list(np.bincount(code.ravel(), minlength=10) / code.size)


def gradient(x):
    gy, gx = np.gradient(x)
    m = np.hypot(gx, gy)
    return [m.mean(), m.std(), np.percentile(m, 90)]


def features(a):  # a: (S,S,3) RGB in [0,1]
    hed = rgb2hed(a)
    f = []
    for c in range(3):
        ch = hed[..., c]
        f += list(np.percentile(ch, [5, 25, 50, 75, 95])) + [ch.mean(), ch.std()]
    for c in range(3):
        f += list(np.histogram(a[..., c], bins=8, range=(0, 1))[0] / a[..., c].size)
    for img in (a.mean(2), hed[..., 0]):
        x = img
        for scale in range(3):
            f += lbp(x) + gradient(x)
            if scale < 2:
                x = pool2(x)
    return [float(v) for v in f]


if __name__ == "__main__":
    rng = np.random.default_rng(7)
    S = 32
    yy, xx = np.mgrid[0:S, 0:S] / S
    # Pink stroma with purple nuclei-like blobs and some noise.
    base = np.stack([0.85 - 0.1 * yy, 0.55 + 0.1 * xx, 0.75 + 0.05 * np.sin(6 * xx)], -1)
    blobs = np.exp(-(((xx - 0.3) ** 2 + (yy - 0.4) ** 2) / 0.01)) + np.exp(-(((xx - 0.7) ** 2 + (yy - 0.7) ** 2) / 0.02))
    a = base - blobs[..., None] * np.array([0.45, 0.35, 0.1]) + rng.normal(0, 0.03, (S, S, 3))
    a = np.clip(a, 0, 1).astype(np.float32).astype(np.float64)
    out = {"size": S, "rgb_planar": [float(v) for v in a.transpose(2, 0, 1).ravel()], "features": features(a)}
    assert len(out["features"]) == 123
    path = os.path.join(os.path.dirname(__file__), "../../Tests/EosinModelsTests/Fixtures/tissue-features.json")
    with open(path, "w") as fh:
        json.dump(out, fh)
    print("wrote", os.path.normpath(path))

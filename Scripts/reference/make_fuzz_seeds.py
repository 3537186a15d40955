"""Writes the hand-made fuzz seeds in Fuzz/seeds/ (run once; needs Pillow): tiny PNG, JPEG and
TIFF images in several layouts, three small safetensors files, a tokenizer.json cut from the test
vocabulary, and a report manifest with a quoted path, a repeated row and a bad mpp. The other
seeds are assembled by `make fuzz-seeds` from files the project already has."""
import io, json, struct
from PIL import Image

root = "Fuzz/seeds"

def st(tensors, meta=None):
    hdr, data = {}, b""
    for name, (dt, shape, raw) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data

open(f"{root}/safetensors/two.safetensors", "wb").write(st({
    "a.weight": ("F32", [2, 3], struct.pack("<6f", *range(6))), "b": ("F16", [4], b"\x00\x3c" * 4),
    "c": ("BF16", [2], b"\x80\x3f" * 2)}, {"format": "pt"}))
open(f"{root}/safetensors/empty.safetensors", "wb").write(st({}))
open(f"{root}/safetensors/i64.safetensors", "wb").write(st({"ids": ("I64", [3], struct.pack("<3q", 1, 2, 3))}))

fx = "Tests/EosinTokenizerTests/Fixtures/small-bpe"
vocab = json.load(open(f"{fx}/vocab.json"))
merges = open(f"{fx}/merges.txt").read().split("\n")[1:40]
small = {k: i for k, i in list(vocab.items())[:300]}
hf = {"model": {"type": "BPE", "vocab": small, "merges": [m for m in merges if m.strip()]},
      "added_tokens": [{"content": "<|endoftext|>", "id": len(small)}]}
open(f"{root}/tokenizer/tokenizer.json", "w").write(json.dumps(hf, indent=0) + "\n")

open(f"{root}/documents/manifest.csv", "w").write('slide,mpp,case\na.svs,0.5,1\n"b c.svs",,2\na.svs,,3\n/abs/d.ndpi,x,4\n')

im = Image.new("RGB", (24, 16))
px = im.load()
for y in range(16):
    for x in range(24):
        px[x, y] = (200 - x * 3, 120 + y * 4, 190)
def save(img, name, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    open(f"{root}/image/{name}", "wb").write(b.getvalue())
save(im, "tiny.png", "PNG"); save(im, "tiny.jpg", "JPEG"); save(im, "tiny.tif", "TIFF")
save(im.convert("L"), "grey.png", "PNG"); save(im.convert("RGBA"), "rgba.png", "PNG")
save(im, "progressive.jpg", "JPEG", progressive=True); save(im, "deflate.tif", "TIFF", compression="tiff_deflate")

"""Runs Eosin's encoder and decoder benchmarks, then PyTorch on the same shapes and thread count,
right after, and prints the ratios. Random weights at real sizes; medians.

    python3 Benchmarks/compare.py [--eosin .build/release/eosin] [--quick] [--only encoder|decoder|train|busy]

Encoders: Eosin fp32 and bf16 (`eosin bench encoder --precision both`) against PyTorch fp32 and
PyTorch under `torch.autocast("cpu", dtype=torch.bfloat16)`, on ViT-B/16 (CLIP, batch 32 and 1),
and, when timm is installed, ViT-L/16 (UNI's shape) and ViT-H/14 with SwiGLU and 4 registers
(Virchow2's shape). `--only busy` reruns Eosin's benchmarks with a busy-loop process beside them
and prints each one's share of its quiet speed.

Training is measured as three alternating Eosin/PyTorch pairs; the ratio is the median of the
three paired ratios, so a noisy moment on this machine hits both sides of one pair.

Needs torch (pip install 'torch==2.13.0+cpu') and transformers. Not part of `swift test`.
"""
import argparse, json, os, statistics, subprocess, time
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument("--eosin", default=".build/release/eosin")
p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
p.add_argument("--only", choices=["encoder", "decoder", "train", "busy"], help="run one group")
a = p.parse_args()
threads = os.cpu_count()
torch.set_num_threads(threads)

def eosin(args):
    out = subprocess.run([a.eosin, "bench"] + args + ["--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

VIT = {"vit-b-16": dict(patch_size=16), "vit-b-32": dict(patch_size=32),
       "vit-s-16": dict(patch_size=16, hidden_size=384, intermediate_size=1536, num_attention_heads=6)}

def torch_model(arch):
    if arch in VIT:
        cfg = CLIPVisionConfig(image_size=224, hidden_act="quick_gelu", projection_dim=512, **VIT[arch])
        m = CLIPVisionModelWithProjection(cfg).eval()
        return lambda x: m(pixel_values=x)
    import timm, timm.layers
    if arch == "vit-l-16":
        m = timm.create_model("vit_large_patch16_224", init_values=1e-5, num_classes=0)
    else:  # vit-h-14-swiglu, Virchow2's configuration
        m = timm.create_model("vit_huge_patch14_224", init_values=1e-5, num_classes=0, mlp_ratio=5.3375, reg_tokens=4,
                              mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)
    m = m.eval()
    return lambda x: m(x)

def torch_vit(arch, batch, repeats, bf16=False):
    f = torch_model(arch)
    x = torch.randn(batch, 3, 224, 224)
    ts = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        f(x)
        for _ in range(repeats):
            t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
    return batch / statistics.median(ts)

try:
    import timm  # noqa: F401
    HAVE_TIMM = True
except Exception:
    HAVE_TIMM = False

def torch_gpt2(prompt, tokens, repeats):
    m = GPT2LMHeadModel(GPT2Config()).eval()
    ids = torch.arange(prompt).unsqueeze(0) * 31 % 50257
    rates = []
    with torch.inference_mode():
        for r in range(repeats + 1):
            out = m(ids, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            for _ in range(tokens):
                out = m(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            if r: rates.append(tokens / (time.perf_counter() - t))
    return statistics.median(rates)

rows = []
shapes = [("vit-b-16", 32), ("vit-b-16", 1)] if a.quick else [("vit-b-16", 32), ("vit-b-16", 1), ("vit-b-32", 32), ("vit-s-16", 32)]
if HAVE_TIMM and not a.quick:
    shapes += [("vit-l-16", 8), ("vit-l-16", 1), ("vit-h-14-swiglu", 4), ("vit-h-14-swiglu", 1)]
if a.only not in (None, "encoder"): shapes = []
for arch, batch in shapes:
    reps = 2 if batch > 1 else 5
    e = eosin(["encoder", "--arch", arch, "--batch", str(batch), "--repeats", str(reps), "--precision", "both"])
    t = torch_vit(arch, batch, reps)
    tb = torch_vit(arch, batch, reps, bf16=True)
    peak = e["sgemm_peak_gflops"]
    rows.append((f"{arch} batch {batch}, fp32", f"{e['fp32_img_per_s']:.2f} img/s", f"{t:.2f} img/s", e["fp32_img_per_s"] / t,
                 f"{e['fp32_gflops']:.0f} GFLOP/s = {e['fp32_gflops'] / peak:.2f} of sgemm peak ({e['mode']})"))
    rows.append((f"{arch} batch {batch}, Eosin bf16 vs PyTorch fp32", f"{e['bf16_img_per_s']:.2f} img/s", f"{t:.2f} img/s",
                 e["bf16_img_per_s"] / t, f"{e['bf16_gflops']:.0f} GFLOP/s"))
    rows.append((f"{arch} batch {batch}, Eosin bf16 vs PyTorch autocast bf16", f"{e['bf16_img_per_s']:.2f} img/s",
                 f"{tb:.2f} img/s", e["bf16_img_per_s"] / tb, "torch.autocast(\"cpu\", dtype=torch.bfloat16)"))
if a.only == "busy":
    for args, key in [(["encoder", "--arch", "vit-b-16", "--batch", "1", "--repeats", "5"], "img_per_s"),
                      (["encoder", "--arch", "vit-b-16", "--batch", "32", "--repeats", "2"], "img_per_s")]:
        e = eosin(args + ["--precision", "both", "--busy-neighbour"])
        for prec in ("fp32", "bf16"):
            q, b = e[f"{prec}_{key}"], e[f"{prec}_busy_{key}"]
            rows.append((f"{' '.join(args[:5])} {prec}, one core busy", f"{b:.2f} img/s", f"quiet {q:.2f}", b / q,
                         "share of the quiet speed (target >= 0.45)"))
if a.only == "busy":
  e = eosin(["decoder", "--arch", "gpt2-124m", "--repeats", "3", "--busy-neighbour"])
  rows.append(("gpt2-124m decode, one core busy", f"{e['busy_tok_per_s']:.1f} tok/s", f"quiet {e['tok_per_s']:.1f}",
               e["busy_tok_per_s"] / e["tok_per_s"], "share of the quiet speed (target >= 0.45)"))
if a.only in (None, "decoder"):
  e = eosin(["decoder", "--arch", "gpt2-124m", "--repeats", "3"])
  t = torch_gpt2(16, 128, 3)
  rows.append(("gpt2-124m decode", f"{e['tok_per_s']:.1f} tok/s", f"{t:.1f} tok/s", e["tok_per_s"] / t,
             f"{e['tok_per_s'] / e['bound_tok_per_s']:.2f} of read-bandwidth bound ({e['bandwidth_gbs']:.1f} GB/s)"))
# CLIP training at Eosin's default architecture and batch.
from transformers import CLIPConfig, CLIPModel
def torch_train(batch, steps, size=160):
    cfg = CLIPConfig(projection_dim=128,
                     vision_config=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=6, num_attention_heads=3, image_size=size, patch_size=16, hidden_act="quick_gelu"),
                     text_config=dict(vocab_size=8192, hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3, max_position_embeddings=40, hidden_act="quick_gelu", eos_token_id=8187))
    m = CLIPModel(cfg).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    px = torch.randn(batch, 3, size, size)
    ids = torch.randint(0, 8000, (batch, 40)); ids[:, -1] = 8187
    lab = torch.arange(batch)
    rates = []
    for s in range(steps + 1):
        t = time.perf_counter()
        out = m(input_ids=ids, pixel_values=px)
        loss = (torch.nn.functional.cross_entropy(out.logits_per_image, lab) + torch.nn.functional.cross_entropy(out.logits_per_text, lab)) / 2
        opt.zero_grad(); loss.backward(); opt.step()
        if s: rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)
if a.only in (None, "train"):
  pairs = []
  for _ in range(3):
    e = eosin(["train-clip", "--batch", "64", "--steps", "3", "--image-size", "160"])["img_per_s"]
    pairs.append((e, torch_train(64, 3)))
  e, t = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
  rows.append(("CLIP training, batch 64", f"{e:.1f} img/s", f"{t:.1f} img/s", statistics.median(p[0] / p[1] for p in pairs),
               "ViT 6x192 @160 px (eosin-small-v2) + text 4x192, forward + backward + AdamW; median of 3 alternating pairs"))
print(f"torch {torch.__version__}, {threads} threads\n")
print("| shape | Eosin | PyTorch | ratio | note |\n|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | **{r[3]:.2f}x** | {r[4]} |")

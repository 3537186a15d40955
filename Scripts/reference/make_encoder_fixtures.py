"""Tiny random image encoders in the layouts the public pathology models are published in, with
their reference embeddings, for `swift test` (EncoderParityTests).

Each folder under Tests/EosinModelsTests/Fixtures/encoders/ is what a user would download:
- timm-l16: timm hub layout (config.json with architecture, model_args, pretrained_cfg), UNI's
  recipe (LayerScale, dynamic_img_size) at a tiny width, weights as pytorch_model.bin;
- timm-h14-reg: Virchow2's recipe (patch 14, 4 register tokens, SwiGLUPacked with SiLU,
  global_pool "", so the embedding is concat(CLS, mean of patch tokens)), model.safetensors,
  run at a larger input than its position grid (interpolated);
- timm-g14-reg-dinov2: vit_giant_patch14_reg4_dinov2 (no_embed_class, registers), weights in
  sharded safetensors with an index;
- hf-dinov2: transformers Dinov2Model (Phikon-v2), interpolated positions;
- hf-vit: transformers ViTModel (Phikon), pytorch_model.bin;
- openclip-vit: open_clip ViT CLIP (image and text towers), open_clip_pytorch_model.bin;
- openclip-coca: open_clip CoCa image tower with its attentional pooler;
- evil: a pytorch_model.bin whose pickle calls os.system (must be refused, never run).

Each folder's io.safetensors holds `pixels` (B,3,S,S, already preprocessed) and `embedding`
(B,D), the family's standard embedding; open_clip-vit also `text_ids` and `text_embedding`.

Needs torch (CPU), timm, open_clip_torch, transformers, safetensors in a separate venv.
Run: python Scripts/reference/make_encoder_fixtures.py
"""
import json
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "EosinModelsTests", "Fixtures", "encoders")


def folder(name):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def randomize(model, seed):
    # Non-trivial values everywhere (LayerScale gammas and norms included), so every tensor matters.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in n or n.endswith("gamma") or "ln" in n or "lambda" in n):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def io(d, pixels, emb, **extra):
    t = {"pixels": pixels.contiguous(), "embedding": emb.contiguous()}
    t.update({k: v.contiguous() for k, v in extra.items()})
    save_file(t, os.path.join(d, "io.safetensors"))


def pixels(seed, b, s):
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def timm_fixture(name, arch, model_args, input_size, seed, fmt, pool_rule):
    import timm
    import timm.layers

    d = folder(name)
    m = randomize(timm.create_model(arch, pretrained=False, **model_args), seed)
    cfg_args = dict(model_args)
    # The hub's config.json names classes by their import path (Virchow2's does exactly this).
    names = {timm.layers.SwiGLUPacked: "timm.layers.SwiGLUPacked", torch.nn.SiLU: "torch.nn.SiLU"}
    for k in ("mlp_layer", "act_layer"):
        if k in cfg_args:
            cfg_args[k] = names[cfg_args[k]]
    cfg = {
        "architecture": arch,
        "num_classes": 0,
        "num_features": m.num_features,
        "global_pool": model_args.get("global_pool", "token"),
        "model_args": cfg_args,
        "pretrained_cfg": {
            "tag": "eosin-fixture",
            "custom_load": False,
            "input_size": [3, input_size, input_size],
            "fixed_input_size": False,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 0,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    if fmt == "bin":
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    elif fmt == "safetensors":
        save_file(sd, os.path.join(d, "model.safetensors"))
    else:  # sharded
        names = sorted(sd)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        wm = {}
        for f, ns in shards.items():
            save_file({n: sd[n] for n in ns}, os.path.join(d, f))
            wm.update({n: f for n in ns})
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    x = pixels(seed + 1, 2, input_size)
    with torch.no_grad():
        if pool_rule == "cls+mean":
            out = m(x)  # global_pool "": all tokens after the final norm
            emb = torch.cat([out[:, 0], out[:, m.num_prefix_tokens:].mean(1)], dim=-1)
        else:
            emb = m.forward_head(m.forward_features(x), pre_logits=True)
    io(d, x, emb)


def hf_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    d = folder("hf-dinov2")
    cfg = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, image_size=28, patch_size=14,
        layerscale_value=0.5)
    m = randomize(Dinov2Model(cfg), 31)
    m.save_pretrained(d)
    json.dump(
        {"crop_size": {"height": 42, "width": 42}, "do_center_crop": True, "do_normalize": True, "do_resize": True,
         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
         "size": {"shortest_edge": 42}, "image_processor_type": "BitImageProcessor"},
        open(os.path.join(d, "preprocessor_config.json"), "w"), indent=2)
    x = pixels(32, 2, 42)
    with torch.no_grad():
        emb = m(pixel_values=x).last_hidden_state[:, 0]
    io(d, x, emb)


def hf_vit():
    from transformers import ViTConfig, ViTModel

    d = folder("hf-vit")
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=16)
    m = randomize(ViTModel(cfg, add_pooling_layer=False), 41)
    m.save_pretrained(d)
    # Phikon is published as pytorch_model.bin with transformers 4 names; transformers 5 writes
    # safetensors with new names (kept in hf-vit-v5, the same weights).
    d5 = folder("hf-vit-v5")
    for f in os.listdir(d):
        shutil.copy(os.path.join(d, f), d5)
    os.remove(os.path.join(d, "model.safetensors"))
    v4 = {}
    for k, v in m.state_dict().items():
        k4 = k
        if k.startswith("layers."):
            i, rest = k[len("layers."):].split(".", 1)
            rest = (rest.replace("attention.q_proj", "attention.attention.query")
                    .replace("attention.k_proj", "attention.attention.key")
                    .replace("attention.v_proj", "attention.attention.value")
                    .replace("attention.o_proj", "attention.output.dense")
                    .replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense"))
            k4 = f"encoder.layer.{i}.{rest}"
        v4[k4] = v.contiguous()
    torch.save(v4, os.path.join(d, "pytorch_model.bin"))
    json.dump(
        {"do_normalize": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
         "resample": 2, "size": {"height": 32, "width": 32}, "image_processor_type": "ViTImageProcessor"},
        open(os.path.join(d, "preprocessor_config.json"), "w"), indent=2)
    x = pixels(42, 2, 32)
    with torch.no_grad():
        emb = m(pixel_values=x).last_hidden_state[:, 0]
    io(d, x, emb)
    shutil.copy(os.path.join(d, "io.safetensors"), d5)


def openclip(name, model_cfg, seed):
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    d = folder(name)
    key = "eosin-fixture-" + name
    _MODEL_CONFIGS[key] = model_cfg
    m = open_clip.create_model(key, pretrained=None)
    randomize(m, seed)
    pre = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
           "interpolation": "bicubic", "resize_mode": "shortest"}
    json.dump({"model_cfg": model_cfg, "preprocess_cfg": pre}, open(os.path.join(d, "open_clip_config.json"), "w"), indent=2)
    torch.save({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(d, "open_clip_pytorch_model.bin"))
    S = model_cfg["vision_cfg"]["image_size"]
    x = pixels(seed + 1, 2, S)
    extra = {}
    with torch.no_grad():
        emb = m.encode_image(x, normalize=True)
        if "multimodal_cfg" not in model_cfg:
            ctx = model_cfg["text_cfg"]["context_length"]
            V = model_cfg["text_cfg"]["vocab_size"]
            ids = torch.zeros(2, ctx, dtype=torch.long)
            ids[0, :5] = torch.tensor([V - 2, 5, 9, 3, V - 1])
            ids[1, :7] = torch.tensor([V - 2, 11, 4, 8, 20, 6, V - 1])
            extra = {"text_ids": ids.to(torch.int32), "text_embedding": m.encode_text(ids, normalize=True)}
    io(d, x, emb, **extra)


def evil():
    d = folder("evil")

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/eosin-evil-pickle-ran",))

    torch.save({"weight": Boom()}, os.path.join(d, "pytorch_model.bin"))
    json.dump({"architecture": "vit_large_patch16_224", "model_args": {"embed_dim": 32, "depth": 1, "num_heads": 2}},
              open(os.path.join(d, "config.json"), "w"))


def fuzz_seeds():
    # Small PyTorch archives for TorchArchiveTests, also the seeds of `make fuzz` (FuzzTorch):
    # f32, bf16 and f16 storages, a strided view (the transpose of a matrix), a parameter, and a
    # nested state_dict.
    d = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "EosinWeightsTests", "Fixtures", "torch")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    g = torch.Generator().manual_seed(7)
    m = torch.randn(3, 4, generator=g)
    sd = {"w": m, "wt": m.t(), "b": torch.randn(4, generator=g).to(torch.bfloat16),
          "h": torch.randn(2, 2, generator=g).half(), "p": torch.nn.Parameter(torch.ones(2)), "n": torch.tensor(3)}
    torch.save(sd, os.path.join(d, "small.bin"))
    torch.save({"state_dict": {"x": torch.zeros(2, 3)}}, os.path.join(d, "nested.bin"))


if __name__ == "__main__":
    fuzz_seeds()
    import timm.layers

    timm_fixture("timm-l16", "vit_large_patch16_224",
                 dict(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, init_values=0.5, num_classes=0,
                      dynamic_img_size=True),
                 48, 11, "bin", "token")
    timm_fixture("timm-h14-reg", "vit_huge_patch14_224",
                 dict(img_size=28, embed_dim=32, depth=2, num_heads=2, init_values=0.5, num_classes=0, mlp_ratio=5.3375,
                      reg_tokens=4, global_pool="", dynamic_img_size=True, mlp_layer=timm.layers.SwiGLUPacked,
                      act_layer=torch.nn.SiLU),
                 42, 21, "safetensors", "cls+mean")
    timm_fixture("timm-g14-reg-dinov2", "vit_giant_patch14_reg4_dinov2",
                 dict(img_size=28, embed_dim=48, depth=2, num_heads=3, num_classes=0, dynamic_img_size=True),
                 42, 25, "sharded", "token")
    hf_dinov2()
    hf_vit()
    openclip("openclip-vit", {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 64, "width": 32, "heads": 2, "layers": 2},
    }, 51)
    openclip("openclip-coca", {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16,
                       "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
        "text_cfg": {"context_length": 12, "vocab_size": 64, "layers": 2, "heads": 2, "width": 32, "embed_cls": True,
                     "output_tokens": True},
        "multimodal_cfg": {"context_length": 12, "vocab_size": 64, "width": 32, "heads": 2, "layers": 2},
        "custom_text": True,
    }, 61)
    evil()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")

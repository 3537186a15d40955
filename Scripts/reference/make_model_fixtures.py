"""Writes the parity fixtures for EosinModels: a tiny random HF CLIPModel, a tiny GPT2LMHeadModel
and a 2-layer projector, their inputs, and the reference outputs.

Run once from the project root (needs torch 2.13 cpu and transformers):
    python3 Scripts/reference/make_model_fixtures.py
Outputs go to Tests/EosinModelsTests/Fixtures/ (a few hundred KB). The Swift tests then need
neither Python nor network.
"""
import json, os
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, GPT2Config, GPT2LMHeadModel

OUT = "Tests/EosinModelsTests/Fixtures"
torch.manual_seed(0)
os.makedirs(OUT, exist_ok=True)


def save_checkpoint(model, name, config):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    # HF drops tied/duplicate weights on save; do the same so the loader sees real checkpoints.
    sd.pop("lm_head.weight", None)
    save_file(sd, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)


# ---- CLIP ----
cc = CLIPConfig(
    text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
                     eos_token_id=99, bos_token_id=98, pad_token_id=0),
    vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8, hidden_act="quick_gelu"),
    projection_dim=24,
)
clip = CLIPModel(cc).eval()
with torch.no_grad():
    for p in clip.parameters():  # wider than the default init so errors show up
        p.add_(torch.randn_like(p) * 0.02)
    clip.logit_scale.fill_(2.6592)
cfg = cc.to_dict()
keep = {"projection_dim", "logit_scale_init_value", "text_config", "vision_config", "model_type"}
cfg = {k: v for k, v in cfg.items() if k in keep}
save_checkpoint(clip, "tiny-clip", cfg)
pixel = torch.randn(2, 3, 32, 32)
ids = torch.tensor([[98, 5, 17, 33, 99, 0, 0, 0], [98, 64, 2, 7, 8, 41, 12, 99]])
with torch.no_grad():
    out = clip(input_ids=ids, pixel_values=pixel)
    img_raw = clip.get_image_features(pixel_values=pixel)
    txt_raw = clip.get_text_features(input_ids=ids)
    if not torch.is_tensor(img_raw):
        img_raw = img_raw.pooler_output if hasattr(img_raw, "pooler_output") else img_raw[0]
    if not torch.is_tensor(txt_raw):
        txt_raw = txt_raw.pooler_output if hasattr(txt_raw, "pooler_output") else txt_raw[0]
save_file({
    "pixel_values": pixel.contiguous(),
    "input_ids": ids.to(torch.float32).contiguous(),
    "image_embeds": out.image_embeds.contiguous(),
    "text_embeds": out.text_embeds.contiguous(),
    "image_features": img_raw.contiguous(),
    "text_features": txt_raw.contiguous(),
    "logits_per_image": out.logits_per_image.contiguous(),
    "logit_scale": clip.logit_scale.detach().reshape(1).contiguous(),
}, os.path.join(OUT, "tiny-clip-io.safetensors"))

# ---- GPT-2 ----
gc = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                activation_function="gelu_new", bos_token_id=0, eos_token_id=1, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
gpt = GPT2LMHeadModel(gc).eval()
with torch.no_grad():
    for p in gpt.parameters():
        p.add_(torch.randn_like(p) * 0.25)
gcfg = {k: v for k, v in gc.to_dict().items() if k in
        {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
         "layer_norm_epsilon", "model_type", "bos_token_id", "eos_token_id"}}
save_checkpoint(gpt, "tiny-gpt2", gcfg)
prompt = torch.tensor([[5, 17, 33, 2, 71, 9]])
with torch.no_grad():
    logits = gpt(prompt).logits
    gen = gpt.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
save_file({
    "prompt": prompt.to(torch.float32).contiguous(),
    "logits": logits.contiguous(),
    "greedy": gen[0, prompt.shape[1]:].to(torch.float32).contiguous(),
}, os.path.join(OUT, "tiny-gpt2-io.safetensors"))

# ---- Projector: Linear -> GELU -> Linear (image width 24 -> decoder width 32) ----
proj = torch.nn.Sequential(torch.nn.Linear(24, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
x = torch.randn(5, 24)
with torch.no_grad():
    y = proj(x)
save_file({"mm_projector.0.weight": proj[0].weight.detach(), "mm_projector.0.bias": proj[0].bias.detach(),
           "mm_projector.2.weight": proj[2].weight.detach(), "mm_projector.2.bias": proj[2].bias.detach(),
           "input": x, "output": y}, os.path.join(OUT, "projector-io.safetensors"))
print("wrote fixtures to", OUT)

# ---- CLIP training parity: contrastive loss gradients, then 10 AdamW steps ----
def clip_loss(model, ids, pixel):
    out = model(input_ids=ids, pixel_values=pixel)
    labels = torch.arange(ids.shape[0])
    ce = torch.nn.functional.cross_entropy
    return (ce(out.logits_per_image, labels) + ce(out.logits_per_text, labels)) / 2

clip.train()
clip.zero_grad()
loss = clip_loss(clip, ids, pixel)
loss.backward()
grads = {"grad." + k: p.grad.detach().clone().contiguous() for k, p in clip.named_parameters() if p.grad is not None}
grads["loss0"] = loss.detach().reshape(1)
opt = torch.optim.AdamW(clip.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
losses = []
clip.zero_grad()
for _ in range(10):
    l = clip_loss(clip, ids, pixel)
    losses.append(l.item())
    opt.zero_grad()
    l.backward()
    opt.step()
grads["adamw_losses"] = torch.tensor(losses)
save_file(grads, os.path.join(OUT, "tiny-clip-grads.safetensors"))
print("wrote CLIP gradient fixtures")

# ---- GPT-2 training parity: LM loss gradients, then 10 AdamW steps ----
gpt.train()
seq = torch.tensor([[5, 17, 33, 2, 71, 9, 40, 41, 3, 88, 12, 64]])
gpt.zero_grad()
out = gpt(seq, labels=seq)
out.loss.backward()
g2 = {"grad." + k: p.grad.detach().clone().contiguous() for k, p in gpt.named_parameters() if p.grad is not None}
g2["loss0"] = out.loss.detach().reshape(1)
g2["seq"] = seq.to(torch.float32)
opt = torch.optim.AdamW(gpt.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
losses = []
for _ in range(10):
    l = gpt(seq, labels=seq).loss
    losses.append(l.item())
    opt.zero_grad(); l.backward(); opt.step()
g2["adamw_losses"] = torch.tensor(losses)
save_file(g2, os.path.join(OUT, "tiny-gpt2-grads.safetensors"))
print("wrote GPT-2 gradient fixtures")

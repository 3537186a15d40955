"""Gradient parity fixtures for the backward pass through a frozen LLaMA-family model
(LlamaModel.inputGradient): the loss of next-token targets and its gradient with respect to the
input embeddings, from transformers on the tiny GGUF fixtures (which it dequantises to fp32).

    pip install 'torch==2.13.0+cpu' transformers gguf safetensors
    python3 Scripts/reference/make_llama_grad_fixtures.py

Writes Tests/EosinModelsTests/Fixtures/gguf/grad-NAME.safetensors for tiny-llama-F32,
tiny-qwen2-F32 (q/k/v biases, NeoX rope) and tiny-llama-Q4_1 (quantised weights):
`embeddings` (T, C), `targets` (T, -1 = not counted), `loss` (), `grad` (T, C).
"""
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

D = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "EosinModelsTests", "Fixtures", "gguf")

for name in ["tiny-llama-F32", "tiny-qwen2-F32", "tiny-llama-Q4_1"]:
    m = AutoModelForCausalLM.from_pretrained(D, gguf_file=name + ".gguf", torch_dtype=torch.float32).eval()
    C, V = m.config.hidden_size, m.config.vocab_size
    g = torch.Generator().manual_seed(11)
    T = 12
    x = (0.5 * torch.randn(1, T, C, generator=g)).requires_grad_(True)
    targets = torch.randint(0, V, (T,), generator=g)
    targets[3] = -1
    targets[7] = -1
    logits = m(inputs_embeds=x).logits[0]
    mask = targets >= 0
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    loss.backward()
    save_file({"embeddings": x.detach()[0].contiguous(), "targets": targets.to(torch.float32), "loss": loss.detach().reshape(()),
               "grad": x.grad[0].contiguous()}, os.path.join(D, f"grad-{name}.safetensors"))
    print(name, float(loss), float(x.grad.abs().max()))

# Low-rank adapters (LoRA, rank 4, alpha 8) on q_proj and v_proj of every layer, B nonzero so every
# gradient flows: grad-lora-NAME.safetensors holds the inputs as above plus each adapter under
# PEFT's name and its gradient under "grad." + that name. Metadata: lora_rank, lora_alpha.
RANK, ALPHA = 4, 8.0


class LoRALinear(torch.nn.Module):
    def __init__(self, base, g):
        super().__init__()
        self.base = base
        self.A = torch.nn.Parameter(0.3 * torch.randn(RANK, base.in_features, generator=g))
        self.B = torch.nn.Parameter(0.3 * torch.randn(base.out_features, RANK, generator=g))

    def forward(self, x):
        return self.base(x) + (ALPHA / RANK) * (x @ self.A.T) @ self.B.T


for name in ["tiny-llama-F32", "tiny-qwen2-F32"]:
    m = AutoModelForCausalLM.from_pretrained(D, gguf_file=name + ".gguf", torch_dtype=torch.float32).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    C, V = m.config.hidden_size, m.config.vocab_size
    g = torch.Generator().manual_seed(12)
    adapters = {}
    for i, layer in enumerate(m.model.layers):
        for proj in ["q_proj", "v_proj"]:
            w = LoRALinear(getattr(layer.self_attn, proj), g)
            setattr(layer.self_attn, proj, w)
            adapters[f"base_model.model.model.layers.{i}.self_attn.{proj}"] = w
    T = 12
    x = (0.5 * torch.randn(1, T, C, generator=g)).requires_grad_(True)
    targets = torch.randint(0, V, (T,), generator=g)
    targets[2] = -1
    logits = m(inputs_embeds=x).logits[0]
    mask = targets >= 0
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    loss.backward()
    out = {"embeddings": x.detach()[0].contiguous(), "targets": targets.to(torch.float32), "loss": loss.detach().reshape(()),
           "grad": x.grad[0].contiguous()}
    for k, w in adapters.items():
        out[k + ".lora_A.weight"] = w.A.detach().contiguous()
        out[k + ".lora_B.weight"] = w.B.detach().contiguous()
        out["grad." + k + ".lora_A.weight"] = w.A.grad.contiguous()
        out["grad." + k + ".lora_B.weight"] = w.B.grad.contiguous()
    save_file(out, os.path.join(D, f"grad-lora-{name}.safetensors"), metadata={"lora_rank": str(RANK), "lora_alpha": str(ALPHA)})
    print("lora", name, float(loss), float(x.grad.abs().max()))

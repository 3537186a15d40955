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

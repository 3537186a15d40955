"""The CLIP image tower's backbone rows for the out-of-domain model, from HF transformers: for
the committed tiny-clip checkpoint and the pixels of tiny-clip-io.safetensors, the pooled class
token (`pooler_output`, post-norm, before the projection) and the mean of the patch tokens of
`last_hidden_state` (the last block's output, before the post-norm). Eosin's
`CLIPModel.imageEmbeddingsAndBackbone` must match their concatenation.

    pip install 'torch==2.13.0+cpu' transformers safetensors
    python3 Scripts/reference/make_backbone_fixture.py
"""
import os
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPModel

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "EosinModelsTests", "Fixtures")
model = CLIPModel.from_pretrained(os.path.join(FIX, "tiny-clip")).eval()
pixel = load_file(os.path.join(FIX, "tiny-clip-io.safetensors"))["pixel_values"]
with torch.no_grad():
    out = model.vision_model(pixel_values=pixel)
    backbone = torch.cat([out.pooler_output, out.last_hidden_state[:, 1:].mean(1)], 1)
save_file({"backbone": backbone.contiguous()}, os.path.join(FIX, "tiny-clip-backbone.safetensors"))
print(backbone.shape)

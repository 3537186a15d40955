"""Writes the GGUF parity fixtures for Eosin's LLaMA-family engine (run once; outputs committed).

    python3 -m venv .venv-ref && . .venv-ref/bin/activate
    pip install 'torch==2.13.0+cpu' transformers accelerate gguf
    python3 Scripts/reference/make_gguf_fixtures.py

Writes to Tests/EosinModelsTests/Fixtures/gguf/:
  tiny-{llama,qwen2}-{F32,F16,Q8_0,Q4_0,Q4_1}.gguf   2 blocks, width 64, random weights
  tiny-{llama,qwen2}-Q4_K.gguf                       1 block, width 256 (K-quant rows are 256 long)
  tiny-logits.json      per fixture: the input ids and the logits of every position, from
                        transformers' AutoModelForCausalLM.from_pretrained(dir, gguf_file=...),
                        which dequantises the weights to fp32
  quant-blocks.gguf     random blocks of every quantised type (one tensor per type) and
  quant-blocks.json     their dequantisation by gguf-py (the reference for Q5_K and Q6_K too)

The tiny models carry a byte-level vocabulary (256 byte symbols, a few merges, ChatML special
tokens) so that the tokenizer fixtures (make_tokenizer_golden.py) can use them; `llama` files name
the `llama-bpe` pre-tokenizer and `qwen2` files `qwen2`.
"""

import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "EosinModelsTests", "Fixtures", "gguf")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(7)


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def vocabulary():
    """256 byte symbols in byte order, 24 merges, 3 ChatML specials."""
    b2u = bytes_to_unicode()
    toks = [b2u[b] for b in range(256)]
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s"),
                 ("r", "e"), ("a", "t"), ("e", "n"), ("Ġ", "c"), ("Ġ", "w"), ("i", "s"), ("o", "r"), ("e", "s"),
                 ("Ġ", "i"), ("Ġ", "p"), ("Ġ", "o"), ("a", "n"), ("Ġi", "s"), ("in", "g"), ("1", "2"), ("Ċ", "Ċ")]:
        merges.append(f"{a} {b}")
        toks.append(a + b)
    types = [1] * len(toks)
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
        toks.append(s)
        types.append(3)
    return toks, types, merges


def half_block_scales(n_blocks, offset, scale):
    return (rng.uniform(0.5, 1.0, n_blocks) * scale).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)


def random_kquant(t, rows, cols):
    """Valid random K-quant blocks (gguf-py has no K-quant quantiser): sane fp16 scales, random
    packed values."""
    nb = rows * cols // 256
    if t == Q.Q4_K:
        b = rng.integers(0, 256, (nb, 144), dtype=np.uint8)
        b[:, 0:2] = half_block_scales(nb, 0, 2e-3)
        b[:, 2:4] = half_block_scales(nb, 0, 1e-3)
    elif t == Q.Q5_K:
        b = rng.integers(0, 256, (nb, 176), dtype=np.uint8)
        b[:, 0:2] = half_block_scales(nb, 0, 1e-3)
        b[:, 2:4] = half_block_scales(nb, 0, 1e-3)
    elif t == Q.Q6_K:
        b = rng.integers(0, 256, (nb, 210), dtype=np.uint8)
        b[:, 192:208] = rng.integers(-40, 40, (nb, 16), dtype=np.int8).view(np.uint8)
        b[:, 208:210] = half_block_scales(nb, 0, 1e-3)
    else:
        raise ValueError(t)
    return b.reshape(rows, -1)


def encode(w, t):
    """A float matrix (rows, cols) as stored for type t (raw bytes for quantised types)."""
    if t == Q.F32:
        return w.astype(np.float32), None
    if t == Q.F16:
        return w.astype(np.float16), None
    if t in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        return random_kquant(t, *w.shape), t
    return gguf.quants.quantize(w.astype(np.float32), t), t


def write_model(path, arch, t, C, NL, NH, NKV, F):
    toks, types, merges = vocabulary()
    V = len(toks)
    HS = C // NH
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(2048)
    w.add_embedding_length(C)
    w.add_block_count(NL)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(int(t) if t != Q.F32 else 0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe" if arch == "llama" else "qwen2")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(V - 3)
    w.add_eos_token_id(V - 1)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n'}}{% endfor %}")

    def add(name, arr, raw_type=None):
        if raw_type is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_shape=arr.shape, raw_dtype=raw_type)

    def mat(name, rows, cols, std=0.08, qt=t):
        data, raw = encode(rng.normal(0, std, (rows, cols)), qt)
        add(name, data, raw)

    # The embedding is Q8_0 in quantised files (as SmolLM2's tied embedding), else the file type.
    emb_t = Q.Q8_0 if t in (Q.Q4_0, Q.Q4_1, Q.Q4_K) else t
    mat("token_embd.weight", V, C, std=0.5, qt=emb_t)
    for l in range(NL):
        p = f"blk.{l}."
        add(p + "attn_norm.weight", rng.uniform(0.8, 1.2, C).astype(np.float32))
        mat(p + "attn_q.weight", NH * HS, C)
        mat(p + "attn_k.weight", NKV * HS, C)
        mat(p + "attn_v.weight", NKV * HS, C)
        if arch == "qwen2":
            add(p + "attn_q.bias", rng.normal(0, 0.1, NH * HS).astype(np.float32))
            add(p + "attn_k.bias", rng.normal(0, 0.1, NKV * HS).astype(np.float32))
            add(p + "attn_v.bias", rng.normal(0, 0.1, NKV * HS).astype(np.float32))
        mat(p + "attn_output.weight", C, NH * HS)
        add(p + "ffn_norm.weight", rng.uniform(0.8, 1.2, C).astype(np.float32))
        mat(p + "ffn_gate.weight", F, C)
        mat(p + "ffn_up.weight", F, C)
        mat(p + "ffn_down.weight", C, F)
    add("output_norm.weight", rng.uniform(0.8, 1.2, C).astype(np.float32))
    if arch == "qwen2":  # a separate head; llama's is tied
        mat("output.weight", V, C, std=0.1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return V


def reference_logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), torch_dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        out = m(torch.tensor([ids])).logits[0]
    return out.numpy()


def main():
    fixtures = {}
    for arch in ["llama", "qwen2"]:
        for t in [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K]:
            name = f"tiny-{arch}-{t.name}.gguf"
            path = os.path.join(OUT, name)
            if t == Q.Q4_K:
                V = write_model(path, arch, t, C=256, NL=1, NH=4, NKV=2, F=256)
            else:
                V = write_model(path, arch, t, C=64, NL=2, NH=4, NKV=2, F=128)
            ids = [int(x) for x in rng.integers(0, V, 7)]
            logits = reference_logits(path, ids)
            fixtures[name] = {"ids": ids, "vocab": V, "logits": [round(float(x), 6) for x in logits.reshape(-1)]}
            print(name, os.path.getsize(path), "bytes", file=sys.stderr)
    with open(os.path.join(OUT, "tiny-logits.json"), "w") as f:
        json.dump(fixtures, f)

    # Dequantisation reference for every type, two rows of 256.
    w = gguf.GGUFWriter(os.path.join(OUT, "quant-blocks.gguf"), "none")
    ref = {}
    for t in [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
        x = rng.normal(0, 1, (2, 256)).astype(np.float32)
        if t == Q.BF16:
            data = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(2, 512)
            raw = t
        else:
            data, raw = encode(x, t)
        if raw is None:
            w.add_tensor(t.name, data)
            deq = data.astype(np.float32)
        else:
            w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=raw)
            deq = gguf.quants.dequantize(data, raw)
        ref[t.name] = [float(v) for v in deq.reshape(-1)]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(OUT, "quant-blocks.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()

"""Writes the SmolLM2-135M-Instruct final hidden states that chat's hybrid retrieval embeds notes
with (run once; output committed; the model file is never committed).

    # in a venv with: pip install 'torch==2.13.0+cpu' transformers accelerate gguf
    python3 Scripts/reference/make_hidden_reference.py ~/.cache/eosin/models/SmolLM2-135M-Instruct.Q4_1.gguf

For each text, the prompt `This text: "TEXT" means in one word: "` (NoteEmbeddings.prompt), its
token ids (no BOS: the file's add_bos_token is false) and the last token's hidden state after the
final norm (transformers' last `hidden_states`), on the dequantised fp32 weights.

Output: Tests/EosinModelsTests/Fixtures/gguf/smollm2-hidden.json.
"""

import json
import os
import sys

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "EosinModelsTests", "Fixtures", "gguf", "smollm2-hidden.json")
TEXTS = [
    "What is a granuloma?",
    "What is scarring inside an organ called?",
    "fibrosis: Fibrosis is the deposition of collagen-rich scar tissue after injury or chronic inflammation.",
]


def main(path):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    m.eval()
    res = {"texts": [], "transformers": transformers.__version__, "torch": torch.__version__}
    for t in TEXTS:
        prompt = 'This text: "' + t + '" means in one word: "'
        ids = tok(prompt).input_ids
        with torch.no_grad():
            h = m(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
        res["texts"].append({"text": t, "ids": ids, "hidden": [round(float(x), 6) for x in h]})
    with open(OUT, "w") as fp:
        json.dump(res, fp)


if __name__ == "__main__":
    main(sys.argv[1])

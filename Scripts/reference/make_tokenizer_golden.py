"""Writes the GGUF tokenizer golden set from llama.cpp's own tokenizer (run once; output committed).

    python3 -m venv .venv-llama && . .venv-llama/bin/activate
    pip install llama-cpp-python          # builds llama.cpp from source, about 10 minutes
    python3 Scripts/reference/make_tokenizer_golden.py SmolLM2-135M-Instruct.Q4_1.gguf

For every string, the ids of `Llama(model_path, vocab_only=True).tokenize(text, add_bos=True,
special=...)` with special=False and special=True, for the real SmolLM2 file (pre-tokenizer
`smollm`) and for the tiny fixtures (`llama-bpe`, `qwen2`). Not transformers' GGUF conversion: it
ignores `tokenizer.ggml.pre` and so does not split digits as SmolLM2 does.
"""

import json
import os
import sys

import llama_cpp

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "..", "..", "Tests", "EosinModelsTests", "Fixtures", "gguf")


def strings():
    s = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "a", "A", "hello", " hello", "Hello world",
        "Hello  world", "Hello   world!", "hello\tworld", "hello\nworld", "hello\n\nworld", "  leading", "trailing  ",
        "What is a granuloma?", "The Gleason score is 3+4=7.", "Ki-67 index: 15%", "pT2N0M0 (AJCC 8th ed.)",
        "1", "12", "123", "1234", "12345", "123456789", "3.14159", "1,000,000", "-42", "+7", "0.5 mm", "2x3x4 cm",
        "v1.2.3", "2024-11-27", "10:30am", "#1", "$100", "100%", "1e-5", "0x1F", "ABC123def456", "a1b2c3",
        "don't", "Don't", "DON'T", "it's", "It's", "IT'S", "we're", "WE'RE", "they've", "I'm", "you'll", "he'd",
        "'s", "'t", "'re", "''", "'", "\"quoted\"", "'single'", "rock 'n' roll", "o'clock",
        "!", "!!", "?!", "...", "…", "--", "—", "–", "()", "[x]", "{a: b}", "<tag>", "</tag>", "a<b>c", "x<|y",
        "@user", "#hashtag", "a_b_c", "snake_case_name", "camelCaseName", "PascalCase", "kebab-case-name",
        "path/to/file.svs", "C:\\Windows\\path", "https://example.org/a?b=c&d=e", "user@example.com",
        "café", "naïve", "résumé", "Ångström", "straße", "Æsir", "œuvre", "ñandú", "İstanbul", "ß", "ǅ",
        "日本語のテキスト", "中文文本测试", "한국어 텍스트", "Привет мир", "Γειά σου", "שלום", "مرحبا", "नमस्ते", "ภาษาไทย",
        "😀", "😀😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "hello 😀 world", "❤️", "★☆", "→←", "∑∫√∞", "°C", "µm", "×÷", "±",
        "½", "²", "Ⅳ", "①", "٣", "१२३", "〇", "𝔸𝕓𝕔", "\u00a0nbsp", "a\u00a0b", "zero\u200bwidth", "\u3000ideographic",
        "\u2028line", "tab\t\ttabs", "mixed \t\n spaces", "end with newline\n", "\n\nstart", "a\r\nb\r\nc",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n",
        "text<|im_end|>more", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start", "im_start|>", "<|unknown|>", "<repo_name>", "<file_sep>x",
        "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "tHe QuIcK bRoWn",
        "Lung adenocarcinoma, acinar pattern.", "Squamous cell carcinoma with keratin pearls.",
        "Colorectal adenoma with low-grade dysplasia.", "Benign prostatic tissue; no carcinoma identified.",
        "Endometrioid adenocarcinoma, FIGO grade 1.", "H&E stain, 20x magnification, 0.5 µm/px.",
        "mitoses: 5/10 HPF", "CD3+/CD20-", "ER+ PR+ HER2-", "T1N0M0", "p53 (wild-type pattern)",
        "    indented code", "def f(x):\n    return x * 2\n", "for i in range(10): print(i)", "a = b + c; // comment",
        "if (a && b || !c) { x++; }", "SELECT * FROM slides WHERE id = 42;", "<div class=\"x\">y</div>",
        "$$E=mc^2$$", "\\frac{a}{b}", "x^2 + y^2 = z^2", "f(x) = 3x + 2", "α-actinin", "β-catenin", "γδ T cells",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ababababababab", "the the the the", "1111111111",
        "Mr. Smith's 2nd visit", "U.S.A.", "e.g.", "i.e.,", "etc...", "A.B.C.", "a.b.c", "x.y.z()",
        "hello,world", "hello ,world", "hello , world", "a,b;c:d", "(1)(2)(3)", "[[nested]]", "{{jinja}}",
        "{% if x %}", "line1\nline2\nline3", "para1\n\npara2", "   \n   \n", "\t\n\t\n", "?", "¿Qué?", "¡Hola!",
        "Ĭ", "Ġ", "Ċ", "ĠĠ", "\u0100", "\u00ff", "\x7f", "\x01\x02", "a\x00b", "ｆｕｌｌｗｉｄｔｈ", "ﬁ ligature",
        "e\u0301", "n\u0303", "\u0301alone", "Z\u0351\u036b\u0343algo", "\ufeffbom", "\ufffd", "\U0010ffff",
    ]
    # Generated combinations: digits, spaces and letters at every junction.
    for a in ["a", "A", "1", " ", "!", "é", "日", "\n", "'"]:
        for b in ["b", "2", " ", "?", "'s", "\n", "😀"]:
            s.append(a + b + a)
    return s


def golden(path, texts):
    m = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    out = []
    for t in texts:
        b = t.encode("utf-8", errors="surrogatepass")
        out.append({
            "text": t,
            # The UTF-8 bytes too: some JSON readers drop a leading U+FEFF from strings.
            "utf8": list(b),
            "plain": m.tokenize(b, add_bos=True, special=False),
            "special": m.tokenize(b, add_bos=True, special=True),
        })
    return out


def main():
    texts = strings()
    print(len(texts), "strings", file=sys.stderr)
    res = {}
    if len(sys.argv) > 1:
        res["smollm2"] = golden(sys.argv[1], texts)
    res["llama-bpe"] = golden(os.path.join(FIX, "tiny-llama-F32.gguf"), texts)
    res["qwen2"] = golden(os.path.join(FIX, "tiny-qwen2-F32.gguf"), texts)
    res["llama_cpp_python"] = llama_cpp.__version__
    with open(os.path.join(FIX, "tokenizer-golden.json"), "w") as f:
        json.dump(res, f, ensure_ascii=False)


if __name__ == "__main__":
    main()

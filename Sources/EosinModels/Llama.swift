import EosinTensor
import EosinWeights
import Foundation

/// The LLaMA-family architectures Eosin runs from GGUF files.
public enum LlamaArchitecture: String, Sendable, CaseIterable {
  /// SmolLM2, Llama 2 and 3.x: no QKV bias, interleaved rope (GGUF's permuted Q/K).
  case llama
  /// Qwen2 and Qwen2.5: QKV bias, NeoX (halves) rope.
  case qwen2

  /// The GGUF tensor-name table of this architecture: per-block names (with `{N}` for the
  /// block index), global names, and which may be absent.
  public var tensorNames: (global: [String], block: [String], optional: Set<String>) {
    let block = [
      "blk.{N}.attn_norm.weight", "blk.{N}.attn_q.weight", "blk.{N}.attn_k.weight", "blk.{N}.attn_v.weight",
      "blk.{N}.attn_output.weight", "blk.{N}.ffn_norm.weight", "blk.{N}.ffn_gate.weight", "blk.{N}.ffn_up.weight",
      "blk.{N}.ffn_down.weight",
    ]
    switch self {
    case .llama:
      return (
        ["token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight"], block,
        ["output.weight", "rope_freqs.weight"]
      )
    case .qwen2:
      return (
        ["token_embd.weight", "output_norm.weight", "output.weight"],
        block + ["blk.{N}.attn_q.bias", "blk.{N}.attn_k.bias", "blk.{N}.attn_v.bias"], ["output.weight"]
      )
    }
  }

  var rope: RopeLayout { self == .llama ? .interleaved : .halves }
}

/// A LLaMA-family model's hyper-parameters, read from GGUF metadata (`{arch}.block_count`, ...).
public struct LlamaConfig: Sendable, Equatable {
  public var architecture: LlamaArchitecture
  public var vocabSize: Int
  public var contextLength: Int
  public var channels: Int
  public var layers: Int
  public var heads: Int
  public var kvHeads: Int
  public var headSize: Int
  public var ffn: Int
  public var ropeBase: Float
  public var ropeDims: Int
  public var rmsEps: Float
  public var tiedOutput: Bool
}

/// A LLaMA-family decoder (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU, tied or
/// separate output head) running on the quantised weights of a GGUF file, which stay mapped and
/// are never expanded to fp32 whole.
///
/// Decode (one token) runs matrix-vector products on the weight blocks: on the exact path with
/// fp32 activations, or on the q8 path (``Precision/q8``) with activations quantised to int8 as
/// llama.cpp does. Prompts run batched: each weight is dequantised a block of rows at a time and
/// multiplied by sgemm. The model is read-only and may be shared; a ``LlamaState`` is one
/// conversation's KV cache and scratch, not thread-safe.
public final class LlamaModel: @unchecked Sendable {
  /// Activation precision of the matrix-vector products in decode.
  public enum Precision: String, Sendable, CaseIterable {
    /// fp32 activations (matches transformers on the dequantised weights).
    case exact
    /// int8 activations for Q4_0, Q4_1 and Q8_0 weights (llama.cpp's approach); others exact.
    case q8
  }

  struct Block {
    let attnNorm: [Float]
    let q: QuantMatrix, k: QuantMatrix, v: QuantMatrix, o: QuantMatrix
    let qBias: [Float]?, kBias: [Float]?, vBias: [Float]?
    let ffnNorm: [Float]
    let gate: QuantMatrix, up: QuantMatrix, down: QuantMatrix
  }

  public let file: GGUFFile
  public let config: LlamaConfig
  let tokenEmbedding: QuantMatrix
  let blocks: [Block]
  let outputNorm: [Float]
  let output: QuantMatrix
  let invFreq: [Float]
  /// Bytes of weights read per decoded token (every block, the output head and one embedding row).
  public let weightBytesPerToken: Int
  /// Low-rank adapters on the query and value projections, added to the frozen weights in every
  /// forward pass; nil runs the model as the file has it. Set it before sharing the model.
  public var adapters: LoRAAdapters? = nil

  /// Loads a GGUF file's model with the strict name table of its architecture.
  /// - Throws: ``WeightsError`` naming the file and the unsupported architecture, missing or
  ///   unknown tensor, wrong shape, or inconsistent metadata.
  public init(file: GGUFFile) throws {
    self.file = file
    let path = file.path
    func fail(_ m: String) -> WeightsError { WeightsError.gguf(file: path, message: m) }
    guard let archName = try file.string("general.architecture") else { throw fail("no general.architecture in the metadata") }
    guard let arch = LlamaArchitecture(rawValue: archName) else {
      throw fail(
        "architecture '\(archName)' is not supported (Eosin runs \(LlamaArchitecture.allCases.map(\.rawValue).joined(separator: ", ")))"
      )
    }
    func req(_ k: String) throws -> Int {
      guard let v = try file.int("\(archName).\(k)") else { throw fail("metadata '\(archName).\(k)' is missing") }
      guard v > 0, v < 1 << 24 else { throw fail("metadata '\(archName).\(k)' = \(v) is out of range") }
      return v
    }
    let C = try req("embedding_length"), NL = try req("block_count"), NH = try req("attention.head_count")
    // Every block has several tensors in the file: a block count beyond the tensor count is a
    // damaged header, refused before anything is built per block.
    guard NL <= file.tensorList.count else {
      throw fail("block_count \(NL) is more than the file's \(file.tensorList.count) tensors can hold")
    }
    let NKV = try file.int("\(archName).attention.head_count_kv") ?? NH
    let ffn = try req("feed_forward_length")
    let ctx = try req("context_length")
    guard NKV > 0, NH % NKV == 0 else { throw fail("head_count \(NH) is not a multiple of head_count_kv \(NKV)") }
    let HS = try file.int("\(archName).attention.key_length") ?? (C / NH)
    guard HS > 0, HS % 2 == 0, HS <= 1024 else { throw fail("head size \(HS) is not supported") }
    let ropeDims = try file.int("\(archName).rope.dimension_count") ?? HS
    guard ropeDims > 0, ropeDims <= HS, ropeDims % 2 == 0 else { throw fail("rope.dimension_count \(ropeDims) is invalid") }
    let base = Float(try file.double("\(archName).rope.freq_base") ?? 10000)
    let eps = Float(try file.double("\(archName).attention.layer_norm_rms_epsilon") ?? 1e-5)
    guard let emb = file.tensors["token_embd.weight"], emb.dims.count == 2, emb.dims[0] == C else {
      throw fail("token_embd.weight is missing or not (\(C), vocabulary)")
    }
    let V = emb.dims[1]
    if let n = file.metadata["tokenizer.ggml.tokens"]?.array?.count, n != V {
      throw fail("vocabulary has \(n) tokens but token_embd.weight has \(V) rows")
    }
    let tied = file.tensors["output.weight"] == nil
    config = LlamaConfig(
      architecture: arch, vocabSize: V, contextLength: ctx, channels: C, layers: NL, heads: NH, kvHeads: NKV, headSize: HS,
      ffn: ffn,
      ropeBase: base, ropeDims: ropeDims, rmsEps: eps, tiedOutput: tied)

    // The name table: every tensor in the file must be one of these, with the expected shape.
    let names = arch.tensorNames
    var expected: Set<String> = Set(names.global)
    for l in 0..<NL { for n in names.block { expected.insert(n.replacingOccurrences(of: "{N}", with: "\(l)")) } }
    for t in file.tensorList where !expected.contains(t.name) {
      throw WeightsError.tensor(file: path, tensor: t.name, message: "not a tensor of the '\(archName)' architecture")
    }
    func matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> QuantMatrix {
      guard let t = file.tensors[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
      guard t.dims == [cols, rows] else {
        throw WeightsError.tensor(file: path, tensor: name, message: "expected dims [\(cols), \(rows)], found \(t.dims)")
      }
      return QuantMatrix(type: t.type, rows: rows, cols: cols, data: try file.bytes(name).baseAddress!)
    }
    func vector(_ name: String, _ n: Int) throws -> [Float] {
      guard let t = file.tensors[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
      guard t.dims == [n] else {
        throw WeightsError.tensor(file: path, tensor: name, message: "expected dims [\(n)], found \(t.dims)")
      }
      return try file.tensor(name).data
    }
    tokenEmbedding = try matrix("token_embd.weight", V, C)
    var bs: [Block] = []
    for l in 0..<NL {
      let p = "blk.\(l)."
      let bias = arch == .qwen2
      bs.append(
        Block(
          attnNorm: try vector(p + "attn_norm.weight", C), q: try matrix(p + "attn_q.weight", NH * HS, C),
          k: try matrix(p + "attn_k.weight", NKV * HS, C), v: try matrix(p + "attn_v.weight", NKV * HS, C),
          o: try matrix(p + "attn_output.weight", C, NH * HS), qBias: bias ? try vector(p + "attn_q.bias", NH * HS) : nil,
          kBias: bias ? try vector(p + "attn_k.bias", NKV * HS) : nil,
          vBias: bias ? try vector(p + "attn_v.bias", NKV * HS) : nil,
          ffnNorm: try vector(p + "ffn_norm.weight", C), gate: try matrix(p + "ffn_gate.weight", ffn, C),
          up: try matrix(p + "ffn_up.weight", ffn, C), down: try matrix(p + "ffn_down.weight", C, ffn)))
    }
    blocks = bs
    outputNorm = try vector("output_norm.weight", C)
    output = tied ? tokenEmbedding : try matrix("output.weight", V, C)
    var inv = (0..<(ropeDims / 2)).map { i in 1 / pow(base, Float(2 * i) / Float(ropeDims)) }
    if file.tensors["rope_freqs.weight"] != nil {
      // Llama 3.1 style frequency factors: each frequency is divided by its factor.
      let f = try vector("rope_freqs.weight", ropeDims / 2)
      for i in 0..<inv.count { inv[i] /= f[i] }
    }
    invFreq = inv
    // As llama.cpp counts it: every matrix, the norm vectors, the output head and one embedding row.
    var bytes = tokenEmbedding.rowBytes + output.byteCount + (2 * NL + 1) * C * 4
    for b in bs { bytes += [b.q, b.k, b.v, b.o, b.gate, b.up, b.down].reduce(0) { $0 + $1.byteCount } }
    weightBytesPerToken = bytes
  }

  /// Opens a GGUF file and loads its model.
  public convenience init(path: String) throws { try self.init(file: GGUFFile(path: path)) }

  /// Dequantised copies of the matrices (F32, owned by this model), freed with it.
  private var owned: [UnsafeMutableRawPointer] = []

  deinit { owned.forEach { $0.deallocate() } }

  /// The same model with every matrix dequantised to fp32 once (4 bytes per weight): for
  /// training through the frozen model (``inputGradient(embeddings:count:targets:)``), where each
  /// step would otherwise dequantise every weight twice.
  public func dense() -> LlamaModel { LlamaModel(dense: self) }

  private init(dense m: LlamaModel) {
    file = m.file
    config = m.config
    invFreq = m.invFreq
    outputNorm = m.outputNorm
    weightBytesPerToken = m.weightBytesPerToken
    adapters = m.adapters
    var keep: [UnsafeMutableRawPointer] = []
    var made: [UnsafeRawPointer: QuantMatrix] = [:]
    func d(_ q: QuantMatrix) -> QuantMatrix {
      if q.type == .f32 { return q }
      if let e = made[q.data] { return e }
      let buf = UnsafeMutablePointer<Float>.allocate(capacity: q.rows * q.cols)
      q.dequantizeAll(into: buf)
      keep.append(UnsafeMutableRawPointer(buf))
      let r = QuantMatrix(type: .f32, rows: q.rows, cols: q.cols, data: UnsafeRawPointer(buf))
      made[q.data] = r
      return r
    }
    tokenEmbedding = d(m.tokenEmbedding)
    blocks = m.blocks.map { b in
      Block(
        attnNorm: b.attnNorm, q: d(b.q), k: d(b.k), v: d(b.v), o: d(b.o), qBias: b.qBias, kBias: b.kBias, vBias: b.vBias,
        ffnNorm: b.ffnNorm, gate: d(b.gate), up: d(b.up), down: d(b.down))
    }
    output = d(m.output)
    owned = keep
  }

  /// A fresh conversation state with room for `capacity` positions (default: the model's
  /// context length, at most 8192).
  public func makeState(capacity: Int? = nil, precision: Precision = .exact) -> LlamaState {
    LlamaState(
      config: config, capacity: min(capacity ?? min(config.contextLength, 8192), config.contextLength), precision: precision)
  }

  /// Token embeddings (T,C) for `ids`, as the model's input layer computes them.
  public func embed(_ ids: [Int32]) -> [Float] {
    let C = config.channels
    var out = [Float](repeating: 0, count: ids.count * C)
    out.withUnsafeMutableBufferPointer { o in
      for (t, id) in ids.enumerated() { tokenEmbedding.row(Int(id), into: o.baseAddress! + t * C) }
    }
    return out
  }

  /// Runs tokens through the model after the state's cached positions and returns the logits of
  /// the last token (V), or of every token (T*V) when `allLogits`.
  /// - Throws: ``ModelError/input`` when an id is outside the vocabulary or the context is full.
  public func forward(_ ids: [Int32], state: LlamaState, allLogits: Bool = false) throws -> [Float] {
    try checkVocabulary(ids)
    return try forward(embeddings: embed(ids), count: ids.count, state: state, allLogits: allLogits)
  }

  /// Runs input embeddings x (T,C) (token embeddings, or projected slide tokens) through the
  /// model after the state's cached positions; returns the last token's logits (V), or all (T*V).
  public func forward(embeddings x0: [Float], count T: Int, state s: LlamaState, allLogits: Bool = false) throws -> [Float] {
    var x = try trunk(x0, T, s)
    let c = config, C = c.channels
    // Final norm and head, on the last row or on every row.
    let rows = allLogits ? T : 1
    let first = T - rows
    var logits = [Float](repeating: 0, count: rows * c.vocabSize)
    outputNorm.withUnsafeBufferPointer { w in
      x.withUnsafeMutableBufferPointer { xb in
        let xr = xb.baseAddress! + first * C
        rmsnormForward(xr, xr, w.baseAddress!, rows, C, eps: c.rmsEps)
        logits.withUnsafeMutableBufferPointer { lb in
          for r in 0..<rows {
            let xq = s.precision == .q8 ? s.quantize(xr + r * C, C) : nil
            output.gemv(lb.baseAddress! + r * c.vocabSize, xr + r * C, xq)
          }
        }
      }
    }
    return logits
  }

  /// The last token's final hidden state (C): the output of the last block after the final
  /// norm, what the head turns into logits. Runs `ids` alone, in a state of their own. Chat's
  /// retrieval embeds questions and notes with it (``NoteEmbeddings``).
  /// - Throws: ``ModelError/input`` when `ids` is empty, longer than the context or outside the
  ///   vocabulary.
  public func lastHiddenState(_ ids: [Int32]) throws -> [Float] {
    guard !ids.isEmpty else { throw ModelError.input("no tokens to embed") }
    try checkVocabulary(ids)
    let s = makeState(capacity: ids.count)
    let x = try trunk(embed(ids), ids.count, s)
    let C = config.channels
    var h = [Float](repeating: 0, count: C)
    x.withUnsafeBufferPointer { xb in
      outputNorm.withUnsafeBufferPointer { w in
        h.withUnsafeMutableBufferPointer { hb in
          rmsnormForward(hb.baseAddress!, xb.baseAddress! + (ids.count - 1) * C, w.baseAddress!, 1, C, eps: config.rmsEps)
        }
      }
    }
    return h
  }

  private func checkVocabulary(_ ids: [Int32]) throws {
    for id in ids where id < 0 || Int(id) >= config.vocabSize {
      throw ModelError.input("token id \(id) is outside the vocabulary (\(config.vocabSize))")
    }
  }

  /// The residual stream (T,C) after every block, for input embeddings after the state's cached
  /// positions; the positions are added to the state.
  private func trunk(_ x0: [Float], _ T: Int, _ s: LlamaState) throws -> [Float] {
    let c = config
    let C = c.channels, NH = c.heads, NKV = c.kvHeads, HS = c.headSize, F = c.ffn
    guard T > 0, x0.count == T * C else {
      throw ModelError.input("expected \(T) x \(C) input embeddings, got \(x0.count) values")
    }
    guard s.position + T <= s.capacity else {
      throw ModelError.input("context is full: \(s.position) + \(T) tokens exceed the \(s.capacity) positions of the cache")
    }
    s.reserve(T)
    let pos0 = s.position
    let L = pos0 + T
    var x = x0
    let useQ8 = T == 1 && s.precision == .q8
    x.withUnsafeMutableBufferPointer { xb in
      let x = xb.baseAddress!
      let h = s.h, q = s.q, k = s.k, v = s.v, att = s.att, g = s.g, u = s.u, o = s.o
      for (l, b) in blocks.enumerated() {
        // Attention.
        b.attnNorm.withUnsafeBufferPointer { rmsnormForward(h, x, $0.baseAddress!, T, C, eps: c.rmsEps) }
        let xq = useQ8 ? s.quantize(h, C) : nil
        b.q.product(q, h, T, xq, s)
        b.k.product(k, h, T, xq, s)
        b.v.product(v, h, T, xq, s)
        if let a = adapters {
          a.q[l].apply(h, T, scale: a.scale, into: q)
          a.v[l].apply(h, T, scale: a.scale, into: v)
        }
        if let bq = b.qBias { addBias(q, bq, T) }
        if let bk = b.kBias { addBias(k, bk, T) }
        if let bv = b.vBias { addBias(v, bv, T) }
        invFreq.withUnsafeBufferPointer { f in
          ropeForward(q, T, NH, HS, dims: c.ropeDims, invFreq: f.baseAddress!, pos0: pos0, layout: c.architecture.rope)
          ropeForward(k, T, NKV, HS, dims: c.ropeDims, invFreq: f.baseAddress!, pos0: pos0, layout: c.architecture.rope)
        }
        let kc = s.kCache[l], vc = s.vCache[l]
        (kc + pos0 * NKV * HS).update(from: k, count: T * NKV * HS)
        (vc + pos0 * NKV * HS).update(from: v, count: T * NKV * HS)
        gqaAttentionForward(att, q, kc, vc, scores: s.scores, T: T, pos0: pos0, NH: NH, NKV: NKV, HS: HS)
        let aq = useQ8 ? s.quantize(att, NH * HS) : nil
        b.o.product(o, att, T, aq, s)
        residualForward(x, o, T * C)
        // Feed-forward.
        b.ffnNorm.withUnsafeBufferPointer { rmsnormForward(h, x, $0.baseAddress!, T, C, eps: c.rmsEps) }
        let hq = useQ8 ? s.quantize(h, C) : nil
        b.gate.product(g, h, T, hq, s)
        b.up.product(u, h, T, hq, s)
        swigluForward(g, g, u, T * F)
        let gq = useQ8 ? s.quantize(g, F) : nil
        b.down.product(o, g, T, gq, s)
        residualForward(x, o, T * C)
      }
    }
    s.position = L
    return x
  }

  private func addBias(_ out: UnsafeMutablePointer<Float>, _ bias: [Float], _ T: Int) {
    bias.withUnsafeBufferPointer { biasAdd(out, $0.baseAddress!, T, bias.count) }
  }
}

extension QuantMatrix {
  /// out (T, rows) = inp (T, cols) @ W^T: a matrix-vector product for one token (on the q8 path
  /// when `xq` is given), else the batched path through the state's scratch.
  @inline(__always)
  func product(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ T: Int, _ xq: QuantActivations?, _ s: LlamaState
  ) {
    if T == 1 {
      gemv(out, inp, xq)
    } else {
      matmul(out, inp, T, scratch: s.scratch)
    }
  }
}

/// One conversation's KV cache and scratch buffers for a ``LlamaModel``. Not thread-safe.
public final class LlamaState: @unchecked Sendable {
  public let capacity: Int
  public let precision: LlamaModel.Precision
  /// Positions already in the cache.
  public internal(set) var position = 0
  let config: LlamaConfig
  var kCache: [UnsafeMutablePointer<Float>]
  var vCache: [UnsafeMutablePointer<Float>]
  var rows = 0
  var h: UnsafeMutablePointer<Float>, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>
  var v: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>
  var u: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>
  var scoresCount = 0
  let scratch: UnsafeMutablePointer<Float>
  private var quantBuffers: [Int: QuantActivations] = [:]

  init(config c: LlamaConfig, capacity: Int, precision: LlamaModel.Precision) {
    self.config = c
    self.capacity = capacity
    self.precision = precision
    let kv = c.kvHeads * c.headSize
    kCache = (0..<c.layers).map { _ in .allocate(capacity: capacity * kv) }
    vCache = (0..<c.layers).map { _ in .allocate(capacity: capacity * kv) }
    h = .allocate(capacity: 1)
    q = .allocate(capacity: 1)
    k = .allocate(capacity: 1)
    v = .allocate(capacity: 1)
    att = .allocate(capacity: 1)
    g = .allocate(capacity: 1)
    u = .allocate(capacity: 1)
    o = .allocate(capacity: 1)
    scores = .allocate(capacity: 1)
    scratch = .allocate(capacity: 512 * max(c.channels, c.ffn, c.heads * c.headSize))
  }

  deinit {
    for p in kCache + vCache { p.deallocate() }
    for p in [h, q, k, v, att, g, u, o, scores, scratch] { p.deallocate() }
  }

  /// Forgets every cached position after the first `n` (a new conversation keeps a shared prefix).
  public func truncate(to n: Int) { position = min(position, max(0, n)) }

  /// Grows the per-step buffers to T rows.
  func reserve(_ T: Int) {
    let c = config
    if T > rows {
      for p in [h, q, k, v, att, g, u, o] { p.deallocate() }
      h = .allocate(capacity: T * c.channels)
      o = .allocate(capacity: T * c.channels)
      q = .allocate(capacity: T * c.heads * c.headSize)
      att = .allocate(capacity: T * c.heads * c.headSize)
      k = .allocate(capacity: T * c.kvHeads * c.headSize)
      v = .allocate(capacity: T * c.kvHeads * c.headSize)
      g = .allocate(capacity: T * c.ffn)
      u = .allocate(capacity: T * c.ffn)
      rows = T
    }
    let need = c.heads * T * (position + T)
    if need > scoresCount {
      scores.deallocate()
      scoresCount = max(need, 2 * scoresCount)
      scores = .allocate(capacity: scoresCount)
    }
  }

  /// x (n) quantised into this state's int8 buffer for length n.
  func quantize(_ x: UnsafePointer<Float>, _ n: Int) -> QuantActivations? {
    guard n % 32 == 0 else { return nil }
    let b = quantBuffers[n] ?? QuantActivations(count: n)
    quantBuffers[n] = b
    b.quantize(x)
    return b
  }
}

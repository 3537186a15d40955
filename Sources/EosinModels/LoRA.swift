import CBLAS
import EosinTensor
import EosinWeights
import Foundation

/// One low-rank adapter (Hu et al. 2021) on a frozen linear layer: the layer's output gains
/// `scale * B (A x)`, with A (rank, inDim) and B (outDim, rank). B starts at zero, so a fresh
/// adapter leaves the model unchanged.
public struct LoRAMatrix: Sendable, Equatable {
  /// (rank, inDim), row-major.
  public var a: [Float]
  /// (outDim, rank), row-major, in the engine's row order (GGUF's, for a LLaMA query).
  public var b: [Float]
  public let rank: Int, inDim: Int, outDim: Int

  /// - Precondition: `a` holds rank x inDim values and `b` outDim x rank.
  public init(a: [Float], b: [Float], rank: Int, inDim: Int, outDim: Int) {
    precondition(a.count == rank * inDim && b.count == outDim * rank, "LoRA shapes")
    self.a = a
    self.b = b
    self.rank = rank
    self.inDim = inDim
    self.outDim = outDim
  }

  /// A (T, rank) = x (T, inDim) @ A^T.
  func down(_ x: UnsafePointer<Float>, _ T: Int) -> [Float] {
    var z = [Float](repeating: 0, count: T * rank)
    a.withUnsafeBufferPointer { ap in
      z.withUnsafeMutableBufferPointer {
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(rank), Int32(inDim), 1, x, Int32(inDim), ap.baseAddress!,
          Int32(inDim), 0, $0.baseAddress!, Int32(rank))
      }
    }
    return z
  }

  /// out (T, outDim) += scale * z (T, rank) @ B^T.
  func up(_ z: [Float], _ T: Int, scale: Float, into out: UnsafeMutablePointer<Float>) {
    z.withUnsafeBufferPointer { zp in
      b.withUnsafeBufferPointer { bp in
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(outDim), Int32(rank), scale, zp.baseAddress!, Int32(rank),
          bp.baseAddress!, Int32(rank), 1, out, Int32(outDim))
      }
    }
  }

  /// Adds the adapter's term for inputs x (T, inDim) to out (T, outDim); returns A x (T, rank),
  /// which the backward pass needs.
  @discardableResult
  public func apply(_ x: UnsafePointer<Float>, _ T: Int, scale: Float, into out: UnsafeMutablePointer<Float>) -> [Float] {
    let z = down(x, T)
    up(z, T, scale: scale, into: out)
    return z
  }

  /// Backward of `out += scale * B (A x)`: accumulates dA and dB into `grad` and returns
  /// d x (T, inDim) for the adapter's path. `z` is A x from the forward pass.
  func backward(
    _ dout: [Float], x: [Float], z: [Float], _ T: Int, scale: Float, into grad: inout LoRAMatrix
  ) -> [Float] {
    let r = Int32(rank), I = Int32(inDim), O = Int32(outDim), TT = Int32(T)
    // dB (outDim, rank) += scale * dout^T (outDim, T) @ z (T, rank).
    dout.withUnsafeBufferPointer { d in
      z.withUnsafeBufferPointer { zp in
        grad.b.withUnsafeMutableBufferPointer {
          cblas_sgemm(
            CblasRowMajor, CblasTrans, CblasNoTrans, O, r, TT, scale, d.baseAddress!, O, zp.baseAddress!, r, 1, $0.baseAddress!, r
          )
        }
      }
    }
    // dz (T, rank) = scale * dout (T, outDim) @ B (outDim, rank).
    var dz = [Float](repeating: 0, count: T * rank)
    dout.withUnsafeBufferPointer { d in
      b.withUnsafeBufferPointer { bp in
        dz.withUnsafeMutableBufferPointer {
          cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasNoTrans, TT, r, O, scale, d.baseAddress!, O, bp.baseAddress!, r, 0, $0.baseAddress!,
            r)
        }
      }
    }
    // dA (rank, inDim) += dz^T (rank, T) @ x (T, inDim); dx (T, inDim) = dz @ A.
    var dx = [Float](repeating: 0, count: T * inDim)
    dz.withUnsafeBufferPointer { dzp in
      x.withUnsafeBufferPointer { xp in
        grad.a.withUnsafeMutableBufferPointer {
          cblas_sgemm(
            CblasRowMajor, CblasTrans, CblasNoTrans, r, I, TT, 1, dzp.baseAddress!, r, xp.baseAddress!, I, 1, $0.baseAddress!, I)
        }
      }
      a.withUnsafeBufferPointer { ap in
        dx.withUnsafeMutableBufferPointer {
          cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasNoTrans, TT, I, r, 1, dzp.baseAddress!, r, ap.baseAddress!, I, 0, $0.baseAddress!, I
          )
        }
      }
    }
    return dx
  }
}

/// Low-rank adapters on the attention query and value projections of every block of a
/// LLaMA-family model (the original LoRA placement), stored under PEFT's tensor names
/// (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, ...) with the rank and
/// alpha in the safetensors metadata. The model stays frozen; only these are trained.
public struct LoRAAdapters: Sendable, Equatable {
  /// The rank of every adapter.
  public var rank: Int
  /// The update is scaled by alpha / rank (``scale``).
  public var alpha: Float
  /// Per block: the query projection's adapter.
  public var q: [LoRAMatrix]
  /// Per block: the value projection's adapter.
  public var v: [LoRAMatrix]
  /// The factor on B A: alpha / rank.
  public var scale: Float { alpha / Float(rank) }

  /// Adapters from their matrices, one q and one v per block.
  public init(rank: Int, alpha: Float, q: [LoRAMatrix], v: [LoRAMatrix]) {
    self.rank = rank
    self.alpha = alpha
    self.q = q
    self.v = v
  }

  /// Fresh adapters for `config`: A drawn from N(0, 1/inDim), B zero, so the model starts
  /// unchanged.
  public init(config c: LlamaConfig, rank: Int, alpha: Float, seed: UInt64) {
    var rng = RandomTensors(seed: seed, std: 1 / Float(c.channels).squareRoot())
    func make(_ name: String, _ out: Int) -> LoRAMatrix {
      let a = (try? rng.take(name, [rank, c.channels]).data) ?? []
      return LoRAMatrix(a: a, b: [Float](repeating: 0, count: out * rank), rank: rank, inDim: c.channels, outDim: out)
    }
    var q: [LoRAMatrix] = [], v: [LoRAMatrix] = []
    for l in 0..<c.layers {
      q.append(make(Self.name(l, "q_proj", "A"), c.heads * c.headSize))
      v.append(make(Self.name(l, "v_proj", "A"), c.kvHeads * c.headSize))
    }
    self.init(rank: rank, alpha: alpha, q: q, v: v)
  }

  /// The same shapes, every value zero: a gradient accumulator.
  public func zeros() -> LoRAAdapters {
    func z(_ m: LoRAMatrix) -> LoRAMatrix {
      LoRAMatrix(
        a: [Float](repeating: 0, count: m.a.count), b: [Float](repeating: 0, count: m.b.count), rank: m.rank, inDim: m.inDim,
        outDim: m.outDim)
    }
    return LoRAAdapters(rank: rank, alpha: alpha, q: q.map(z), v: v.map(z))
  }

  /// Every value in a fixed order (block by block: q's A, q's B, v's A, v's B), for a flat
  /// optimizer buffer.
  public var flat: [Float] { zip(q, v).flatMap { $0.a + $0.b + $1.a + $1.b } }

  /// Replaces the values from a ``flat`` buffer.
  public mutating func setFlat(_ x: [Float]) {
    precondition(x.count == flat.count, "LoRA flat size")
    var o = 0
    func take(_ n: Int) -> [Float] {
      defer { o += n }
      return Array(x[o..<(o + n)])
    }
    for l in q.indices {
      q[l].a = take(q[l].a.count)
      q[l].b = take(q[l].b.count)
      v[l].a = take(v[l].a.count)
      v[l].b = take(v[l].b.count)
    }
  }

  static func name(_ l: Int, _ proj: String, _ ab: String) -> String {
    "base_model.model.model.layers.\(l).self_attn.\(proj).lora_\(ab).weight"
  }

  /// GGUF stores a LLaMA model's query rows permuted for interleaved rope (llama.cpp's
  /// converter); PEFT's B follows the HF rows. Row `h*HS + 2i + k` of GGUF is HF's
  /// `h*HS + k*HS/2 + i`. Returns B (rows, rank) moved between the orders.
  static func permuteQueryRows(_ b: [Float], heads: Int, headSize HS: Int, rank r: Int, toGGUF: Bool) -> [Float] {
    var out = b
    for h in 0..<heads {
      for i in 0..<(HS / 2) {
        for k in 0..<2 {
          let g = h * HS + 2 * i + k, f = h * HS + k * HS / 2 + i
          let (dst, src) = toGGUF ? (g, f) : (f, g)
          for j in 0..<r { out[dst * r + j] = b[src * r + j] }
        }
      }
    }
    return out
  }

  /// The tensors under PEFT's names, in the HF layout of a model of `config`.
  public func tensors(config c: LlamaConfig) -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for l in q.indices {
      for (proj, m) in [("q_proj", q[l]), ("v_proj", v[l])] {
        var b = m.b
        if proj == "q_proj" && c.architecture.rope == .interleaved {
          b = Self.permuteQueryRows(b, heads: c.heads, headSize: c.headSize, rank: m.rank, toGGUF: false)
        }
        out[Self.name(l, proj, "A")] = Tensor(shape: [m.rank, m.inDim], data: m.a)
        out[Self.name(l, proj, "B")] = Tensor(shape: [m.outDim, m.rank], data: b)
      }
    }
    return out
  }

  /// The metadata stored beside the tensors.
  public var metadata: [String: String] { ["lora_rank": "\(rank)", "lora_alpha": "\(alpha)", "lora_targets": "q_proj,v_proj"] }

  /// Adapters for a model of `config` from tensors under PEFT's names in the HF layout (other
  /// tensors are ignored); `path` names the source in errors.
  /// - Throws: ``WeightsError`` naming `path` when a tensor is missing or misshapen.
  public init(tensors t: [String: Tensor], rank r: Int, alpha: Float, config c: LlamaConfig, path: String) throws {
    var q: [LoRAMatrix] = [], v: [LoRAMatrix] = []
    for l in 0..<c.layers {
      func load(_ proj: String, _ out: Int) throws -> LoRAMatrix {
        let an = Self.name(l, proj, "A"), bn = Self.name(l, proj, "B")
        guard let a = t[an], let b = t[bn] else {
          throw WeightsError.format(
            file: path, message: "no \(t[an] == nil ? an : bn): adapters must cover q_proj and v_proj of every block")
        }
        guard a.shape == [r, c.channels], b.shape == [out, r] else {
          throw WeightsError.format(
            file: path,
            message: "\(an) is \(a.shape) and its B \(b.shape); this model needs [\(r), \(c.channels)] and [\(out), \(r)]")
        }
        var bd = b.data
        if proj == "q_proj" && c.architecture.rope == .interleaved {
          bd = Self.permuteQueryRows(bd, heads: c.heads, headSize: c.headSize, rank: r, toGGUF: true)
        }
        return LoRAMatrix(a: a.data, b: bd, rank: r, inDim: c.channels, outDim: out)
      }
      q.append(try load("q_proj", c.heads * c.headSize))
      v.append(try load("v_proj", c.kvHeads * c.headSize))
    }
    self.init(rank: r, alpha: alpha, q: q, v: v)
  }

  /// Loads adapters for a model of `config` from a safetensors file written with
  /// ``tensors(config:)`` and ``metadata``.
  /// - Throws: ``WeightsError`` naming the file when a tensor is missing, misshapen or extra, or
  ///   the rank and alpha are not stated.
  public init(file f: SafeTensorsFile, config c: LlamaConfig) throws {
    guard let r = f.metadata["lora_rank"].flatMap(Int.init), r > 0, let alpha = f.metadata["lora_alpha"].flatMap(Float.init),
      alpha.isFinite
    else { throw WeightsError.format(file: f.path, message: "no lora_rank and lora_alpha in the metadata") }
    guard f.tensors.count == 4 * c.layers else {
      throw WeightsError.format(
        file: f.path, message: "\(f.tensors.count) tensors, but a model of \(c.layers) blocks has \(4 * c.layers) adapter tensors"
      )
    }
    var t: [String: Tensor] = [:]
    for name in f.tensors.keys { t[name] = try f.tensor(name) }
    try self.init(tensors: t, rank: r, alpha: alpha, config: c, path: f.path)
  }
}

import EosinModels
import EosinTensor
import EosinWeights
import Foundation

/// All trainable tensors of a model in one flat buffer, with gradients and AdamW moments
/// alongside. Tensors are addressed by name; `offset(name)` gives their place in the buffers.
/// Not thread-safe.
public final class ParameterSet {
  public private(set) var names: [String] = []
  public private(set) var shapes: [String: [Int]] = [:]
  public private(set) var offsets: [String: Int] = [:]
  public var data: [Float] = []
  public var grad: [Float] = []
  var m: [Float] = []
  var v: [Float] = []
  /// Optimizer steps taken (AdamW's t).
  public var step = 0

  public init() {}

  /// Adds a tensor (called while building the model, in a fixed order).
  @discardableResult
  public func add(_ name: String, _ t: Tensor) -> Int {
    precondition(offsets[name] == nil, "duplicate parameter \(name)")
    let off = data.count
    names.append(name)
    shapes[name] = t.shape
    offsets[name] = off
    data += t.data
    grad += [Float](repeating: 0, count: t.count)
    m += [Float](repeating: 0, count: t.count)
    v += [Float](repeating: 0, count: t.count)
    return off
  }

  public var count: Int { data.count }

  /// The offset of a named tensor.
  public func offset(_ name: String) -> Int { offsets[name]! }

  /// A copy of one tensor.
  public func tensor(_ name: String) -> Tensor {
    let o = offsets[name]!, s = shapes[name]!
    return Tensor(shape: s, data: Array(data[o..<(o + s.reduce(1, *))]))
  }

  /// A set whose data are this set's gradients (same names and shapes), for exporting them.
  public func gradientView() -> ParameterSet {
    let g = ParameterSet()
    g.names = names
    g.shapes = shapes
    g.offsets = offsets
    g.data = grad
    return g
  }

  public func zeroGrad() { grad.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }

  /// Global L2 norm of the gradients.
  public func gradNorm() -> Float {
    let parts = SpinPool.shared.helpers + 1
    var partial = [Double](repeating: 0, count: parts)
    let n = grad.count
    grad.withUnsafeBufferPointer { g in
      partial.withUnsafeMutableBufferPointer { pp in
        let gp = g.baseAddress!, out = pp.baseAddress!
        SpinPool.shared.chunks(n) { k, r in
          var s: Double = 0
          for i in r { s += Double(gp[i]) * Double(gp[i]) }
          out[k] = s
        }
      }
    }
    return Float(partial.reduce(0, +).squareRoot())
  }

  /// One AdamW step (decoupled weight decay) with gradient clipping to `clip` global norm.
  /// Weight decay applies only to tensors of rank 2 or more (not biases, LayerNorms, scalars).
  /// Each tensor is split across the cores; the update is elementwise, so the split does not
  /// change the result.
  /// - Returns: the gradient norm before clipping.
  @discardableResult
  public func adamw(
    lr: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.05, clip: Float = 1.0
  ) -> Float {
    step += 1
    let norm = gradNorm()
    let scale = clip > 0 && norm > clip ? clip / norm : 1
    let b1c = 1 - powf(beta1, Float(step)), b2c = 1 - powf(beta2, Float(step))
    let spans = names.map { name in
      (offsets[name]!, shapes[name]!.reduce(1, *), shapes[name]!.count >= 2 ? weightDecay : 0)
    }
    let parts = SpinPool.shared.helpers + 1
    data.withUnsafeMutableBufferPointer { p in
      grad.withUnsafeBufferPointer { g in
        m.withUnsafeMutableBufferPointer { mm in
          v.withUnsafeMutableBufferPointer { vv in
            let P = p.baseAddress!, G = g.baseAddress!, M = mm.baseAddress!, V = vv.baseAddress!
            SpinPool.shared.run { k in
              for (o, n, wd) in spans {
                for i in (o + n * k / parts)..<(o + n * (k + 1) / parts) {
                  let gi = G[i] * scale
                  M[i] = beta1 * M[i] + (1 - beta1) * gi
                  V[i] = beta2 * V[i] + (1 - beta2) * gi * gi
                  let mh = M[i] / b1c, vh = V[i] / b2c
                  P[i] -= lr * (mh / (vh.squareRoot() + eps) + wd * P[i])
                }
              }
            }
          }
        }
      }
    }
    return norm
  }

  /// Parameters, AdamW moments and the step, as named tensors for a resumable checkpoint:
  /// `NAME`, `optimizer.m.NAME`, `optimizer.v.NAME`, `optimizer.step`.
  public func stateTensors() -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for n in names {
      let o = offsets[n]!, s = shapes[n]!, c = s.reduce(1, *)
      out[n] = Tensor(shape: s, data: Array(data[o..<(o + c)]))
      out["optimizer.m." + n] = Tensor(shape: s, data: Array(m[o..<(o + c)]))
      out["optimizer.v." + n] = Tensor(shape: s, data: Array(v[o..<(o + c)]))
    }
    out["optimizer.step"] = Tensor(shape: [1], data: [Float(step)])
    return out
  }

  /// Restores from ``stateTensors()``. Every parameter must be present with the same shape.
  /// - Throws: ``TrainingError/resume`` naming the file and the first mismatch.
  public func load(from f: SafeTensorsFile) throws {
    for n in names {
      guard let info = f.tensors[n] else {
        throw TrainingError.resume(file: f.path, message: "tensor '\(n)' is missing: the checkpoint is of another architecture")
      }
      guard info.shape == shapes[n]! else {
        throw TrainingError.resume(
          file: f.path,
          message:
            "tensor '\(n)' has shape \(info.shape), this model needs \(shapes[n]!): the checkpoint is of another architecture")
      }
      let o = offsets[n]!, c = shapes[n]!.reduce(1, *)
      data.replaceSubrange(o..<(o + c), with: try f.tensor(n).data)
      if f.tensors["optimizer.m." + n] != nil {
        m.replaceSubrange(o..<(o + c), with: try f.tensor("optimizer.m." + n).data)
        v.replaceSubrange(o..<(o + c), with: try f.tensor("optimizer.v." + n).data)
      }
    }
    let extra = Set(f.tensors.keys).filter { !$0.hasPrefix("optimizer.") }.subtracting(names)
    if let e = extra.sorted().first {
      throw TrainingError.resume(file: f.path, message: "unexpected tensor '\(e)': the checkpoint is of another architecture")
    }
    step = f.tensors["optimizer.step"] != nil ? Int(try f.tensor("optimizer.step").data[0]) : 0
  }
}

/// Copies a model's tensors into a ``ParameterSet`` in visiting order, under their checkpoint
/// names (building the optimizer's flat buffers).
struct ParameterAdder: ParameterVisitor {
  let params: ParameterSet
  mutating func visit(_ name: String, _ t: inout Tensor) throws { params.add(name, t) }
}

/// Copies a ``ParameterSet``'s values (or gradients) into the visited tensors: the model a step
/// runs always holds the optimizer's current weights.
struct ParameterReader: ParameterVisitor {
  let params: ParameterSet
  var gradients = false
  mutating func visit(_ name: String, _ t: inout Tensor) throws {
    let o = params.offset(name), n = t.shape.reduce(1, *)
    precondition(params.shapes[name] == t.shape, "\(name): shape differs from the parameter set's")
    let src = gradients ? params.grad : params.data
    if t.data.count == n {
      t.data.withUnsafeMutableBufferPointer { d in
        src.withUnsafeBufferPointer { s in d.baseAddress!.update(from: s.baseAddress! + o, count: n) }
      }
    } else {
      t.data = Array(src[o..<(o + n)])
    }
  }
}

/// Adds the visited tensors (a gradient accumulator shaped like the model) into a
/// ``ParameterSet``'s gradients, then zeroes them for the next step.
struct GradientGatherer: ParameterVisitor {
  let params: ParameterSet
  mutating func visit(_ name: String, _ t: inout Tensor) throws {
    let o = params.offset(name)
    params.grad.withUnsafeMutableBufferPointer { g in
      t.data.withUnsafeMutableBufferPointer { d in
        let G = g.baseAddress! + o
        for i in 0..<d.count {
          G[i] += d[i]
          d[i] = 0
        }
      }
    }
  }
}

/// Fresh weights for training, deterministic for a seed: ``RandomTensors``' rules (normal(0,
/// 0.02) weights, zero biases, unit norm weights), with the residual output projections and the
/// CLIP projections scaled by 1/sqrt(2 * layers), as in GPT-2.
struct TrainingInit: TensorSource {
  var rng: RandomTensors
  /// The depth of the stack a tensor belongs to, by its name.
  let layers: (String) -> Int
  init(seed: UInt64, layers: @escaping (String) -> Int) {
    rng = RandomTensors(seed: seed)
    self.layers = layers
  }
  mutating func take(_ name: String, _ shape: [Int]) throws -> Tensor {
    var t = try rng.take(name, shape)
    let residual = ["out_proj.weight", "fc2.weight", "c_proj.weight", "_projection.weight"]
    if residual.contains(where: { name.hasSuffix($0) }) {
      let s = 1 / Float(2 * max(1, layers(name))).squareRoot()
      t.data = t.data.map { $0 * s }
    }
    return t
  }
}

/// Errors from training.
public enum TrainingError: LocalizedError, Equatable {
  case data(String)
  case resume(file: String, message: String)
  public var errorDescription: String? {
    switch self {
    case .data(let m): return m
    case .resume(let f, let m): return "\(f): cannot resume: \(m)"
    }
  }
}

/// Warmup then cosine decay to `minRatio * peak`.
public func learningRate(step: Int, total: Int, warmup: Int, peak: Float, minRatio: Float = 0.1) -> Float {
  if step < warmup { return peak * Float(step + 1) / Float(warmup) }
  let p = Float(step - warmup) / Float(max(1, total - warmup))
  return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + cosf(Float.pi * min(1, p))))
}

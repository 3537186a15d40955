import EosinTensor
import EosinWeights
import Foundation

/// A linear layer: weight (OC,C) in PyTorch's `nn.Linear` layout, optional bias (OC).
public struct Linear: Sendable {
  public var weight: Tensor
  public var bias: Tensor?
  /// The weight in bf16 (``converted(to:)``); when set, products run through the bf16 GEMM.
  public var bf16: BF16Matrix?
  public var inFeatures: Int { weight.shape[1] }
  public var outFeatures: Int { weight.shape[0] }

  public init(weight: Tensor, bias: Tensor?) {
    precondition(weight.shape.count == 2)
    self.weight = weight
    self.bias = bias
  }

  /// inp (N,C) -> out (N,OC).
  public func forward(_ inp: [Float], _ N: Int) -> [Float] {
    var out = [Float](repeating: 0, count: N * outFeatures)
    forward(into: &out, inp, N)
    return out
  }

  /// inp (N,C) -> out (N,OC), writing into a caller-owned buffer of at least N*OC.
  public func forward(into out: inout [Float], _ inp: UnsafePointer<Float>, _ N: Int) {
    if let m = bf16 {
      out.withUnsafeMutableBufferPointer { o in
        if let b = bias {
          b.data.withUnsafeBufferPointer { bf16MatmulForward(o.baseAddress!, inp, m, $0.baseAddress!, N) }
        } else {
          bf16MatmulForward(o.baseAddress!, inp, m, nil, N)
        }
      }
      return
    }
    out.withUnsafeMutableBufferPointer { o in
      weight.data.withUnsafeBufferPointer { w in
        if let b = bias {
          b.data.withUnsafeBufferPointer { bb in
            matmulForward(o.baseAddress!, inp, w.baseAddress!, bb.baseAddress!, N, inFeatures, outFeatures)
          }
        } else {
          matmulForward(o.baseAddress!, inp, w.baseAddress!, nil, N, inFeatures, outFeatures)
        }
      }
    }
  }

  public func forward(into out: inout [Float], _ inp: [Float], _ N: Int) {
    inp.withUnsafeBufferPointer { forward(into: &out, $0.baseAddress!, N) }
  }

  /// This layer at `precision`: for bf16, the weight packed once (the fp32 copy is kept for
  /// shapes and for fp32 callers).
  public func converted(to precision: Precision) -> Linear {
    var l = self
    switch precision {
    case .fp32: l.bf16 = nil
    case .bf16:
      l.bf16 = weight.data.withUnsafeBufferPointer {
        BF16Matrix($0.baseAddress!, outFeatures: outFeatures, inFeatures: inFeatures)
      }
    }
    return l
  }

  /// A layer of shape (OC, C) with placeholder tensors, filled by a ``ParameterVisitor``.
  public static func placeholder(_ C: Int, _ OC: Int, bias: Bool = true) -> Linear {
    Linear(weight: .placeholder([OC, C]), bias: bias ? .placeholder([OC]) : nil)
  }

  /// Loads `prefix.weight` (OC,C) and, when `bias`, `prefix.bias` (OC).
  static func load<S: TensorSource>(_ t: inout S, _ prefix: String, _ C: Int, _ OC: Int, bias: Bool = true) throws -> Linear {
    Linear(weight: try t.take(prefix + ".weight", [OC, C]), bias: bias ? try t.take(prefix + ".bias", [OC]) : nil)
  }
}

/// LayerNorm over the last axis with weight and bias (C).
public struct LayerNorm: Sendable {
  public var weight: Tensor
  public var bias: Tensor
  public var eps: Float

  /// inp (N,C) -> out (N,C).
  public func forward(_ inp: [Float], _ N: Int) -> [Float] {
    let C = weight.count
    var out = [Float](repeating: 0, count: N * C)
    out.withUnsafeMutableBufferPointer { o in
      inp.withUnsafeBufferPointer { i in
        weight.data.withUnsafeBufferPointer { w in
          bias.data.withUnsafeBufferPointer { b in
            layernormForward(o.baseAddress!, nil, nil, i.baseAddress!, w.baseAddress!, b.baseAddress!, N, C, eps: eps)
          }
        }
      }
    }
    return out
  }

  /// A norm over C channels with placeholder tensors.
  public static func placeholder(_ C: Int, eps: Float) -> LayerNorm {
    LayerNorm(weight: .placeholder([C]), bias: .placeholder([C]), eps: eps)
  }

  static func load<S: TensorSource>(_ t: inout S, _ prefix: String, _ C: Int, eps: Float) throws -> LayerNorm {
    LayerNorm(weight: try t.take(prefix + ".weight", [C]), bias: try t.take(prefix + ".bias", [C]), eps: eps)
  }
}

/// Per-layer key/value cache for incremental decoding: k and v (maxT, C) per layer.
public struct KVCache: Sendable {
  public var k: [[Float]]
  public var v: [[Float]]
  /// Tokens cached so far.
  public var length = 0
  public let capacity: Int
  let C: Int

  /// Allocates `layers * 2 * capacity * C` floats.
  public init(layers: Int, capacity: Int, channels: Int) {
    k = Array(repeating: [Float](repeating: 0, count: capacity * channels), count: layers)
    v = k
    self.capacity = capacity
    C = channels
  }

  /// Forgets every cached token; keeps the memory.
  public mutating func reset() { length = 0 }
}

/// A pre-LayerNorm transformer block, shared by the CLIP towers and GPT-2:
/// `x = x + proj(attn(ln1(x)))`, `x = x + fc2(act(fc1(ln2(x))))`.
/// Q, K and V are fused into one (3C, C) projection at load, in ``TransformerBlock/init``'s
/// callers; this is the one place the checkpoint layout changes.
public struct TransformerBlock: Sendable {
  public var ln1: LayerNorm
  public var qkv: Linear
  public var proj: Linear
  public var ln2: LayerNorm
  public var fc1: Linear
  public var fc2: Linear
  public var act: Activation
  public var heads: Int
  /// LayerScale (timm `ls1.gamma`, DINOv2 `layer_scale1.lambda1`): the attention branch is
  /// multiplied by it channel-wise before the residual add; nil when the model has none.
  public var ls1: Tensor? = nil
  /// LayerScale of the MLP branch.
  public var ls2: Tensor? = nil
  /// A gated MLP (SwiGLU as timm's `SwiGLUPacked`): fc1 gives (N, 2H), the MLP input to fc2 is
  /// `act(first half) * second half`.
  public var glu = false

  var C: Int { proj.outFeatures }

  /// A plain block (C channels, MLP width I, biases everywhere) with placeholder tensors.
  public static func placeholder(C: Int, I: Int, heads: Int, act: Activation, eps: Float) -> TransformerBlock {
    TransformerBlock(
      ln1: .placeholder(C, eps: eps), qkv: .placeholder(C, 3 * C), proj: .placeholder(C, C), ln2: .placeholder(C, eps: eps),
      fc1: .placeholder(C, I), fc2: .placeholder(I, C), act: act, heads: heads)
  }

  /// x (B,T,C) updated in place. Full (or causal) self-attention, no cache. The same forward
  /// as training's, with its activations dropped.
  public func forward(_ x: inout [Float], B: Int, T: Int, causal: Bool) {
    var tape = BlockTape()
    forward(&x, B: B, T: T, causal: causal, tape: &tape)
  }

  /// x (T,C) for new tokens at positions cache.length..., attending to the cache and
  /// themselves (causal). Appends this layer's keys and values to `cache` slot `layer`.
  public func forwardCached(_ x: inout [Float], T: Int, cache: inout KVCache, layer: Int) {
    let h = ln1.forward(x, T)
    let q = qkv.forward(h, T)
    let pos0 = cache.length
    precondition(pos0 + T <= cache.capacity, "KV cache full")
    // Append k, v.
    for t in 0..<T {
      for i in 0..<C {
        cache.k[layer][(pos0 + t) * C + i] = q[t * 3 * C + C + i]
        cache.v[layer][(pos0 + t) * C + i] = q[t * 3 * C + 2 * C + i]
      }
    }
    var a = [Float](repeating: 0, count: T * C)
    let L = pos0 + T
    let HS = C / heads
    let scale = 1 / Float(HS).squareRoot()
    var w = [Float](repeating: 0, count: L)
    q.withUnsafeBufferPointer { qp in
      cache.k[layer].withUnsafeBufferPointer { kp in
        cache.v[layer].withUnsafeBufferPointer { vp in
          a.withUnsafeMutableBufferPointer { ap in
            w.withUnsafeMutableBufferPointer { wp in
              for t in 0..<T {
                let n = pos0 + t + 1
                for hh in 0..<heads {
                  // scores (n) = K (n,HS; stride C) . q (HS)
                  cachedAttentionHead(
                    ap.baseAddress! + t * C + hh * HS, wp.baseAddress!, qp.baseAddress! + t * 3 * C + hh * HS,
                    kp.baseAddress! + hh * HS, vp.baseAddress! + hh * HS, n, HS, C, scale)
                }
              }
            }
          }
        }
      }
    }
    mlpAndResidual(&x, attended: a, T)
  }

  private func mlpAndResidual(_ x: inout [Float], attended a: [Float], _ N: Int) {
    var tape = BlockTape()
    buf(&tape.o, N * C)
    proj.forward(into: &tape.o, a, N)
    if let g = ls1 { TransformerBlock.scaleChannels(&tape.o, g, N) }
    x.withUnsafeMutableBufferPointer { xp in
      tape.o.withUnsafeBufferPointer { residualForward(xp.baseAddress!, $0.baseAddress!, N * C) }
    }
    mlp(&x, N, tape: &tape)
  }

  /// This block with its four projections at `precision`.
  public func converted(to precision: Precision) -> TransformerBlock {
    var b = self
    b.qkv = qkv.converted(to: precision)
    b.proj = proj.converted(to: precision)
    b.fc1 = fc1.converted(to: precision)
    b.fc2 = fc2.converted(to: precision)
    return b
  }

  /// x (N,C) *= gamma (C), row by row.
  static func scaleChannels(_ x: inout [Float], _ gamma: Tensor, _ N: Int) {
    let C = gamma.count
    x.withUnsafeMutableBufferPointer { xp in
      gamma.data.withUnsafeBufferPointer { g in
        for n in 0..<N {
          let row = xp.baseAddress! + n * C
          for i in 0..<C { row[i] *= g[i] }
        }
      }
    }
  }
}

/// One head of one query against n cached keys. q (HS), K/V (n,HS) with row stride `ldkv`.
/// Uses sgemv for the scores and the weighted sum.
func cachedAttentionHead(
  _ out: UnsafeMutablePointer<Float>, _ w: UnsafeMutablePointer<Float>, _ q: UnsafePointer<Float>,
  _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ n: Int, _ HS: Int, _ ldkv: Int, _ scale: Float
) {
  gemvRowMajor(w, k, q, n, HS, ldkv, scale, transpose: false)
  softmaxForward(w, w, 1, n)
  gemvRowMajor(out, v, w, n, HS, ldkv, 1, transpose: true)
}

import CBLAS
import Foundation

// Forward kernels. Each is the forward half of a forward/backward pair: it writes into an output
// the caller owns, and anything a backward pass needs (mean, rstd, attention weights) goes into
// caller-owned buffers. Shape letters: B batch, T tokens, C channels, OC output channels,
// NH heads, HS head size, V vocabulary. Every fast kernel has a `...Naive` twin in
// NaiveKernels.swift that the tests compare against.

/// Matmul with an optional bias, through OpenBLAS sgemm; one row goes to ``gemvForward``.
/// inp (N,C), weight (OC,C), bias (OC)? -> out (N,OC). `out = inp @ weight^T + bias`.
/// Tolerance against the naive twin: about 1e-5 relative (summation order).
public func matmulForward(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
  _ bias: UnsafePointer<Float>?, _ N: Int, _ C: Int, _ OC: Int
) {
  if N == 1 {
    // Decode is bound by reading the weights: a SIMD gemv split by rows over the cores
    // (measured faster here than OpenBLAS sgemv at 1 or 2 threads).
    gemvForward(out, inp, weight, bias, C, OC, workers: OC * C >= 1 << 16 ? Threads.cores : 1)
    return
  }
  // Rows split across the cores, each block a single-threaded sgemm: measured faster here than
  // OpenBLAS's own threading for the ~200-row GEMMs of a ViT on one image.
  let o = UnsafeMutablePointer(mutating: out)
  let work = { (r: Range<Int>) in
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasTrans, Int32(r.count), Int32(OC), Int32(C), 1, inp + r.lowerBound * C, Int32(C), weight,
      Int32(C), 0, o + r.lowerBound * OC, Int32(OC))
    if let b = bias { biasAdd(o + r.lowerBound * OC, b, r.count, OC) }
  }
  if N * C * OC >= 1 << 20 {
    SpinPool.shared.ranges(N, minimum: 8, work)
  } else {
    work(0..<N)
  }
}

/// Adds a bias to every row. out (N,OC) += bias (OC).
@inlinable
public func biasAdd(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ N: Int, _ OC: Int) {
  for n in 0..<N {
    let row = out + n * OC
    for o in 0..<OC { row[o] += bias[o] }
  }
}

/// In-place residual add. out (N) += inp (N).
public func residualForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int) {
  splitWork(N, cost: 1) { r in for i in r { out[i] += inp[i] } }
}

/// Runs `body` over 0..<n, split across the cores through the spin pool when `n * cost` (about
/// the flops) is large enough to pay for a dispatch, else inline. Inside a ``parallelFor(_:workers:_:)``
/// worker the pool is held, so the split runs inline there too. Used by the elementwise and
/// row-wise kernels, which otherwise leave the second core idle between the GEMMs of training.
@inline(__always)
func splitWork(_ n: Int, cost: Int, _ body: @escaping (Range<Int>) -> Void) {
  if n * cost >= 1 << 16 {
    SpinPool.shared.ranges(n, body)
  } else {
    body(0..<n)
  }
}

/// LayerNorm over the last axis. inp (N,C), weight (C), bias (C) -> out (N,C); mean (N) and
/// rstd (N) are saved for the backward pass when non-nil.
public func layernormForward(
  _ out: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>?, _ rstd: UnsafeMutablePointer<Float>?,
  _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, _ N: Int, _ C: Int,
  eps: Float = 1e-5
) {
  splitWork(N, cost: 4 * C) { rows in layernormRows(out, mean, rstd, inp, weight, bias, rows, C, eps) }
}

private func layernormRows(
  _ out: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>?, _ rstd: UnsafeMutablePointer<Float>?,
  _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, _ rows: Range<Int>, _ C: Int,
  _ eps: Float
) {
  for n in rows {
    let x = inp + n * C
    var m: Float = 0
    for i in 0..<C { m += x[i] }
    m /= Float(C)
    var v: Float = 0
    for i in 0..<C {
      let d = x[i] - m
      v += d * d
    }
    v /= Float(C)
    let s = 1 / (v + eps).squareRoot()
    let o = out + n * C
    for i in 0..<C { o[i] = (x[i] - m) * s * weight[i] + bias[i] }
    mean?[n] = m
    rstd?[n] = s
  }
}

/// The activation functions used by CLIP and GPT-2 checkpoints, by their config names.
public enum Activation: String, Codable, Sendable {
  /// Exact GELU, x * Phi(x) with erf.
  case gelu
  /// GELU with the tanh approximation (GPT-2's `gelu_new`).
  case geluTanh = "gelu_new"
  /// x * sigmoid(1.702 x), OpenAI CLIP's activation.
  case quickGelu = "quick_gelu"
  /// x * sigmoid(x) (SiLU, swish): the gate of SwiGLU MLPs (DINOv2 giants, Virchow2, UNI2).
  case silu

  /// Accepts the names HF configs use for each.
  public init?(configName: String) {
    switch configName {
    case "gelu", "gelu_python", "GELU", "nn.GELU", "torch.nn.GELU": self = .gelu
    case "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_tanh": self = .geluTanh
    case "quick_gelu": self = .quickGelu
    case "silu", "swish", "torch.nn.SiLU", "nn.SiLU", "SiLU": self = .silu
    default: return nil
    }
  }
}

/// Elementwise activation. inp (N) -> out (N); `out` may alias `inp`.
public func activationForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int, _ act: Activation) {
  splitWork(N, cost: 8) { r in activationRange(out, inp, r, act) }
}

private func activationRange(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ r: Range<Int>, _ act: Activation)
{
  switch act {
  case .gelu:
    for i in r {
      let x = inp[i]
      out[i] = 0.5 * x * (1 + erff(x * 0.70710678118654752))
    }
  case .geluTanh:
    // 0.5 (1 + tanh u) = sigmoid(2u).
    let s: Float = 0.7978845608028654  // sqrt(2/pi)
    forEachVector(r) { i, c in
      let x = load16(inp + i, c)
      let u = s * (x + 0.044715 * x * x * x)
      store16(x / (1 + expSIMD(-2 * u)), out + i, c)
    }
  case .quickGelu:
    forEachVector(r) { i, c in
      let x = load16(inp + i, c)
      store16(x / (1 + expSIMD(-1.702 * x)), out + i, c)
    }
  case .silu:
    forEachVector(r) { i, c in
      let x = load16(inp + i, c)
      store16(x / (1 + expSIMD(-x)), out + i, c)
    }
  }
}

/// Row softmax with max subtraction. inp (N,C) -> out (N,C); `out` may alias `inp`.
public func softmaxForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int, _ C: Int) {
  for n in 0..<N {
    let x = inp + n * C, o = out + n * C
    var m = -Float.infinity
    for i in 0..<C { m = max(m, x[i]) }
    var s: Float = 0
    for i in 0..<C {
      let e = expf(x[i] - m)
      o[i] = e
      s += e
    }
    let inv = 1 / s
    for i in 0..<C { o[i] *= inv }
  }
}

/// Multi-head attention on packed q|k|v.
/// qkv (B,T,3C) -> out (B,T,C); att (B,NH,T,T) receives the softmax weights (kept for the
/// backward pass). `causal` masks keys after the query. Scores use sgemm per (b, head).
public func attentionForward(
  _ out: UnsafeMutablePointer<Float>, _ att: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>,
  _ B: Int, _ T: Int, _ C: Int, _ NH: Int, causal: Bool
) {
  let HS = C / NH
  let scale = 1 / Float(HS).squareRoot()
  let o = UnsafeMutablePointer(mutating: out), at = UnsafeMutablePointer(mutating: att)
  // (batch, head) pairs are independent: split them across the cores.
  let work = { (pairs: Range<Int>) in
    for bh in pairs {
      let b = bh / NH, h = bh % NH
      let q = qkv + b * T * 3 * C + h * HS
      let k = q + C
      let v = q + 2 * C
      let a = at + (b * NH + h) * T * T
      // a (T,T) = scale * q (T,HS; stride 3C) @ k^T
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HS), scale, q, Int32(3 * C), k, Int32(3 * C), 0, a,
        Int32(T))
      // Softmax over each query's visible keys; masked (future) keys get weight 0.
      for t in 0..<T {
        let row = a + t * T
        let n = causal ? t + 1 : T
        softmaxForward(row, row, 1, n)
        for j in n..<T { row[j] = 0 }
      }
      // out (T,HS; stride C) = a (T,T) @ v (T,HS; stride 3C)
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), 1, a, Int32(T), v, Int32(3 * C), 0,
        o + b * T * C + h * HS, Int32(C))
    }
  }
  if T >= 32 {
    SpinPool.shared.ranges(B * NH, work)
  } else {
    work(0..<(B * NH))
  }
}

/// Token plus position embedding. ids (B,T), wte (V,C), wpe (maxT,C) -> out (B,T,C).
/// Positions start at `pos0` (for decoding after a KV-cached prefix).
public func embeddingForward(
  _ out: UnsafeMutablePointer<Float>, _ ids: UnsafePointer<Int32>, _ wte: UnsafePointer<Float>, _ wpe: UnsafePointer<Float>?,
  _ B: Int, _ T: Int, _ C: Int, pos0: Int = 0
) {
  for b in 0..<B {
    for t in 0..<T {
      let o = out + (b * T + t) * C
      let e = wte + Int(ids[b * T + t]) * C
      if let p = wpe {
        let pe = p + (pos0 + t) * C
        for i in 0..<C { o[i] = e[i] + pe[i] }
      } else {
        for i in 0..<C { o[i] = e[i] }
      }
    }
  }
}

/// L2-normalises each row. inp (N,C) -> out (N,C); norm (N) saved when non-nil. `out` may alias.
public func l2normForward(
  _ out: UnsafeMutablePointer<Float>, _ norm: UnsafeMutablePointer<Float>?, _ inp: UnsafePointer<Float>, _ N: Int, _ C: Int
) {
  for n in 0..<N {
    let x = inp + n * C, o = out + n * C
    var s: Float = 0
    for i in 0..<C { s += x[i] * x[i] }
    let r = max(s.squareRoot(), 1e-12)
    for i in 0..<C { o[i] = x[i] / r }
    norm?[n] = r
  }
}

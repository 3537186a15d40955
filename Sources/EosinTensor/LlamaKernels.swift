import CBLAS
import Foundation

// Forward kernels of the LLaMA family (inference only): RMSNorm, rotary embeddings, SwiGLU and
// grouped-query attention over a KV cache. Shape letters: T tokens, C channels, NH query heads,
// NKV key/value heads, HS head size, L cached positions.

/// RMSNorm over the last axis. inp (T,C), weight (C) -> out (T,C); `out` may alias `inp`.
/// out = inp / sqrt(mean(inp^2) + eps) * weight, in fp32 as transformers computes it.
public func rmsnormForward(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ T: Int, _ C: Int,
  eps: Float
) {
  for t in 0..<T {
    let x = inp + t * C, o = out + t * C
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= C {
      let v = load16(x + i, 16)
      acc += v * v
      i += 16
    }
    var ss = acc.sum()
    while i < C {
      ss += x[i] * x[i]
      i += 1
    }
    let r = 1 / (ss / Float(C) + eps).squareRoot()
    for j in 0..<C { o[j] = x[j] * r * weight[j] }
  }
}

/// The naive twin of ``rmsnormForward(_:_:_:_:_:eps:)``.
public func rmsnormForwardNaive(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ T: Int, _ C: Int,
  eps: Float
) {
  for t in 0..<T {
    var ss: Float = 0
    for j in 0..<C { ss += inp[t * C + j] * inp[t * C + j] }
    let r = 1 / (ss / Float(C) + eps).squareRoot()
    for j in 0..<C { out[t * C + j] = inp[t * C + j] * r * weight[j] }
  }
}

/// How an architecture pairs the dimensions that a rotary embedding rotates together.
public enum RopeLayout: Sendable {
  /// (2i, 2i+1): llama.cpp's "normal" rope, used by GGUF `llama` files (whose Q/K rows the
  /// converter permuted for it).
  case interleaved
  /// (i, i + d/2): the GPT-NeoX layout, used by `qwen2`.
  case halves
}

/// Rotary position embedding, in place. x (T, NH*HS): every head's first `dims` channels are
/// rotated by angle (pos0 + t) * invFreq[i] for pair i.
public func ropeForward(
  _ x: UnsafeMutablePointer<Float>, _ T: Int, _ NH: Int, _ HS: Int, dims: Int, invFreq: UnsafePointer<Float>, pos0: Int,
  layout: RopeLayout
) {
  let half = dims / 2
  var cs = [Float](repeating: 0, count: 2 * half)
  for t in 0..<T {
    let p = Float(pos0 + t)
    for i in 0..<half {
      let a = p * invFreq[i]
      cs[2 * i] = cos(a)
      cs[2 * i + 1] = sin(a)
    }
    for h in 0..<NH {
      let v = x + (t * NH + h) * HS
      for i in 0..<half {
        let c = cs[2 * i], s = cs[2 * i + 1]
        let (a, b) = layout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
        let x0 = v[a], x1 = v[b]
        v[a] = x0 * c - x1 * s
        v[b] = x0 * s + x1 * c
      }
    }
  }
}

/// SwiGLU: out = silu(gate) * up. gate (N), up (N) -> out (N); `out` may alias either.
public func swigluForward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ N: Int)
{
  forEachVector(0..<N) { i, c in
    let g = load16(gate + i, c)
    store16(g / (1 + expSIMD(-g)) * load16(up + i, c), out + i, c)
  }
}

/// Grouped-query causal attention over a KV cache.
/// q (T, NH*HS) for positions pos0..<pos0+T; kCache, vCache (L, NKV*HS) hold positions
/// 0..<pos0+T (this step's keys and values already written) -> out (T, NH*HS).
/// Query head h reads key/value head h / (NH / NKV). One token uses SIMD dot products; a prompt
/// uses sgemm per head. Heads are split across the spin pool. `scores` holds NH * T * (pos0+T)
/// floats.
public func gqaAttentionForward(
  _ out: UnsafeMutablePointer<Float>, _ q: UnsafePointer<Float>, _ kCache: UnsafePointer<Float>, _ vCache: UnsafePointer<Float>,
  scores: UnsafeMutablePointer<Float>, T: Int, pos0: Int, NH: Int, NKV: Int, HS: Int
) {
  let L = pos0 + T
  let group = NH / NKV
  let scale = 1 / Float(HS).squareRoot()
  let qs = NH * HS, kvs = NKV * HS
  let work = { (heads: Range<Int>) in
    for h in heads {
      let g = h / group
      let a = scores + h * T * L
      let k = kCache + g * HS, v = vCache + g * HS
      if T == 1 {
        let qh = q + h * HS
        for j in 0..<L { a[j] = scale * dot(qh, k + j * kvs, HS) }
      } else {
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(L), Int32(HS), scale, q + h * HS, Int32(qs), k, Int32(kvs), 0,
          a,
          Int32(L))
      }
      for t in 0..<T {
        let row = a + t * L
        let n = pos0 + t + 1
        softmaxForward(row, row, 1, n)
        for j in n..<L { row[j] = 0 }
      }
      if T == 1 {
        let o = out + h * HS
        for i in 0..<HS { o[i] = 0 }
        for j in 0..<L {
          let w = a[j]
          axpy(o, v + j * kvs, w, HS)
        }
      } else {
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(L), 1, a, Int32(L), v, Int32(kvs), 0,
          out + h * HS,
          Int32(qs))
      }
    }
  }
  if NH > 1 && T * L * HS * NH >= 1 << 14 {
    SpinPool.shared.ranges(NH, work)
  } else {
    work(0..<NH)
  }
}

/// The naive twin of ``gqaAttentionForward(_:_:_:_:scores:T:pos0:NH:NKV:HS:)``: loops only.
public func gqaAttentionForwardNaive(
  _ out: UnsafeMutablePointer<Float>, _ q: UnsafePointer<Float>, _ kCache: UnsafePointer<Float>, _ vCache: UnsafePointer<Float>,
  T: Int, pos0: Int, NH: Int, NKV: Int, HS: Int
) {
  let scale = 1 / Float(HS).squareRoot()
  for t in 0..<T {
    for h in 0..<NH {
      let g = h / (NH / NKV)
      let n = pos0 + t + 1
      var s = [Float](repeating: 0, count: n)
      for j in 0..<n {
        var d: Float = 0
        for i in 0..<HS { d += q[(t * NH + h) * HS + i] * kCache[(j * NKV + g) * HS + i] }
        s[j] = d * scale
      }
      let m = s.max()!
      var z: Float = 0
      for j in 0..<n {
        s[j] = expf(s[j] - m)
        z += s[j]
      }
      for i in 0..<HS {
        var acc: Float = 0
        for j in 0..<n { acc += s[j] / z * vCache[(j * NKV + g) * HS + i] }
        out[(t * NH + h) * HS + i] = acc
      }
    }
  }
}

@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
  var acc = SIMD16<Float>()
  var i = 0
  while i + 16 <= n {
    acc += load16(a + i, 16) * load16(b + i, 16)
    i += 16
  }
  var s = acc.sum()
  while i < n {
    s += a[i] * b[i]
    i += 1
  }
  return s
}

@inline(__always)
func axpy(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ a: Float, _ n: Int) {
  var i = 0
  while i + 16 <= n {
    store16(load16(y + i, 16) + a * load16(x + i, 16), y + i, 16)
    i += 16
  }
  while i < n {
    y[i] += a * x[i]
    i += 1
  }
}

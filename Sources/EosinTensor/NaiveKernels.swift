import Foundation

// Naive reference twins of the fast kernels: plain loops in Double where it matters, written for
// clarity. Tests compare the fast kernels against these; benchmarks never time them.

/// inp (N,C), weight (OC,C), bias (OC)? -> out (N,OC), accumulated in Double.
public func matmulForwardNaive(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
  _ bias: UnsafePointer<Float>?, _ N: Int, _ C: Int, _ OC: Int
) {
  for n in 0..<N {
    for o in 0..<OC {
      var s = Double(bias?[o] ?? 0)
      for c in 0..<C { s += Double(inp[n * C + c]) * Double(weight[o * C + c]) }
      out[n * OC + o] = Float(s)
    }
  }
}

/// qkv (B,T,3C) -> out (B,T,C), one query at a time, no BLAS.
public func attentionForwardNaive(
  _ out: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>, _ B: Int, _ T: Int, _ C: Int, _ NH: Int, causal: Bool
) {
  let HS = C / NH
  let scale = 1 / Double(HS).squareRoot()
  var w = [Double](repeating: 0, count: T)
  for b in 0..<B {
    for t in 0..<T {
      for h in 0..<NH {
        let q = qkv + (b * T + t) * 3 * C + h * HS
        let n = causal ? t + 1 : T
        var m = -Double.infinity
        for j in 0..<n {
          let k = qkv + (b * T + j) * 3 * C + C + h * HS
          var s = 0.0
          for i in 0..<HS { s += Double(q[i]) * Double(k[i]) }
          w[j] = s * scale
          m = max(m, w[j])
        }
        var z = 0.0
        for j in 0..<n {
          w[j] = exp(w[j] - m)
          z += w[j]
        }
        for i in 0..<HS {
          var acc = 0.0
          for j in 0..<n { acc += w[j] / z * Double(qkv[(b * T + j) * 3 * C + 2 * C + h * HS + i]) }
          out[(b * T + t) * C + h * HS + i] = Float(acc)
        }
      }
    }
  }
}

/// LayerNorm in Double. inp (N,C) -> out (N,C).
public func layernormForwardNaive(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
  _ N: Int, _ C: Int, eps: Double = 1e-5
) {
  for n in 0..<N {
    var m = 0.0
    for i in 0..<C { m += Double(inp[n * C + i]) }
    m /= Double(C)
    var v = 0.0
    for i in 0..<C { v += (Double(inp[n * C + i]) - m) * (Double(inp[n * C + i]) - m) }
    v /= Double(C)
    for i in 0..<C {
      out[n * C + i] = Float((Double(inp[n * C + i]) - m) / (v + eps).squareRoot() * Double(weight[i]) + Double(bias[i]))
    }
  }
}

/// Softmax in Double. inp (N,C) -> out (N,C).
public func softmaxForwardNaive(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int, _ C: Int) {
  for n in 0..<N {
    var m = -Double.infinity
    for i in 0..<C { m = max(m, Double(inp[n * C + i])) }
    var z = 0.0
    for i in 0..<C { z += exp(Double(inp[n * C + i]) - m) }
    for i in 0..<C { out[n * C + i] = Float(exp(Double(inp[n * C + i]) - m) / z) }
  }
}

/// Activation in Double, from the defining formulas.
public func activationForwardNaive(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int, _ act: Activation) {
  for i in 0..<N {
    let x = Double(inp[i])
    switch act {
    case .gelu: out[i] = Float(0.5 * x * (1 + erf(x / 2.0.squareRoot())))
    case .geluTanh: out[i] = Float(0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * pow(x, 3)))))
    case .quickGelu: out[i] = Float(x / (1 + exp(-1.702 * x)))
    case .silu: out[i] = Float(x / (1 + exp(-x)))
    }
  }
}

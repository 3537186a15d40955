import EosinTensor
import EosinWeights
import Foundation

/// A pre-LN transformer block for training: forward keeps every activation the backward pass
/// needs; backward accumulates parameter gradients into the ParameterSet. Q, K, V are fused
/// (3C, C) here; export splits them into HF names.
final class TrainBlock {
  let p: ParameterSet
  let prefix: String
  let C: Int, I: Int, NH: Int
  let act: Activation
  // Parameter offsets.
  let ln1w: Int, ln1b: Int, qkvw: Int, qkvb: Int, projw: Int, projb: Int, ln2w: Int, ln2b: Int, fc1w: Int, fc1b: Int, fc2w: Int,
    fc2b: Int
  // Activations of the last forward, for shape (B, T).
  var B = 0, T = 0
  var xin: [Float] = [], ln1: [Float] = [], mean1: [Float] = [], rstd1: [Float] = [], qkv: [Float] = [], att: [Float] = []
  var atty: [Float] = [], x2: [Float] = [], ln2: [Float] = [], mean2: [Float] = [], rstd2: [Float] = [], h: [Float] = [],
    ha: [Float] = []
  // Scratch kept between steps: fresh multi-megabyte arrays every step cost page faults.
  var o: [Float] = [], dha: [Float] = [], dh: [Float] = [], dln2: [Float] = [], datty: [Float] = [], dln1: [Float] = [],
    dqkv: [Float] = [], scratch: [Float] = []

  init(_ p: ParameterSet, _ prefix: String, C: Int, I: Int, NH: Int, act: Activation, source: inout RandomInit) {
    self.p = p
    self.prefix = prefix
    self.C = C
    self.I = I
    self.NH = NH
    self.act = act
    func add(_ n: String, _ s: [Int]) -> Int { p.add(prefix + n, source.make(prefix + n, s)) }
    ln1w = add("ln1.weight", [C]); ln1b = add("ln1.bias", [C])
    qkvw = add("qkv.weight", [3 * C, C]); qkvb = add("qkv.bias", [3 * C])
    projw = add("proj.weight", [C, C]); projb = add("proj.bias", [C])
    ln2w = add("ln2.weight", [C]); ln2b = add("ln2.bias", [C])
    fc1w = add("fc1.weight", [I, C]); fc1b = add("fc1.bias", [I])
    fc2w = add("fc2.weight", [C, I]); fc2b = add("fc2.bias", [C])
  }

  /// x (B,T,C) in place.
  func forward(_ x: inout [Float], B: Int, T: Int, causal: Bool) {
    self.B = B
    self.T = T
    let N = B * T
    buf(&o, N * C)
    buf(&ln1, N * C); buf(&mean1, N); buf(&rstd1, N); buf(&qkv, N * 3 * C); buf(&att, B * NH * T * T); buf(&atty, N * C)
    buf(&ln2, N * C); buf(&mean2, N); buf(&rstd2, N); buf(&h, N * I); buf(&ha, N * I)
    xin = x
    p.data.withUnsafeBufferPointer { w in
      let W = w.baseAddress!
      layernormForward(&ln1, &mean1, &rstd1, xin, W + ln1w, W + ln1b, N, C)
      matmulForward(&qkv, ln1, W + qkvw, W + qkvb, N, C, 3 * C)
      attentionForward(&atty, &att, qkv, B, T, C, NH, causal: causal)
      matmulForward(&o, atty, W + projw, W + projb, N, C, C)
      x.withUnsafeMutableBufferPointer { residualForward($0.baseAddress!, o, N * C) }
      x2 = x
      layernormForward(&ln2, &mean2, &rstd2, x2, W + ln2w, W + ln2b, N, C)
      matmulForward(&h, ln2, W + fc1w, W + fc1b, N, C, I)
      activationForward(&ha, h, N * I, act)
      matmulForward(&o, ha, W + fc2w, W + fc2b, N, I, C)
      x.withUnsafeMutableBufferPointer { residualForward($0.baseAddress!, o, N * C) }
    }
  }

  /// dx (B,T,C): gradient w.r.t. the block output in, gradient w.r.t. its input out.
  func backward(_ dx: inout [Float]) {
    let N = B * T
    zeroed(&dha, N * I); zeroed(&dh, N * I); zeroed(&dln2, N * C); zeroed(&datty, N * C); zeroed(&dln1, N * C)
    zeroed(&dqkv, N * 3 * C); buf(&scratch, B * NH * T * T)
    p.data.withUnsafeBufferPointer { wb in
      p.grad.withUnsafeMutableBufferPointer { gb in
        let W = wb.baseAddress!, G = gb.baseAddress!
        // MLP branch: out = x2 + fc2(act(fc1(ln2(x2)))).
        matmulBackward(&dha, G + fc2w, G + fc2b, dx, ha, W + fc2w, N, I, C)
        activationBackward(&dh, h, dha, N * I, act)
        matmulBackward(&dln2, G + fc1w, G + fc1b, dh, ln2, W + fc1w, N, C, I)
        layernormBackward(&dx, G + ln2w, G + ln2b, dln2, x2, W + ln2w, mean2, rstd2, N, C)
        // Attention branch: x2 = xin + proj(attn(ln1(xin))).
        matmulBackward(&datty, G + projw, G + projb, dx, atty, W + projw, N, C, C)
        attentionBackward(&dqkv, &scratch, datty, qkv, att, B, T, C, NH)
        matmulBackward(&dln1, G + qkvw, G + qkvb, dqkv, ln1, W + qkvw, N, C, 3 * C)
        layernormBackward(&dx, G + ln1w, G + ln1b, dln1, xin, W + ln1w, mean1, rstd1, N, C)
      }
    }
  }
}

/// Sizes `a` to n floats, reusing its storage when the size is unchanged (contents kept).
func buf(_ a: inout [Float], _ n: Int) { if a.count != n { a = [Float](repeating: 0, count: n) } }

/// Sizes `a` to n floats, all zero, reusing its storage when the size is unchanged.
func zeroed(_ a: inout [Float], _ n: Int) {
  if a.count != n {
    a = [Float](repeating: 0, count: n)
  } else {
    a.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
  }
}

/// Deterministic initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm weights.
/// Residual output projections are scaled by 1/sqrt(2 * layers), as in GPT-2.
struct RandomInit {
  var rng: RandomTensors
  var layers: Int
  init(seed: UInt64, layers: Int) {
    rng = RandomTensors(seed: seed)
    self.layers = layers
  }
  mutating func make(_ name: String, _ shape: [Int]) -> Tensor {
    var t = try! rng.take(name, shape)
    if name.hasSuffix("proj.weight") || name.hasSuffix("fc2.weight") {
      let s = 1 / Float(2 * max(1, layers)).squareRoot()
      t.data = t.data.map { $0 * s }
    }
    return t
  }
}

import EosinTensor
import XCTest

/// Central-difference gradient checks for every backward kernel, on tiny shapes. The scalar
/// loss is sum(out * w) for a fixed random w, so dout = w. Tolerance: max |analytic - numeric|
/// <= 2e-2 * max(1, |numeric|) with eps 1e-2 in Float32 (printed on failure).
final class GradientTests: XCTestCase {
  var rng = KernelTests.RNG(s: 42)

  /// Checks d(loss)/d(x) for a function of x, against `analytic`.
  func check(_ name: String, _ x: [Float], analytic: [Float], loss: ([Float]) -> Float, eps: Float = 1e-2) {
    var worst: Float = 0
    for i in 0..<x.count {
      var xp = x, xm = x
      xp[i] += eps
      xm[i] -= eps
      let num = (loss(xp) - loss(xm)) / (2 * eps)
      let err = abs(analytic[i] - num) / max(1, abs(num))
      worst = max(worst, err)
    }
    XCTAssertLessThan(worst, 2e-2, "\(name): largest relative difference \(worst)")
  }

  func dot(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { Double($0) * Double($1) }.reduce(0, +).asFloat }

  func testMatmulGradients() {
    let (N, C, OC) = (3, 5, 4)
    let x = rng.array(N * C), w = rng.array(OC * C), b = rng.array(OC), g = rng.array(N * OC)
    func f(_ x: [Float], _ w: [Float], _ b: [Float]) -> Float {
      var o = [Float](repeating: 0, count: N * OC)
      o.withUnsafeMutableBufferPointer { matmulForward($0.baseAddress!, x, w, b, N, C, OC) }
      return dot(o, g)
    }
    var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: OC * C), db = [Float](repeating: 0, count: OC)
    matmulBackward(&dx, &dw, &db, g, x, w, N, C, OC)
    check("matmul dinp", x, analytic: dx) { f($0, w, b) }
    check("matmul dweight", w, analytic: dw) { f(x, $0, b) }
    check("matmul dbias", b, analytic: db) { f(x, w, $0) }
  }

  func testLayerNormGradients() {
    let (N, C) = (2, 6)
    let x = rng.array(N * C).map { $0 * 2 }, w = rng.array(C), b = rng.array(C), g = rng.array(N * C)
    func f(_ x: [Float], _ w: [Float], _ b: [Float]) -> Float {
      var o = [Float](repeating: 0, count: N * C)
      o.withUnsafeMutableBufferPointer { layernormForward($0.baseAddress!, nil, nil, x, w, b, N, C) }
      return dot(o, g)
    }
    var o = [Float](repeating: 0, count: N * C), mean = [Float](repeating: 0, count: N), rstd = mean
    o.withUnsafeMutableBufferPointer { layernormForward($0.baseAddress!, &mean, &rstd, x, w, b, N, C) }
    var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: C), db = dw
    layernormBackward(&dx, &dw, &db, g, x, w, mean, rstd, N, C)
    check("layernorm dinp", x, analytic: dx) { f($0, w, b) }
    check("layernorm dweight", w, analytic: dw) { f(x, $0, b) }
    check("layernorm dbias", b, analytic: db) { f(x, w, $0) }
  }

  func testActivationGradients() {
    let x = rng.array(20).map { $0 * 3 }, g = rng.array(20)
    for act in [Activation.gelu, .geluTanh, .quickGelu] {
      var dx = [Float](repeating: 0, count: 20)
      activationBackward(&dx, x, g, 20, act)
      check("activation \(act.rawValue)", x, analytic: dx) { x in
        var o = [Float](repeating: 0, count: 20)
        o.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, x, 20, act) }
        return self.dot(o, g)
      }
    }
  }

  func testAttentionGradients() {
    for causal in [false, true] {
      let (B, T, C, NH) = (1, 4, 8, 2)
      let qkv = rng.array(B * T * 3 * C), g = rng.array(B * T * C)
      func f(_ q: [Float]) -> Float {
        var o = [Float](repeating: 0, count: B * T * C), att = [Float](repeating: 0, count: B * NH * T * T)
        o.withUnsafeMutableBufferPointer { op in
          att.withUnsafeMutableBufferPointer {
            attentionForward(op.baseAddress!, $0.baseAddress!, q, B, T, C, NH, causal: causal)
          }
        }
        return dot(o, g)
      }
      var o = [Float](repeating: 0, count: B * T * C), att = [Float](repeating: 0, count: B * NH * T * T)
      o.withUnsafeMutableBufferPointer { op in
        att.withUnsafeMutableBufferPointer {
          attentionForward(op.baseAddress!, $0.baseAddress!, qkv, B, T, C, NH, causal: causal)
        }
      }
      var dqkv = [Float](repeating: 0, count: B * T * 3 * C), scratch = [Float](repeating: 0, count: B * NH * T * T)
      attentionBackward(&dqkv, &scratch, g, qkv, att, B, T, C, NH)
      check("attention causal=\(causal)", qkv, analytic: dqkv, loss: f)
    }
  }

  func testEmbeddingAndL2Gradients() {
    let (V, C, T) = (5, 3, 4)
    let wte = rng.array(V * C), wpe = rng.array(T * C), g = rng.array(T * C)
    let ids: [Int32] = [1, 3, 1, 0]
    var dwte = [Float](repeating: 0, count: V * C), dwpe = [Float](repeating: 0, count: T * C)
    embeddingBackward(&dwte, &dwpe, g, ids, 1, T, C)
    func f(_ e: [Float], _ p: [Float]) -> Float {
      var o = [Float](repeating: 0, count: T * C)
      o.withUnsafeMutableBufferPointer { embeddingForward($0.baseAddress!, ids, e, p, 1, T, C) }
      return dot(o, g)
    }
    check("embedding dwte", wte, analytic: dwte) { f($0, wpe) }
    check("embedding dwpe", wpe, analytic: dwpe) { f(wte, $0) }
    let x = rng.array(2 * 4), gl = rng.array(2 * 4)
    var y = [Float](repeating: 0, count: 8), norm = [Float](repeating: 0, count: 2)
    y.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, &norm, x, 2, 4) }
    var dx = [Float](repeating: 0, count: 8)
    l2normBackward(&dx, gl, y, norm, 2, 4)
    check("l2norm", x, analytic: dx) { x in
      var o = [Float](repeating: 0, count: 8)
      o.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, x, 2, 4) }
      return self.dot(o, gl)
    }
  }

  func testCrossEntropyGradient() {
    let (N, V) = (3, 6)
    let logits = rng.array(N * V).map { $0 * 3 }
    let t: [Int32] = [2, -1, 5]
    var d = [Float](repeating: 0, count: N * V)
    _ = crossEntropyForwardBackward(&d, logits, t, N, V)
    check("cross-entropy", logits, analytic: d) { crossEntropyForwardBackward(nil, $0, t, N, V) }
  }

  func testContrastiveGradients() {
    let (B, D) = (4, 5)
    func normed(_ a: [Float]) -> [Float] {
      var o = a
      o.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, B, D) }
      return o
    }
    let img = normed(rng.array(B * D)), txt = normed(rng.array(B * D))
    var scratch = [Float](repeating: 0, count: B * B)
    var di = [Float](repeating: 0, count: B * D), dt = di
    var dls: Float = 0
    _ = contrastiveLossForwardBackward(&di, &dt, &dls, &scratch, img, txt, 1.2, B, D)
    func L(_ i: [Float], _ t: [Float], _ s: Float) -> Float {
      var sc = [Float](repeating: 0, count: B * B)
      return contrastiveLossForwardBackward(nil, nil, nil, &sc, i, t, s, B, D)
    }
    check("contrastive dimg", img, analytic: di) { L($0, txt, 1.2) }
    check("contrastive dtxt", txt, analytic: dt) { L(img, $0, 1.2) }
    check("contrastive dlogit_scale", [1.2], analytic: [dls]) { L(img, txt, $0[0]) }
    // With labels: pairs 0 and 2 share a class.
    let labels = [0, 1, 0, 2]
    var di2 = [Float](repeating: 0, count: B * D), dt2 = di2
    var dls2: Float = 0
    _ = contrastiveLossForwardBackward(&di2, &dt2, &dls2, &scratch, img, txt, 1.2, B, D, labels: labels)
    func L2(_ i: [Float], _ t: [Float], _ s: Float) -> Float {
      var sc = [Float](repeating: 0, count: B * B)
      return contrastiveLossForwardBackward(nil, nil, nil, &sc, i, t, s, B, D, labels: labels)
    }
    check("contrastive+labels dimg", img, analytic: di2) { L2($0, txt, 1.2) }
    check("contrastive+labels dtxt", txt, analytic: dt2) { L2(img, $0, 1.2) }
    check("contrastive+labels dlogit_scale", [1.2], analytic: [dls2]) { L2(img, txt, $0[0]) }
  }
}

extension Double {
  var asFloat: Float { Float(self) }
}

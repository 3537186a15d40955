import CBLAS
import EosinTensor
import Foundation

/// What a training step needs from a frozen LLaMA-family model: the loss of next-token targets
/// and its gradient with respect to the input embeddings (the slide tokens a projector makes,
/// and the text tokens' embeddings), with no weight gradients.
public struct LlamaInputGradient: Sendable {
  /// Mean cross-entropy over the positions whose target is >= 0.
  public var loss: Float
  /// Positions that counted.
  public var count: Int
  /// d loss / d embeddings, (T, C).
  public var grad: [Float]
  /// d loss / d adapters, when the pass ran with adapters.
  public var adapterGrad: LoRAAdapters? = nil
}

extension LlamaModel {
  /// Forward and backward through the frozen model on one sequence from position 0 (no cache):
  /// `embeddings` (T, C) in, `targets` (T) the next token at each position (-1: not counted).
  /// Activations are kept for the backward pass (memory about T * (8C + 3F) + NH * T * T floats
  /// per block); weights are read as they are stored (dequantised a block of rows at a time).
  /// With ``adapters`` set, they join the forward pass and their gradients come back in
  /// ``LlamaInputGradient/adapterGrad``.
  /// - Throws: ``ModelError/input`` for a shape mismatch, a target outside the vocabulary, or
  ///   more positions than the model's context.
  public func inputGradient(embeddings x0: [Float], count T: Int, targets: [Int32]) throws -> LlamaInputGradient {
    let c = config
    let C = c.channels, NH = c.heads, NKV = c.kvHeads, HS = c.headSize, F = c.ffn, V = c.vocabSize
    guard T > 0, x0.count == T * C, targets.count == T else {
      throw ModelError.input("expected \(T) x \(C) embeddings and \(T) targets")
    }
    guard T <= c.contextLength else { throw ModelError.input("\(T) positions exceed the context of \(c.contextLength)") }
    for t in targets where t >= V { throw ModelError.input("target \(t) is outside the vocabulary (\(V))") }
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 512 * max(C, F, NH * HS))
    defer { scratch.deallocate() }

    struct Saved {
      var xin: [Float], r1: [Float], h1: [Float], q: [Float], k: [Float], v: [Float], p: [Float], a: [Float]
      var xmid: [Float], r2: [Float], h2: [Float], g: [Float], u: [Float]
      var zq: [Float] = [], zv: [Float] = []
    }
    let lora = adapters
    var loraGrad = lora?.zeros()
    var saved: [Saved] = []
    var x = x0
    for b in blocks {
      var s = Saved(
        xin: x, r1: [], h1: [], q: [], k: [], v: [], p: [], a: [], xmid: [], r2: [], h2: [], g: [], u: [])
      (s.h1, s.r1) = LlamaModel.rmsnorm(x, b.attnNorm, T, C, c.rmsEps)
      s.q = project(b.q, s.h1, T, b.qBias, scratch)
      s.k = project(b.k, s.h1, T, b.kBias, scratch)
      s.v = project(b.v, s.h1, T, b.vBias, scratch)
      if let a = lora {
        let l = saved.count
        s.h1.withUnsafeBufferPointer { h in
          s.q.withUnsafeMutableBufferPointer { s.zq = a.q[l].apply(h.baseAddress!, T, scale: a.scale, into: $0.baseAddress!) }
          s.v.withUnsafeMutableBufferPointer { s.zv = a.v[l].apply(h.baseAddress!, T, scale: a.scale, into: $0.baseAddress!) }
        }
      }
      invFreq.withUnsafeBufferPointer { f in
        ropeForward(&s.q, T, NH, HS, dims: c.ropeDims, invFreq: f.baseAddress!, pos0: 0, layout: c.architecture.rope)
        ropeForward(&s.k, T, NKV, HS, dims: c.ropeDims, invFreq: f.baseAddress!, pos0: 0, layout: c.architecture.rope)
      }
      (s.a, s.p) = LlamaModel.causalAttention(s.q, s.k, s.v, T, NH, NKV, HS)
      let o = project(b.o, s.a, T, nil, scratch)
      for i in 0..<(T * C) { x[i] += o[i] }
      s.xmid = x
      (s.h2, s.r2) = LlamaModel.rmsnorm(x, b.ffnNorm, T, C, c.rmsEps)
      s.g = project(b.gate, s.h2, T, nil, scratch)
      s.u = project(b.up, s.h2, T, nil, scratch)
      var m = [Float](repeating: 0, count: T * F)
      s.g.withUnsafeBufferPointer { g in s.u.withUnsafeBufferPointer { swigluForward(&m, g.baseAddress!, $0.baseAddress!, T * F) }
      }
      let d = project(b.down, m, T, nil, scratch)
      for i in 0..<(T * C) { x[i] += d[i] }
      saved.append(s)
    }
    let (xf, rf) = LlamaModel.rmsnorm(x, outputNorm, T, C, c.rmsEps)
    // Head and loss on the counted rows together (one pass over the head's weights each way).
    let rows = (0..<T).filter { targets[$0] >= 0 }
    let counted = rows.count
    var loss: Double = 0
    var dxf = [Float](repeating: 0, count: T * C)
    if counted > 0 {
      var xr = [Float](repeating: 0, count: counted * C)
      for (k, t) in rows.enumerated() { xr.replaceSubrange((k * C)..<((k + 1) * C), with: xf[(t * C)..<((t + 1) * C)]) }
      var logits = project(output, xr, counted, nil, scratch)
      let scale = 1 / Float(counted)
      for (k, t) in rows.enumerated() {
        let o = k * V
        var mx = -Float.infinity
        for j in 0..<V { mx = max(mx, logits[o + j]) }
        var z: Double = 0
        for j in 0..<V { z += Double(expf(logits[o + j] - mx)) }
        let tgt = Int(targets[t])
        loss += log(z) - Double(logits[o + tgt] - mx)
        for j in 0..<V { logits[o + j] = Float(Double(expf(logits[o + j] - mx)) / z) * scale }
        logits[o + tgt] -= scale
      }
      let dr = transposedProduct(output, logits, counted, scratch)
      for (k, t) in rows.enumerated() { dxf.replaceSubrange((t * C)..<((t + 1) * C), with: dr[(k * C)..<((k + 1) * C)]) }
    }
    var dx = LlamaModel.rmsnormBackward(dxf, x, outputNorm, rf, T, C)
    for (l, b) in blocks.enumerated().reversed() {
      let s = saved[l]
      // Feed-forward: x_out = x_mid + down(silu(g) * u).
      let dm = transposedProduct(b.down, dx, T, scratch)
      var dg = [Float](repeating: 0, count: T * F), du = dg
      for i in 0..<(T * F) {
        let g = s.g[i], sg = 1 / (1 + expf(-g)), silu = g * sg
        du[i] = dm[i] * silu
        dg[i] = dm[i] * s.u[i] * sg * (1 + g * (1 - sg))
      }
      var dh2 = transposedProduct(b.gate, dg, T, scratch)
      let dhu = transposedProduct(b.up, du, T, scratch)
      for i in 0..<(T * C) { dh2[i] += dhu[i] }
      let dmid = LlamaModel.rmsnormBackward(dh2, s.xmid, b.ffnNorm, s.r2, T, C)
      for i in 0..<(T * C) { dx[i] += dmid[i] }
      // Attention: x_mid = x_in + o(attn(rope(q), rope(k), v)).
      let da = transposedProduct(b.o, dx, T, scratch)
      var (dq, dk, dv) = LlamaModel.causalAttentionBackward(da, s.q, s.k, s.v, s.p, T, NH, NKV, HS)
      invFreq.withUnsafeBufferPointer { f in
        LlamaModel.ropeBackward(&dq, T, NH, HS, dims: c.ropeDims, invFreq: f.baseAddress!, layout: c.architecture.rope)
        LlamaModel.ropeBackward(&dk, T, NKV, HS, dims: c.ropeDims, invFreq: f.baseAddress!, layout: c.architecture.rope)
      }
      var dh1 = transposedProduct(b.q, dq, T, scratch)
      let dhk = transposedProduct(b.k, dk, T, scratch), dhv = transposedProduct(b.v, dv, T, scratch)
      for i in 0..<(T * C) { dh1[i] += dhk[i] + dhv[i] }
      if let a = lora {
        let dq2 = a.q[l].backward(dq, x: s.h1, z: s.zq, T, scale: a.scale, into: &loraGrad!.q[l])
        let dv2 = a.v[l].backward(dv, x: s.h1, z: s.zv, T, scale: a.scale, into: &loraGrad!.v[l])
        for i in 0..<(T * C) { dh1[i] += dq2[i] + dv2[i] }
      }
      let din = LlamaModel.rmsnormBackward(dh1, s.xin, b.attnNorm, s.r1, T, C)
      for i in 0..<(T * C) { dx[i] += din[i] }
    }
    return LlamaInputGradient(
      loss: counted > 0 ? Float(loss / Double(counted)) : 0, count: counted, grad: dx, adapterGrad: loraGrad)
  }

  /// out (T, rows) = inp (T, cols) @ W^T (+ bias).
  func project(_ w: QuantMatrix, _ inp: [Float], _ T: Int, _ bias: [Float]?, _ scratch: UnsafeMutablePointer<Float>) -> [Float] {
    var out = [Float](repeating: 0, count: T * w.rows)
    inp.withUnsafeBufferPointer { i in
      out.withUnsafeMutableBufferPointer { o in
        if T == 1 {
          w.gemv(o.baseAddress!, i.baseAddress!)
        } else {
          w.matmul(o.baseAddress!, i.baseAddress!, T, scratch: scratch)
        }
        if let b = bias { b.withUnsafeBufferPointer { biasAdd(o.baseAddress!, $0.baseAddress!, T, w.rows) } }
      }
    }
    return out
  }

  /// d inp (T, cols) = d out (T, rows) @ W.
  func transposedProduct(_ w: QuantMatrix, _ dout: [Float], _ T: Int, _ scratch: UnsafeMutablePointer<Float>) -> [Float] {
    var out = [Float](repeating: 0, count: T * w.cols)
    dout.withUnsafeBufferPointer { d in
      out.withUnsafeMutableBufferPointer { w.matmulTransposed($0.baseAddress!, d.baseAddress!, T, scratch: scratch) }
    }
    return out
  }

  /// RMSNorm keeping each row's 1/rms for the backward pass.
  static func rmsnorm(_ x: [Float], _ w: [Float], _ T: Int, _ C: Int, _ eps: Float) -> ([Float], [Float]) {
    var out = [Float](repeating: 0, count: T * C), r = [Float](repeating: 0, count: T)
    for t in 0..<T {
      var ss: Float = 0
      for j in 0..<C { ss += x[t * C + j] * x[t * C + j] }
      r[t] = 1 / (ss / Float(C) + eps).squareRoot()
      for j in 0..<C { out[t * C + j] = x[t * C + j] * r[t] * w[j] }
    }
    return (out, r)
  }

  /// y = x * r * w, r = (mean(x^2) + eps)^(-1/2): dx = r (dy w) - x r^3 / C * sum(dy w x).
  static func rmsnormBackward(_ dy: [Float], _ x: [Float], _ w: [Float], _ r: [Float], _ T: Int, _ C: Int) -> [Float] {
    var dx = [Float](repeating: 0, count: T * C)
    for t in 0..<T {
      var dot: Float = 0
      for j in 0..<C { dot += dy[t * C + j] * w[j] * x[t * C + j] }
      let k = r[t] * r[t] * r[t] / Float(C) * dot
      for j in 0..<C { dx[t * C + j] = r[t] * dy[t * C + j] * w[j] - x[t * C + j] * k }
    }
    return dx
  }

  /// Causal grouped-query attention from position 0, keeping the softmax weights p (NH, T, T).
  /// Scores and the weighted sum are sgemm products per head.
  static func causalAttention(_ q: [Float], _ k: [Float], _ v: [Float], _ T: Int, _ NH: Int, _ NKV: Int, _ HS: Int)
    -> ([Float], [Float])
  {
    let QS = NH * HS, KS = NKV * HS, group = NH / NKV, scale = 1 / Float(HS).squareRoot()
    var a = [Float](repeating: 0, count: T * QS), p = [Float](repeating: 0, count: NH * T * T)
    q.withUnsafeBufferPointer { qb in
      k.withUnsafeBufferPointer { kb in
        v.withUnsafeBufferPointer { vb in
          a.withUnsafeMutableBufferPointer { ab in
            p.withUnsafeMutableBufferPointer { pb in
              for h in 0..<NH {
                let g = h / group
                let P = pb.baseAddress! + h * T * T
                // S = scale * Q_h K_g^T, then the causal softmax row by row.
                cblas_sgemm(
                  CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HS), scale, qb.baseAddress! + h * HS,
                  Int32(QS),
                  kb.baseAddress! + g * HS, Int32(KS), 0, P, Int32(T))
                for t in 0..<T {
                  let row = P + t * T
                  var m = -Float.infinity
                  for j in 0...t { m = max(m, row[j]) }
                  var z: Float = 0
                  for j in 0...t {
                    row[j] = expf(row[j] - m)
                    z += row[j]
                  }
                  let inv = 1 / z
                  for j in 0...t { row[j] *= inv }
                  for j in (t + 1)..<T { row[j] = 0 }
                }
                // A_h = P V_g.
                cblas_sgemm(
                  CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), 1, P, Int32(T),
                  vb.baseAddress! + g * HS, Int32(KS), 0, ab.baseAddress! + h * HS, Int32(QS))
              }
            }
          }
        }
      }
    }
    return (a, p)
  }

  /// The backward of ``causalAttention(_:_:_:_:_:_:_:)``: da (T, NH*HS) -> dq, dk, dv (key and
  /// value gradients summed over the query heads of their group). sgemm products per head.
  static func causalAttentionBackward(
    _ da: [Float], _ q: [Float], _ k: [Float], _ v: [Float], _ p: [Float], _ T: Int, _ NH: Int, _ NKV: Int, _ HS: Int
  ) -> ([Float], [Float], [Float]) {
    let QS = NH * HS, KS = NKV * HS, group = NH / NKV, scale = 1 / Float(HS).squareRoot()
    var dq = [Float](repeating: 0, count: T * QS), dk = [Float](repeating: 0, count: T * KS), dv = dk
    var ds = [Float](repeating: 0, count: T * T)
    da.withUnsafeBufferPointer { dab in
      q.withUnsafeBufferPointer { qb in
        k.withUnsafeBufferPointer { kb in
          v.withUnsafeBufferPointer { vb in
            p.withUnsafeBufferPointer { pb in
              dq.withUnsafeMutableBufferPointer { dqb in
                dk.withUnsafeMutableBufferPointer { dkb in
                  dv.withUnsafeMutableBufferPointer { dvb in
                    ds.withUnsafeMutableBufferPointer { dsb in
                      let S = dsb.baseAddress!
                      for h in 0..<NH {
                        let g = h / group
                        let P = pb.baseAddress! + h * T * T, dA = dab.baseAddress! + h * HS
                        // dV_g += P^T dA_h.
                        cblas_sgemm(
                          CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), 1, P, Int32(T), dA, Int32(QS),
                          1,
                          dvb.baseAddress! + g * HS, Int32(KS))
                        // dP = dA_h V_g^T, then dS = P * (dP - sum(P dP)) * scale.
                        cblas_sgemm(
                          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HS), 1, dA, Int32(QS),
                          vb.baseAddress! + g * HS, Int32(KS), 0, S, Int32(T))
                        for t in 0..<T {
                          let row = S + t * T, pr = P + t * T
                          var sum: Float = 0
                          for j in 0...t { sum += pr[j] * row[j] }
                          for j in 0...t { row[j] = pr[j] * (row[j] - sum) * scale }
                          for j in (t + 1)..<T { row[j] = 0 }
                        }
                        // dQ_h = dS K_g; dK_g += dS^T Q_h.
                        cblas_sgemm(
                          CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), 1, S, Int32(T),
                          kb.baseAddress! + g * HS, Int32(KS), 0, dqb.baseAddress! + h * HS, Int32(QS))
                        cblas_sgemm(
                          CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), 1, S, Int32(T),
                          qb.baseAddress! + h * HS, Int32(QS), 1, dkb.baseAddress! + g * HS, Int32(KS))
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    return (dq, dk, dv)
  }

  /// The backward of a rotary embedding from position 0: the transpose of a rotation is the
  /// rotation by the opposite angle.
  static func ropeBackward(
    _ x: inout [Float], _ T: Int, _ NH: Int, _ HS: Int, dims: Int, invFreq: UnsafePointer<Float>, layout: RopeLayout
  ) {
    let half = dims / 2
    for t in 0..<T {
      for i in 0..<half {
        let ang = Float(t) * invFreq[i]
        let cs = cos(ang), sn = -sin(ang)
        let (a, b) = layout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
        for h in 0..<NH {
          let o = (t * NH + h) * HS
          let x0 = x[o + a], x1 = x[o + b]
          x[o + a] = x0 * cs - x1 * sn
          x[o + b] = x0 * sn + x1 * cs
        }
      }
    }
  }
}

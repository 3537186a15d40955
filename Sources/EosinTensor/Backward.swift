import CBLAS
import Foundation

// Backward halves of the forward kernels. Gradients accumulate (+=) into caller-owned buffers
// named d<name>, as in llm.c, so a buffer used twice sums its gradients. Shapes use the same
// letters as the forward kernels.

/// dinp (N,C) += dout (N,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp; dbias (OC) +=
/// column sums of dout. Any of dinp, dbias may be nil.
public func matmulBackward(
  _ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>, _ dbias: UnsafeMutablePointer<Float>?,
  _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, _ OC: Int
) {
  Threads.ensureSingleThreadedBLAS()
  if let di = dinp {
    SpinPool.shared.ranges(N, minimum: 64) { r in
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(r.count), Int32(C), Int32(OC), 1, dout + r.lowerBound * OC, Int32(OC),
        weight,
        Int32(C), 1, di + r.lowerBound * C, Int32(C))
    }
  }
  // dweight rows split across cores: rows [lo,hi) of dW = dout[:,lo:hi]^T @ inp.
  SpinPool.shared.ranges(OC, minimum: 64) { r in
    cblas_sgemm(
      CblasRowMajor, CblasTrans, CblasNoTrans, Int32(r.count), Int32(C), Int32(N), 1, dout + r.lowerBound, Int32(OC), inp,
      Int32(C), 1,
      dweight + r.lowerBound * C, Int32(C))
  }
  if let db = dbias {
    splitWork(OC, cost: N) { cols in
      for n in 0..<N {
        let row = dout + n * OC
        for o in cols { db[o] += row[o] }
      }
    }
  }
}

/// LayerNorm backward using the saved mean and rstd (N). dinp (N,C), dweight (C), dbias (C) +=.
public func layernormBackward(
  _ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>, _ dbias: UnsafeMutablePointer<Float>,
  _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ mean: UnsafePointer<Float>,
  _ rstd: UnsafePointer<Float>, _ N: Int, _ C: Int
) {
  let parts = N * C >= 1 << 14 ? SpinPool.shared.helpers + 1 : 1
  if parts == 1 {
    layernormBackwardRows(dinp, dweight, dbias, dout, inp, weight, mean, rstd, 0..<N, C)
    return
  }
  // Rows split across the cores; each part sums its dweight and dbias privately, then the
  // parts are added in order (deterministic for a given core count).
  let partial = UnsafeMutablePointer<Float>.allocate(capacity: parts * 2 * C)
  partial.initialize(repeating: 0, count: parts * 2 * C)
  defer { partial.deallocate() }
  SpinPool.shared.chunks(N) { k, rows in
    let pw = partial + k * 2 * C
    layernormBackwardRows(dinp, pw, pw + C, dout, inp, weight, mean, rstd, rows, C)
  }
  for k in 0..<parts {
    let pw = partial + k * 2 * C
    for i in 0..<C {
      dweight[i] += pw[i]
      dbias[i] += pw[C + i]
    }
  }
}

private func layernormBackwardRows(
  _ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>, _ dbias: UnsafeMutablePointer<Float>,
  _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ mean: UnsafePointer<Float>,
  _ rstd: UnsafePointer<Float>, _ rows: Range<Int>, _ C: Int
) {
  for n in rows {
    let x = inp + n * C, dy = dout + n * C, dx = dinp + n * C
    let m = mean[n], s = rstd[n]
    var dnormMean: Float = 0, dnormNormMean: Float = 0
    for i in 0..<C {
      let norm = (x[i] - m) * s
      let dnorm = weight[i] * dy[i]
      dnormMean += dnorm
      dnormNormMean += dnorm * norm
    }
    dnormMean /= Float(C)
    dnormNormMean /= Float(C)
    for i in 0..<C {
      let norm = (x[i] - m) * s
      let dnorm = weight[i] * dy[i]
      dbias[i] += dy[i]
      dweight[i] += norm * dy[i]
      dx[i] += (dnorm - dnormMean - norm * dnormNormMean) * s
    }
  }
}

/// Activation backward: dinp (N) += act'(inp) * dout.
public func activationBackward(
  _ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ N: Int, _ act: Activation
) {
  splitWork(N, cost: 12) { r in activationBackwardRange(dinp, inp, dout, r, act) }
}

private func activationBackwardRange(
  _ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ r: Range<Int>,
  _ act: Activation
) {
  switch act {
  case .gelu:
    for i in r {
      let x = inp[i]
      let cdf = 0.5 * (1 + erff(x * 0.70710678118654752))
      let pdf = expf(-0.5 * x * x) * 0.3989422804014327
      dinp[i] += (cdf + x * pdf) * dout[i]
    }
  case .geluTanh:
    // With sg = sigmoid(2u) = 0.5 (1 + tanh u): d/dx = sg + x * 2 sg (1 - sg) * du/dx.
    let s: Float = 0.7978845608028654
    forEachVector(r) { i, c in
      let x = load16(inp + i, c)
      let u = s * (x + 0.044715 * x * x * x)
      let sg = 1 / (1 + expSIMD(-2 * u))
      let dudx: SIMD16<Float> = s * (1 + 3 * 0.044715 * x * x)
      let dsg: SIMD16<Float> = 2 * sg * (1 - sg)
      let g: SIMD16<Float> = sg + x * dsg * dudx
      store16(load16(dinp + i, c) + g * load16(dout + i, c), dinp + i, c)
    }
  case .quickGelu:
    forEachVector(r) { i, c in
      let x = load16(inp + i, c)
      let sg = 1 / (1 + expSIMD(-1.702 * x))
      let dsg: SIMD16<Float> = 1.702 * sg * (1 - sg)
      let g: SIMD16<Float> = sg + x * dsg
      store16(load16(dinp + i, c) + g * load16(dout + i, c), dinp + i, c)
    }
  case .silu:
    forEachVector(r) { i, c in
      let x = load16(inp + i, c)
      let sg = 1 / (1 + expSIMD(-x))
      let g: SIMD16<Float> = sg + x * sg * (1 - sg)
      store16(load16(dinp + i, c) + g * load16(dout + i, c), dinp + i, c)
    }
  }
}

/// Attention backward. Inputs: the forward's qkv (B,T,3C) and softmax weights att (B,NH,T,T),
/// dout (B,T,C). Accumulates into dqkv (B,T,3C). `scratch` holds B*NH*T*T floats.
public func attentionBackward(
  _ dqkv: UnsafeMutablePointer<Float>, _ scratch: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
  _ qkv: UnsafePointer<Float>, _ att: UnsafePointer<Float>, _ B: Int, _ T: Int, _ C: Int, _ NH: Int
) {
  Threads.ensureSingleThreadedBLAS()
  let HS = C / NH
  let scale = 1 / Float(HS).squareRoot()
  SpinPool.shared.ranges(B * NH) { pairs in
    for bh in pairs {
      let b = bh / NH, h = bh % NH
      let q = qkv + b * T * 3 * C + h * HS, k = q + C, v = q + 2 * C
      let dq = dqkv + b * T * 3 * C + h * HS, dk = dq + C, dv = dq + 2 * C
      let a = att + bh * T * T
      let da = scratch + bh * T * T
      let dy = dout + b * T * C + h * HS
      // dv (T,HS) += a^T (T,T) @ dy (T,HS)
      cblas_sgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), 1, a, Int32(T), dy, Int32(C), 1, dv, Int32(3 * C))
      // da (T,T) = dy (T,HS) @ v^T
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HS), 1, dy, Int32(C), v, Int32(3 * C), 0, da, Int32(T))
      // softmax backward, in place: dpre = a * (da - sum(a * da))
      for t in 0..<T {
        let ar = a + t * T, dr = da + t * T
        var dot: Float = 0
        for j in 0..<T { dot += ar[j] * dr[j] }
        for j in 0..<T { dr[j] = ar[j] * (dr[j] - dot) }
      }
      // dq (T,HS) += scale * dpre @ k ; dk (T,HS) += scale * dpre^T @ q
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), scale, da, Int32(T), k, Int32(3 * C), 1, dq,
        Int32(3 * C))
      cblas_sgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(HS), Int32(T), scale, da, Int32(T), q, Int32(3 * C), 1, dk,
        Int32(3 * C))
    }
  }
}

/// Embedding backward: dwte[id] += dout, dwpe[pos0 + t] += dout. ids (B,T), dout (B,T,C).
public func embeddingBackward(
  _ dwte: UnsafeMutablePointer<Float>, _ dwpe: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
  _ ids: UnsafePointer<Int32>,
  _ B: Int, _ T: Int, _ C: Int, pos0: Int = 0
) {
  for b in 0..<B {
    for t in 0..<T {
      let g = dout + (b * T + t) * C
      let e = dwte + Int(ids[b * T + t]) * C
      for i in 0..<C { e[i] += g[i] }
      if let p = dwpe {
        let pe = p + (pos0 + t) * C
        for i in 0..<C { pe[i] += g[i] }
      }
    }
  }
}

/// L2-normalise backward. y = x/|x| (out), norm (N) saved: dinp (N,C) += (dout - y (y·dout)) / |x|.
public func l2normBackward(
  _ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ out: UnsafePointer<Float>, _ norm: UnsafePointer<Float>,
  _ N: Int, _ C: Int
) {
  for n in 0..<N {
    let y = out + n * C, dy = dout + n * C
    var dot: Float = 0
    for i in 0..<C { dot += y[i] * dy[i] }
    let inv = 1 / norm[n]
    for i in 0..<C { dinp[n * C + i] += (dy[i] - y[i] * dot) * inv }
  }
}

/// Mean cross-entropy over N rows of logits (N,V) against targets (N); targets < 0 are ignored.
/// Writes dlogits (N,V) = (softmax - onehot) / count (not accumulated). Returns the loss.
public func crossEntropyForwardBackward(
  _ dlogits: UnsafeMutablePointer<Float>?, _ logits: UnsafePointer<Float>, _ targets: UnsafePointer<Int32>, _ N: Int, _ V: Int
) -> Float {
  var count = 0
  for n in 0..<N where targets[n] >= 0 { count += 1 }
  if count == 0 { return 0 }
  var loss: Double = 0
  for n in 0..<N {
    let x = logits + n * V
    let t = Int(targets[n])
    var m = -Float.infinity
    for i in 0..<V { m = max(m, x[i]) }
    var s: Float = 0
    for i in 0..<V { s += expf(x[i] - m) }
    if t >= 0 { loss += Double(logf(s) + m - x[t]) }
    if let d = dlogits {
      let dr = d + n * V
      if t < 0 {
        for i in 0..<V { dr[i] = 0 }
      } else {
        let inv = 1 / s / Float(count)
        for i in 0..<V { dr[i] = expf(x[i] - m) * inv }
        dr[t] -= 1 / Float(count)
      }
    }
  }
  return Float(loss / Double(count))
}

/// CLIP's symmetric contrastive loss over B matched pairs.
/// img (B,D) and txt (B,D) are L2-normalised; logits = exp(logScale) * img @ txt^T.
/// Returns the loss ((CE over rows) + (CE over columns)) / 2 and accumulates dimg, dtxt and
/// dlogScale. `logits` (B,B) is a caller-owned scratch.
///
/// With `labels` (B), every pair with the same label is a positive: each row's (and column's)
/// target is uniform over its same-label entries (as in UniCL), so images of one class are not
/// pushed away from their class's other captions. Without labels the target is the diagonal.
public func contrastiveLossForwardBackward(
  _ dimg: UnsafeMutablePointer<Float>?, _ dtxt: UnsafeMutablePointer<Float>?, _ dlogScale: UnsafeMutablePointer<Float>?,
  _ logits: UnsafeMutablePointer<Float>, _ img: UnsafePointer<Float>, _ txt: UnsafePointer<Float>, _ logScale: Float, _ B: Int,
  _ D: Int,
  labels: [Int]? = nil
) -> Float {
  // target(i, j): 1/|same(i)| when labels match (diagonal only without labels). Symmetric, so
  // one table serves rows and columns.
  var tgt = [Float](repeating: 0, count: B * B)
  if let l = labels {
    var count: [Int: Int] = [:]
    for x in l { count[x, default: 0] += 1 }
    for i in 0..<B { for j in 0..<B where l[i] == l[j] { tgt[i * B + j] = 1 / Float(count[l[i]]!) } }
  } else {
    for i in 0..<B { tgt[i * B + i] = 1 }
  }
  let s = expf(logScale)
  cblas_sgemm(
    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(B), Int32(B), Int32(D), s, img, Int32(D), txt, Int32(D), 0, logits, Int32(B))
  var dL = [Float](repeating: 0, count: B * B)
  var loss: Double = 0
  // Softmax cross-entropy along each row of the logits as read through `at(a, b)`: rows for
  // image -> text, columns for text -> image. Each direction carries half the loss.
  func direction(_ at: (Int, Int) -> Int) {
    for a in 0..<B {
      var m = -Float.infinity
      for b in 0..<B { m = max(m, logits[at(a, b)]) }
      var z: Float = 0
      for b in 0..<B { z += expf(logits[at(a, b)] - m) }
      for b in 0..<B {
        let k = at(a, b)
        if tgt[k] > 0 { loss += Double(tgt[k] * (logf(z) + m - logits[k])) / Double(2 * B) }
        dL[k] += (expf(logits[k] - m) / z - tgt[k]) / Float(2 * B)
      }
    }
  }
  direction { $0 * B + $1 }
  direction { $1 * B + $0 }
  if let dls = dlogScale {
    var g: Float = 0
    for k in 0..<(B * B) { g += dL[k] * logits[k] }
    dls.pointee += g
  }
  dL.withUnsafeBufferPointer { d in
    // dimg += s * dL @ txt ; dtxt += s * dL^T @ img
    if let di = dimg {
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(B), Int32(D), Int32(B), s, d.baseAddress, Int32(B), txt, Int32(D), 1, di,
        Int32(D))
    }
    if let dt = dtxt {
      cblas_sgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(B), Int32(D), Int32(B), s, d.baseAddress, Int32(B), img, Int32(D), 1, dt,
        Int32(D))
    }
  }
  return Float(loss)
}

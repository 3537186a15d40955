import EosinTensor
import XCTest

/// Each fast kernel against its naive twin on random shapes. Tolerances are stated per test.
final class KernelTests: XCTestCase {
  struct RNG {
    var s: UInt64
    mutating func next() -> Float {
      s = s &* 6364136223846793005 &+ 1442695040888963407
      return Float(Int64(bitPattern: s >> 11) % 2_000_000) / 1_000_000 - 1
    }
    mutating func array(_ n: Int) -> [Float] { (0..<n).map { _ in next() } }
  }

  func maxDiff(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? 0 }

  /// Guards sgemm/sgemv wiring (transpose flags, leading dimensions, bias): within 1e-4.
  func testMatmulMatchesNaive() {
    var r = RNG(s: 1)
    for (N, C, OC) in [(1, 17, 9), (5, 32, 48), (37, 64, 20)] {
      let x = r.array(N * C), w = r.array(OC * C), b = r.array(OC)
      var fast = [Float](repeating: 0, count: N * OC), slow = fast
      fast.withUnsafeMutableBufferPointer { matmulForward($0.baseAddress!, x, w, b, N, C, OC) }
      slow.withUnsafeMutableBufferPointer { matmulForwardNaive($0.baseAddress!, x, w, b, N, C, OC) }
      XCTAssertLessThan(maxDiff(fast, slow), 1e-4, "\(N)x\(C)x\(OC)")
      fast.withUnsafeMutableBufferPointer { matmulForward($0.baseAddress!, x, w, nil, N, C, OC) }
      slow.withUnsafeMutableBufferPointer { matmulForwardNaive($0.baseAddress!, x, w, nil, N, C, OC) }
      XCTAssertLessThan(maxDiff(fast, slow), 1e-4)
    }
  }

  /// Guards the BLAS attention (per-head sgemm, causal mask) against one-query-at-a-time loops.
  func testAttentionMatchesNaive() {
    var r = RNG(s: 2)
    for causal in [false, true] {
      let (B, T, C, NH) = (2, 7, 16, 4)
      let qkv = r.array(B * T * 3 * C)
      var fast = [Float](repeating: 0, count: B * T * C), slow = fast
      var att = [Float](repeating: 0, count: B * NH * T * T)
      fast.withUnsafeMutableBufferPointer { f in
        att.withUnsafeMutableBufferPointer { a in
          attentionForward(f.baseAddress!, a.baseAddress!, qkv, B, T, C, NH, causal: causal)
        }
      }
      slow.withUnsafeMutableBufferPointer { attentionForwardNaive($0.baseAddress!, qkv, B, T, C, NH, causal: causal) }
      XCTAssertLessThan(maxDiff(fast, slow), 1e-5)
      // Every attention row sums to one and, when causal, has no weight on the future.
      for row in 0..<(B * NH * T) {
        let s = att[(row * T)..<((row + 1) * T)].reduce(0, +)
        XCTAssertEqual(s, 1, accuracy: 1e-5)
        if causal { for j in (row % T + 1)..<T { XCTAssertEqual(att[row * T + j], 0) } }
      }
    }
  }

  /// Guards LayerNorm (and its saved mean/rstd) against a Double reference: within 1e-5.
  func testLayerNormMatchesNaive() {
    var r = RNG(s: 3)
    let (N, C) = (6, 33)
    let x = r.array(N * C).map { $0 * 3 + 0.5 }, w = r.array(C), b = r.array(C)
    var fast = [Float](repeating: 0, count: N * C), slow = fast
    var mean = [Float](repeating: 0, count: N), rstd = mean
    fast.withUnsafeMutableBufferPointer { layernormForward($0.baseAddress!, &mean, &rstd, x, w, b, N, C) }
    slow.withUnsafeMutableBufferPointer { layernormForwardNaive($0.baseAddress!, x, w, b, N, C) }
    XCTAssertLessThan(maxDiff(fast, slow), 1e-5)
    XCTAssertEqual(mean[0], x[0..<C].reduce(0, +) / Float(C), accuracy: 1e-5)
  }

  /// Guards the three GELU variants and softmax against their defining formulas in Double.
  func testActivationsAndSoftmax() {
    var r = RNG(s: 4)
    let x = r.array(200).map { $0 * 6 }
    for act in [Activation.gelu, .geluTanh, .quickGelu] {
      var f = [Float](repeating: 0, count: x.count), s = f
      f.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, x, x.count, act) }
      s.withUnsafeMutableBufferPointer { activationForwardNaive($0.baseAddress!, x, x.count, act) }
      XCTAssertLessThan(maxDiff(f, s), 2e-6, act.rawValue)
    }
    var f = [Float](repeating: 0, count: x.count), s = f
    f.withUnsafeMutableBufferPointer { softmaxForward($0.baseAddress!, x, 4, 50) }
    s.withUnsafeMutableBufferPointer { softmaxForwardNaive($0.baseAddress!, x, 4, 50) }
    XCTAssertLessThan(maxDiff(f, s), 1e-6)
    XCTAssertEqual(Activation(configName: "gelu_pytorch_tanh"), .geluTanh)
    XCTAssertNil(Activation(configName: "relu6"))
  }

  /// Guards embedding lookup with position offset, L2 normalise and residual add.
  func testEmbeddingL2AndResidual() {
    let wte: [Float] = [0, 0, 1, 1, 2, 2], wpe: [Float] = [10, 20, 30, 40, 50, 60]
    var out = [Float](repeating: 0, count: 4)
    out.withUnsafeMutableBufferPointer { embeddingForward($0.baseAddress!, [2, 1], wte, wpe, 1, 2, 2, pos0: 1) }
    XCTAssertEqual(out, [32, 42, 51, 61])
    var v: [Float] = [3, 4, 0, 0]
    v.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, 2, 2) }
    XCTAssertEqual(v, [0.6, 0.8, 0, 0])
    var a: [Float] = [1, 2]
    a.withUnsafeMutableBufferPointer { residualForward($0.baseAddress!, [3, 4], 2) }
    XCTAssertEqual(a, [4, 6])
  }

  /// Guards parallelFor: every index runs exactly once and BLAS threads are restored.
  /// Guards the 16-wide exp against Double exp: relative error, the clamped extremes (finite,
  /// never infinite or NaN) and the lanes of a partial vector.
  func testVectorExp() {
    var worst: Double = 0
    var x: Float = -87
    while x < 88 {
      var v = SIMD16<Float>()
      for k in 0..<16 { v[k] = x + Float(k) * 0.0137 }
      let e = expSIMD(v)
      for k in 0..<16 { worst = max(worst, abs(Double(e[k]) / exp(Double(v[k])) - 1)) }
      x += 0.21
    }
    XCTAssertLessThan(worst, 4e-7)
    let big = expSIMD(SIMD16(repeating: 1000)), small = expSIMD(SIMD16(repeating: -1000))
    XCTAssertTrue(big[0].isFinite && big[0] > 1e38)
    XCTAssertTrue(small[0] >= 0 && small[0] < 1e-37)
  }

  /// Guards the split paths of the row-wise kernels: at sizes that go to both cores, results
  /// equal the one-row-at-a-time path (rows are independent) and the LayerNorm parameter
  /// gradients, summed per core, match a serial sum closely.
  func testSplitKernelsMatchRowByRow() {
    var r = RNG(s: 9)
    let (N, C) = (600, 96)
    let x = r.array(N * C).map { $0 * 4 }, w = r.array(C), b = r.array(C), g = r.array(N * C)
    for act in [Activation.geluTanh, .quickGelu] {
      var whole = [Float](repeating: 0, count: N * C), rows = whole
      whole.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, x, N * C, act) }
      for n in 0..<N {
        rows.withUnsafeMutableBufferPointer {
          activationForward($0.baseAddress! + n * C, Array(x[(n * C)..<((n + 1) * C)]), C, act)
        }
      }
      XCTAssertEqual(whole, rows, act.rawValue)
      var dWhole = [Float](repeating: 0.5, count: N * C), dRows = dWhole
      activationBackward(&dWhole, x, g, N * C, act)
      for n in 0..<N {
        dRows.withUnsafeMutableBufferPointer {
          activationBackward(
            $0.baseAddress! + n * C, Array(x[(n * C)..<((n + 1) * C)]), Array(g[(n * C)..<((n + 1) * C)]), C, act)
        }
      }
      XCTAssertEqual(dWhole, dRows, act.rawValue)
    }
    var y = [Float](repeating: 0, count: N * C), mean = [Float](repeating: 0, count: N), rstd = mean
    y.withUnsafeMutableBufferPointer { layernormForward($0.baseAddress!, &mean, &rstd, x, w, b, N, C) }
    var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: C), db = dw
    layernormBackward(&dx, &dw, &db, g, x, w, mean, rstd, N, C)
    var dx1 = dx.map { _ in Float(0) }, dw1 = dw.map { _ in Float(0) }, db1 = dw1
    for n in 0..<N {
      let sl = (n * C)..<((n + 1) * C)
      var dxr = [Float](repeating: 0, count: C)
      layernormBackward(&dxr, &dw1, &db1, Array(g[sl]), Array(x[sl]), w, [mean[n]], [rstd[n]], 1, C)
      dx1.replaceSubrange(sl, with: dxr)
    }
    XCTAssertEqual(dx, dx1)
    XCTAssertLessThan(maxDiff(dw, dw1), 1e-3)
    XCTAssertLessThan(maxDiff(db, db1), 1e-3)
  }

  func testParallelForRunsEachIndexOnce() {
    let before = Threads.blasThreads
    let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: 100)
    counts.initialize(repeating: 0)
    defer { counts.deallocate() }
    parallelFor(100) { i in counts[i] += 1 }
    XCTAssertTrue(counts.allSatisfy { $0 == 1 })
    XCTAssertEqual(Threads.blasThreads, before)
  }
}

final class GemvTests: XCTestCase {
  /// Guards the decode GEMV (SIMD tail handling, row split across the spin pool, bias) against
  /// the naive matmul, for widths that are and are not multiples of 16 and 64.
  func testGemvMatchesNaive() {
    var r = KernelTests.RNG(s: 9)
    for (C, OC) in [(768, 300), (100, 1000), (7, 513), (64, 64)] {
      let x = r.array(C), w = r.array(OC * C), b = r.array(OC)
      var fast = [Float](repeating: 0, count: OC), slow = fast
      for workers in [1, 2] {
        fast.withUnsafeMutableBufferPointer { gemvForward($0.baseAddress!, x, w, b, C, OC, workers: workers) }
        slow.withUnsafeMutableBufferPointer { matmulForwardNaive($0.baseAddress!, x, w, b, 1, C, OC) }
        XCTAssertLessThan(zip(fast, slow).map { abs($0 - $1) }.max()!, 1e-4, "\(C)x\(OC) workers \(workers)")
      }
    }
  }

  /// Guards the spin pool: many back-to-back runs complete (no lost wake-up), including after
  /// the helpers have gone to sleep.
  func testSpinPoolManyRunsAndWakeFromSleep() {
    let pool = SpinPool.shared
    let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: pool.helpers + 1)
    defer { hits.deallocate() }
    hits.initialize(repeating: 0)
    for i in 0..<20_000 {
      pool.run { k in hits[k] += 1 }
      if i == 10_000 { usleep(50_000) }  // let helpers fall asleep
    }
    XCTAssertTrue(hits.allSatisfy { $0 == 20_000 })
  }
}

/// The bf16 GEMM against its reference (operands rounded to bf16, sums in double), on shapes
/// with row, column and k tails, and against fp32 within bf16's rounding.
final class BF16GemmTests: XCTestCase {
  func testMatchesReferenceOnTails() {
    var rng = SystemRandomNumberGenerator()
    for (N, K, OC) in [(1, 2, 1), (7, 33, 70), (13, 64, 64), (197, 96, 130), (64, 257, 16)] {
      let a = (0..<(N * K)).map { _ in Float.random(in: -1...1, using: &rng) }
      let w = (0..<(OC * K)).map { _ in Float.random(in: -1...1, using: &rng) }
      let bias = (0..<OC).map { _ in Float.random(in: -1...1, using: &rng) }
      var got = [Float](repeating: .nan, count: N * OC), ref = got, f32 = got
      let m = w.withUnsafeBufferPointer { BF16Matrix($0.baseAddress!, outFeatures: OC, inFeatures: K) }
      bf16MatmulForward(&got, a, m, bias, N)
      bf16MatmulReference(&ref, a, w, bias, N, K, OC)
      matmulForward(&f32, a, w, bias, N, K, OC)
      let scale = Float(K).squareRoot()
      for i in 0..<(N * OC) {
        XCTAssertEqual(got[i], ref[i], accuracy: 1e-5 * scale * 4, "N=\(N) K=\(K) OC=\(OC) at \(i)")
        XCTAssertEqual(got[i], f32[i], accuracy: 0.02 * scale, "bf16 rounding bound")
      }
    }
  }
}

import CQuant
import Foundation

/// Numeric precision of the inference GEMMs.
public enum Precision: String, Sendable, CaseIterable {
  /// fp32 weights and activations through OpenBLAS sgemm (the default).
  case fp32
  /// Weights converted to bf16 once at load, activations rounded to bf16 per product,
  /// accumulation in fp32 (AVX512-BF16 `vdpbf16ps`); about half the weight memory traffic.
  case bf16
}

/// A weight matrix (OC, K) converted once to bf16 in the panel layout of Eosin's bf16 GEMM.
public final class BF16Matrix: @unchecked Sendable {
  public let outFeatures: Int
  public let inFeatures: Int
  let packed: UnsafeMutablePointer<UInt16>

  /// Packs `weight` (OC, K) row-major.
  public init(_ weight: UnsafePointer<Float>, outFeatures oc: Int, inFeatures k: Int) {
    outFeatures = oc
    inFeatures = k
    let n = Int(eq_bf16_packed_count(Int64(oc), Int64(k)))
    packed = .allocate(capacity: max(n, 1))
    eq_bf16_pack(weight, Int64(oc), Int64(k), packed)
  }

  deinit { packed.deallocate() }

  /// Whether this build runs the AVX512-BF16 kernel (else a portable scalar loop: correct, slow).
  public static var hasSIMD: Bool { eq_bf16_simd() != 0 }
}

/// out (N, OC) = inp (N, K) @ W^T + bias, with W in bf16. Rows are split across the cores like
/// ``matmulForward(_:_:_:_:_:_:_:)``; each part rounds its rows of `inp` to bf16 in its own
/// scratch.
public func bf16MatmulForward(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ w: BF16Matrix, _ bias: UnsafePointer<Float>?, _ N: Int
) {
  let K = w.inFeatures, OC = w.outFeatures
  let o = UnsafeMutablePointer(mutating: out)
  let work = { (r: Range<Int>) in
    let scratch = UnsafeMutablePointer<UInt16>.allocate(capacity: Int(eq_bf16_scratch_count(Int64(r.count), Int64(K))))
    defer { scratch.deallocate() }
    eq_bf16_gemm_rows(o + r.lowerBound * OC, inp + r.lowerBound * K, w.packed, bias, Int64(r.count), Int64(K), Int64(OC), scratch)
  }
  if N * K * OC >= 1 << 20 && N >= 12 {
    SpinPool.shared.ranges(N, minimum: 6, work)
  } else {
    work(0..<N)
  }
}

/// The reference: both operands rounded to bf16, products summed in double.
public func bf16MatmulReference(
  _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
  _ bias: UnsafePointer<Float>?, _ N: Int, _ K: Int, _ OC: Int
) {
  eq_bf16_gemm_ref(out, inp, weight, bias, Int64(N), Int64(K), Int64(OC))
}

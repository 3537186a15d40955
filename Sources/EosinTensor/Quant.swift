import CBLAS
import CQuant
import Foundation

/// The tensor element types of ggml that Eosin reads, by their GGUF type id.
///
/// Quantised types store blocks: `blockSize` elements in `blockBytes` bytes, laid out as ggml
/// lays them out (`block_q4_0`, `block_q4_K`, ...). Rows must hold a whole number of blocks.
public enum GGMLType: UInt32, Sendable, CaseIterable {
  case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

  /// Elements per block (1 for the float types).
  public var blockSize: Int {
    switch self {
    case .f32, .f16, .bf16: return 1
    case .q4_0, .q4_1, .q8_0: return 32
    case .q4_K, .q5_K, .q6_K: return 256
    }
  }

  /// Bytes per block.
  public var blockBytes: Int {
    switch self {
    case .f32: return 4
    case .f16, .bf16: return 2
    case .q4_0: return 18
    case .q4_1: return 20
    case .q8_0: return 34
    case .q4_K: return 144
    case .q5_K: return 176
    case .q6_K: return 210
    }
  }

  /// ggml's name for the type, as llama.cpp prints it.
  public var name: String {
    switch self {
    case .f32: return "F32"
    case .f16: return "F16"
    case .bf16: return "BF16"
    case .q4_0: return "Q4_0"
    case .q4_1: return "Q4_1"
    case .q8_0: return "Q8_0"
    case .q4_K: return "Q4_K"
    case .q5_K: return "Q5_K"
    case .q6_K: return "Q6_K"
    }
  }

  /// ggml's names for the type ids Eosin does not read, for error messages.
  public static func unsupportedName(_ id: UInt32) -> String {
    let names: [UInt32: String] = [
      6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
      19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
      28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]
    return names[id].map { "\($0) (type \(id))" } ?? "type \(id)"
  }
}

/// A read-only matrix of ggml-typed rows, for the LLaMA-family decoder: `rows` rows of `cols`
/// elements, `rowBytes` apart, in memory owned by someone else (usually a mapped GGUF file).
/// weight (OC, C) with OC = rows, C = cols.
public struct QuantMatrix: @unchecked Sendable {
  public let type: GGMLType
  public let rows: Int
  public let cols: Int
  public let rowBytes: Int
  public let data: UnsafeRawPointer

  /// - Precondition: `cols` is a multiple of the type's block size (checked by the file reader).
  public init(type: GGMLType, rows: Int, cols: Int, data: UnsafeRawPointer) {
    precondition(cols % type.blockSize == 0)
    self.type = type
    self.rows = rows
    self.cols = cols
    self.rowBytes = cols / type.blockSize * type.blockBytes
    self.data = data
  }

  /// Bytes read by one pass over the matrix.
  public var byteCount: Int { rows * rowBytes }

  /// Row `r` dequantised into out (C).
  public func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
    eq_dequantize(type.rawValue, data + r * rowBytes, out, Int64(cols))
  }

  /// out (OC) = W (OC,C) @ x (C), on the exact path (fp32 activations) or, when `xq` holds x
  /// quantised by ``QuantActivations/quantize(_:)`` and the type has an int8 kernel, on the q8
  /// path. Rows are split across the spin pool. Tolerance of the exact path against
  /// ``gemvNaive(_:_:)``: about 1e-5 relative (summation order).
  public func gemv(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ xq: QuantActivations? = nil) {
    let t = type.rawValue, rb = rowBytes, n = Int64(cols), d = data
    if let q = xq, eq_has_q8(t) != 0 {
      let c = q.c
      SpinPool.shared.ranges(rows, minimum: 64) { r in eq_gemv_q8(t, d, rb, c, out, n, Int64(r.lowerBound), Int64(r.upperBound)) }
    } else {
      SpinPool.shared.ranges(rows, minimum: 64) { r in eq_gemv_f32(t, d, rb, x, out, n, Int64(r.lowerBound), Int64(r.upperBound))
      }
    }
  }

  /// The naive twin of ``gemv(_:_:_:)`` (exact path): scalar dequantise-then-dot, one thread.
  public func gemvNaive(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>) {
    for r in 0..<rows { out[r] = eq_dot_f32_ref(type.rawValue, data + r * rowBytes, x, Int64(cols)) }
  }

  /// The naive twin of the q8 path: scalar integer dots, one thread.
  public func gemvNaive(_ out: UnsafeMutablePointer<Float>, _ xq: QuantActivations) {
    for r in 0..<rows { out[r] = eq_dot_q8_ref(type.rawValue, data + r * rowBytes, xq.c, Int64(cols)) }
  }

  /// Batched product for prompt processing. inp (N,C) -> out (N,OC) = inp @ W^T.
  /// F32 weights go straight to sgemm; other types are dequantised in blocks of rows into
  /// `scratch` (at least `min(rows, 512) * cols` floats) and multiplied by sgemm, so the
  /// weights are never expanded whole.
  /// Every row dequantised into `out` (rows * cols floats).
  public func dequantizeAll(into out: UnsafeMutablePointer<Float>) {
    if type == .f32 {
      out.update(from: data.assumingMemoryBound(to: Float.self), count: rows * cols)
      return
    }
    let t = type.rawValue, rb = rowBytes, d = data, C = cols
    SpinPool.shared.ranges(rows, minimum: 16) { r in
      eq_dequantize_rows(t, d, rb, out + r.lowerBound * C, Int64(C), Int64(r.lowerBound), Int64(r.upperBound))
    }
  }

  /// The product's input gradient: out (N, cols) = dout (N, rows) @ W, for backward passes
  /// through a frozen matrix. Dequantises 512 rows at a time into `scratch` (512 * cols floats).
  public func matmulTransposed(
    _ out: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ N: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    let C = cols, R = rows
    out.update(repeating: 0, count: N * C)
    if type == .f32 {
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(C), Int32(R), 1, dout, Int32(R),
        data.assumingMemoryBound(to: Float.self), Int32(C), 0, out, Int32(C))
      return
    }
    let chunk = 512
    var r0 = 0
    while r0 < R {
      let r1 = min(R, r0 + chunk)
      eq_dequantize_rows(type.rawValue, data, rowBytes, scratch, Int64(C), Int64(r0), Int64(r1))
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(C), Int32(r1 - r0), 1, dout + r0, Int32(R), scratch, Int32(C),
        1, out, Int32(C))
      r0 = r1
    }
  }

  public func matmul(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    if N == 1 {
      gemv(out, inp)
      return
    }
    let C = cols, OC = rows
    if type == .f32 {
      matmulForward(out, inp, data.assumingMemoryBound(to: Float.self), nil, N, C, OC)
      return
    }
    let chunk = 512
    var r0 = 0
    while r0 < OC {
      let r1 = min(OC, r0 + chunk)
      let t = type.rawValue, rb = rowBytes, d = data
      let base = r0
      SpinPool.shared.ranges(r1 - r0, minimum: 16) { r in
        eq_dequantize_rows(t, d, rb, scratch + r.lowerBound * C, Int64(C), Int64(base + r.lowerBound), Int64(base + r.upperBound))
      }
      // out[:, r0..<r1] = inp (N,C) @ scratch (r1-r0, C)^T, columns split across the cores.
      let cols = r1 - r0
      let o = out
      SpinPool.shared.ranges(N, minimum: 8) { rr in
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rr.count), Int32(cols), Int32(C), 1, inp + rr.lowerBound * C, Int32(C),
          scratch, Int32(C), 0, o + rr.lowerBound * OC + base, Int32(OC))
      }
      r0 = r1
    }
  }
}

/// Activations quantised to int8 blocks of 32 for the q8 path (llama.cpp's approach): one
/// buffer, reused across products of the same length. Not thread-safe.
public final class QuantActivations: @unchecked Sendable {
  public let count: Int
  private let q: UnsafeMutablePointer<Int8>
  private let d: UnsafeMutablePointer<Float>
  private let s: UnsafeMutablePointer<Float>

  /// - Precondition: `count` is a multiple of 32.
  public init(count: Int) {
    precondition(count % 32 == 0)
    self.count = count
    q = .allocate(capacity: count)
    d = .allocate(capacity: count / 32)
    s = .allocate(capacity: count / 32)
  }
  deinit {
    q.deallocate()
    d.deallocate()
    s.deallocate()
  }

  var c: eq_q8 { eq_q8(q: q, d: d, s: s) }

  /// Quantises x (count) into this buffer.
  public func quantize(_ x: UnsafePointer<Float>) { eq_quantize_q8(x, c, Int64(count)) }
}

/// Dequantises `n` elements of a ggml type from raw bytes. src (n of type) -> dst (n).
public func ggmlDequantize(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
  eq_dequantize(type.rawValue, src, dst, Int64(n))
}

/// The scalar twin of ``ggmlDequantize(_:_:_:_:)``, for tests.
public func ggmlDequantizeNaive(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
  eq_dequantize_ref(type.rawValue, src, dst, Int64(n))
}

/// Whether this build runs SIMD quantised kernels (AVX-512 or AVX2; else the portable ones).
public var quantKernelsUseSIMD: Bool { eq_simd_level() != 0 }

/// The instruction set of this build's quantised kernels: "AVX-512", "AVX2" or "portable".
public var quantKernelsSIMDName: String {
  switch eq_simd_level() {
  case 2: return "AVX-512"
  case 1: return "AVX2"
  default: return "portable"
  }
}

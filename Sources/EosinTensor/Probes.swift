import CBLAS
import Foundation

/// Machine probes measured in the same run as a benchmark, so ratios compare like with like.
public enum Probes {
  /// Monotonic seconds.
  public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

  /// Median GFLOP/s of `cblas_sgemm` for (M,K) @ (K,N)^T at the given BLAS thread count.
  /// Allocates 4*(M*K + N*K + M*N) bytes. Restores the previous thread count.
  public static func sgemmGFLOPS(M: Int, N: Int, K: Int, threads: Int, repeats: Int = 5) -> Double {
    let saved = Threads.blasThreads
    Threads.setBLASThreads(threads)
    defer { Threads.setBLASThreads(saved) }
    let a = [Float](repeating: 0.5, count: M * K), b = [Float](repeating: 0.25, count: N * K)
    var c = [Float](repeating: 0, count: M * N)
    var rates: [Double] = []
    for r in 0...repeats {
      let t0 = now()
      c.withUnsafeMutableBufferPointer { sgemmNT($0.baseAddress!, a, b, M, N, K) }
      let dt = now() - t0
      if r > 0 { rates.append(2 * Double(M) * Double(N) * Double(K) / dt / 1e9) }
    }
    return medianOf(rates)
  }

  /// Median read bandwidth in GB/s: `workers` threads each summing their share of a `bytes`
  /// buffer (larger than the caches) with 16-wide SIMD loads: the fastest plain read we found,
  /// so the bound it gives is a hard one.
  public static func readBandwidthGBs(bytes: Int = 1 << 29, workers: Int = Threads.cores, repeats: Int = 5) -> Double {
    let n = bytes / 4
    let buf = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
    defer { buf.deallocate() }
    buf.initialize(repeating: 1)
    var rates: [Double] = []
    let sums = UnsafeMutableBufferPointer<Float>.allocate(capacity: workers)
    defer { sums.deallocate() }
    for r in 0...repeats {
      let t0 = now()
      DispatchQueue.concurrentPerform(iterations: workers) { w in
        let lo = n * w / workers, hi = n * (w + 1) / workers
        let p = UnsafeRawPointer(buf.baseAddress!)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = lo & ~31
        while i + 32 <= hi {
          a0 += p.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
          a1 += p.loadUnaligned(fromByteOffset: 4 * i + 64, as: SIMD16<Float>.self)
          i += 32
        }
        sums[w] = (a0 + a1).sum()
      }
      let dt = now() - t0
      if r > 0 { rates.append(Double(bytes) / dt / 1e9) }
    }
    return medianOf(rates)
  }
}

/// The median of a non-empty list.
public func medianOf(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

import CBLAS
import Foundation

/// Threading for the CPU engine.
///
/// Measured here: small GEMMs (about 200 rows) do not speed up with 2 OpenBLAS threads, while two
/// single-threaded workers, one item per core, do. So batch work that splits into independent
/// items (tiles, images, heads) runs through ``parallelFor(_:_:)`` with BLAS at 1 thread, and
/// single large GEMMs (decode, big batches) let BLAS use every core.
public enum Threads {
  /// Cores available to this process.
  public static var cores: Int { ProcessInfo.processInfo.activeProcessorCount }

  /// Sets the number of threads OpenBLAS uses for one call. Global; not for use while other
  /// threads are inside BLAS.
  public static func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

  /// OpenBLAS's current thread count.
  public static var blasThreads: Int { Int(openblas_get_num_threads()) }
}

/// Runs `body(i)` for i in 0..<n on up to `workers` threads (default: every core), with
/// OpenBLAS set to one thread for the duration so each worker owns one core. Blocks until done.
/// Iterations must be independent; `body` must be thread-safe.
public func parallelFor(_ n: Int, workers: Int = Threads.cores, _ body: (Int) -> Void) {
  if n <= 0 { return }
  let w = max(1, min(workers, n))
  if w == 1 {
    for i in 0..<n { body(i) }
    return
  }
  let saved = Threads.blasThreads
  Threads.setBLASThreads(1)
  defer { Threads.setBLASThreads(saved) }
  // Static interleaved split: worker k takes k, k+w, ...; items are similar in cost.
  withoutActuallyEscaping(body) { b in
    DispatchQueue.concurrentPerform(iterations: w) { k in
      var i = k
      while i < n {
        b(i)
        i += w
      }
    }
  }
}

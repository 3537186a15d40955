import CBLAS
import CQuant
import Foundation
import Synchronization

/// Threading for the CPU engine.
///
/// Measured here: small GEMMs (about 200 rows) do not speed up with 2 OpenBLAS threads, while two
/// single-threaded workers, one item per core, do. So batch work that splits into independent
/// items (tiles, images, heads) runs through ``parallelFor(_:_:)`` with BLAS at 1 thread, and
/// single large GEMMs (decode, big batches) let BLAS use every core.
public enum Threads {
  /// Cores available to this process.
  public static let cores: Int = {
    // The process's CPU affinity (taskset, cgroups' cpusets), not the machine's core count.
    let a = Int(eq_affinity_cores())
    return a > 0 ? min(a, ProcessInfo.processInfo.activeProcessorCount) : ProcessInfo.processInfo.activeProcessorCount
  }()

  /// Sets the number of threads OpenBLAS uses for one call. Global; not for use while other
  /// threads are inside BLAS.
  public static func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

  /// OpenBLAS's current thread count.
  public static var blasThreads: Int { Int(openblas_get_num_threads()) }

  /// Eosin splits work across cores itself (rows of a GEMM, heads of attention, images of a
  /// batch), so OpenBLAS runs each call on one thread. Called before the first parallel kernel.
  public static func ensureSingleThreadedBLAS() { if openblas_get_num_threads() != 1 { openblas_set_num_threads(1) } }
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
  // Hold the spin pool, so kernels called inside a worker run inline instead of nesting.
  let held = SpinPool.shared.acquire()
  defer { if held { SpinPool.shared.release() } }
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

/// A pool of `cores - 1` helper threads that spin briefly between tasks, for many short
/// parallel calls in a row (decode runs about 50 GEMVs per token, each 0.05–5 ms). Waking a
/// Dispatch worker per call cost more than the work for the small matrices; spinning helpers
/// answer in well under a microsecond. Helpers spin for about 2 ms after their last task, then
/// sleep on a semaphore, so an idle process uses no CPU.
///
/// `run` is not reentrant and must be called from one thread at a time (the caller's thread
/// does share 0 of the work).
public final class SpinPool: @unchecked Sendable {
  /// The shared pool, sized to the machine.
  public static let shared = SpinPool(helpers: max(0, Threads.cores - 1))

  public let helpers: Int
  private let generation = Atomic<Int>(0)
  private let remaining = Atomic<Int>(0)
  private let busy = Atomic<Bool>(false)
  private final class Flag: @unchecked Sendable { let value = Atomic<Bool>(false) }
  private let sleeping: [Flag]
  private let wake: [DispatchSemaphore]
  private var task: ((Int) -> Void)? = nil
  // Sharing the machine: when helpers keep arriving late (their core is taken by another
  // process), the caller runs every part itself for a while, so it waits on no descheduled
  // thread. Touched only by the thread holding the pool.
  private var soloUntil: UInt64 = 0
  private var lateRuns = 0
  private var onTimeRuns = 0
  private var soloBackoff: UInt64 = 20_000_000

  init(helpers: Int) {
    self.helpers = helpers
    sleeping = (0..<helpers).map { _ in Flag() }
    wake = (0..<helpers).map { _ in DispatchSemaphore(value: 0) }
    for h in 0..<helpers {
      let t = Thread { [unowned self] in self.loop(h) }
      t.stackSize = 1 << 20
      t.start()
    }
  }

  /// Runs `body(k)` for k in 0..<parts, where parts = helpers + 1, and returns when all are
  /// done. The caller runs part 0. When the pool is already busy (a call from inside a
  /// ``parallelFor(_:workers:_:)`` worker, or from two threads at once), the caller runs every
  /// part itself, so `run` is always safe to call and never nests.
  public func run(_ body: @escaping (Int) -> Void) {
    let parts = helpers + 1
    if helpers == 0 || !acquire() {
      for k in 0..<parts { body(k) }
      return
    }
    let start = monotonicNanoseconds()
    if start < soloUntil {
      for k in 0..<parts { body(k) }
      release()
      return
    }
    Threads.ensureSingleThreadedBLAS()
    task = body
    remaining.store(helpers, ordering: .sequentiallyConsistent)
    // Sequentially consistent on both sides, so a helper announcing sleep and this bump cannot
    // both miss each other (a release store followed by an acquire load may reorder).
    generation.add(1, ordering: .sequentiallyConsistent)
    var woke = false
    for h in 0..<helpers where sleeping[h].value.load(ordering: .sequentiallyConsistent) {
      wake[h].signal()
      woke = true
    }
    body(0)
    let mine = monotonicNanoseconds()
    while remaining.load(ordering: .acquiring) > 0 { spinHint() }
    task = nil
    // A helper woken from sleep is slow to start for its own reasons; only spinning ones count.
    if !woke { noteWait(monotonicNanoseconds() - mine, own: mine - start, now: mine) }
    release()
  }

  /// Tracks how long the caller waited for the helpers after finishing its own part. Three late
  /// runs in a row (a wait over 300 µs and longer than the caller's own part: a helper was
  /// descheduled, not merely given a larger part) switch the pool to solo mode for
  /// a backoff that doubles (20 ms up to 1 s) while the lateness persists and resets after a
  /// long on-time stretch.
  private func noteWait(_ waited: UInt64, own: UInt64, now: UInt64) {
    if waited > 300_000 && waited > own {
      lateRuns += 1
      onTimeRuns = 0
      if lateRuns >= 3 {
        soloUntil = now + soloBackoff
        soloBackoff = min(soloBackoff * 2, 1_000_000_000)
        lateRuns = 0
      }
    } else {
      lateRuns = 0
      onTimeRuns += 1
      if onTimeRuns > 5000 { soloBackoff = 20_000_000 }
    }
  }

  /// Splits 0..<n into `helpers + 1` contiguous ranges and runs `body(range)` for each on the
  /// pool. Runs inline (one call with the whole range) when n is below `minimum`.
  public func ranges(_ n: Int, minimum: Int = 2, _ body: @escaping (Range<Int>) -> Void) {
    if n < minimum || helpers == 0 {
      body(0..<n)
      return
    }
    chunks(n) { _, r in if !r.isEmpty { body(r) } }
  }

  /// Splits 0..<n into `helpers + 1` contiguous ranges and runs `body(k, range)` for part k on
  /// the pool (ranges may be empty), for work that keeps a per-part partial result at index k.
  public func chunks(_ n: Int, _ body: @escaping (Int, Range<Int>) -> Void) {
    let parts = helpers + 1
    run { k in body(k, (n * k / parts)..<(n * (k + 1) / parts)) }
  }

  /// Takes the pool for the caller (true), or reports it busy (false).
  public func acquire() -> Bool {
    busy.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
  }

  /// Gives back a pool taken with ``acquire()``.
  public func release() { busy.store(false, ordering: .releasing) }

  private func loop(_ h: Int) {
    // Start from the generation at creation, not at thread start: a first run() may already have
    // bumped it before this thread was scheduled.
    var seen = 0
    while true {
      var spins = 0
      while generation.load(ordering: .acquiring) == seen {
        spins += 1
        spinHint()
        if spins > 200_000 {
          // Idle: sleep until run() signals. Re-check after announcing, so no wake-up is lost.
          sleeping[h].value.store(true, ordering: .sequentiallyConsistent)
          if generation.load(ordering: .sequentiallyConsistent) == seen { wake[h].wait() }
          sleeping[h].value.store(false, ordering: .sequentiallyConsistent)
          spins = 0
        }
      }
      seen = generation.load(ordering: .acquiring)
      if let t = task { t(h + 1) }
      remaining.subtract(1, ordering: .releasing)
    }
  }
}

@inline(__always) func spinHint() { eosin_cpu_relax() }

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call, about 20 ns).
@inline(__always) func monotonicNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

import Foundation

/// Classification metrics shared by training evaluation and `eosin eval`: balanced accuracy,
/// per-class recall, confusion matrix, expected calibration error, temperature fitting and
/// selective accuracy against coverage.
public enum Metrics {
  /// confusion[t][p] counts true class t predicted as p.
  public static func confusion(truth: [Int], predicted: [Int], classes: Int) -> [[Int]] {
    var m = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
    for (t, p) in zip(truth, predicted) where t >= 0 && t < classes && p >= 0 && p < classes { m[t][p] += 1 }
    return m
  }

  /// Recall of each class (nil for classes with no examples).
  public static func recall(_ m: [[Int]]) -> [Double?] {
    m.enumerated().map { i, row in
      let n = row.reduce(0, +)
      return n == 0 ? nil : Double(row[i]) / Double(n)
    }
  }

  /// Mean recall over the classes that have examples.
  public static func balancedAccuracy(_ m: [[Int]]) -> Double {
    let r = recall(m).compactMap { $0 }
    return r.isEmpty ? 0 : r.reduce(0, +) / Double(r.count)
  }

  /// Expected calibration error with equal-width confidence bins.
  public static func ece(confidence: [Float], correct: [Bool], bins: Int = 15) -> Double {
    var n = [Int](repeating: 0, count: bins), conf = [Double](repeating: 0, count: bins),
      acc = [Double](repeating: 0, count: bins)
    for (c, ok) in zip(confidence, correct) where c.isFinite {
      let b = min(bins - 1, max(0, Int(Double(c) * Double(bins))))
      n[b] += 1
      conf[b] += Double(c)
      acc[b] += ok ? 1 : 0
    }
    let total = Double(max(1, n.reduce(0, +)))
    var e = 0.0
    for b in 0..<bins where n[b] > 0 { e += Double(n[b]) / total * abs(acc[b] / Double(n[b]) - conf[b] / Double(n[b])) }
    return e
  }

  /// Expected calibration error of the top-class probability of logits (N,K) at temperature T.
  public static func ece(logits: [Float], truth: [Int], classes K: Int, temperature T: Float, bins: Int = 15) -> Double {
    let p = softmax(logits, classes: K, temperature: T)
    var conf: [Float] = [], ok: [Bool] = []
    for n in 0..<truth.count {
      let row = p[(n * K)..<((n + 1) * K)]
      let top = row.indices.max { row[$0] < row[$1] }!
      conf.append(row[top])
      ok.append(top - n * K == truth[n])
    }
    return ece(confidence: conf, correct: ok, bins: bins)
  }

  /// Softmax of logits / T, row-wise. logits (N,K).
  public static func softmax(_ logits: [Float], classes K: Int, temperature T: Float) -> [Float] {
    var out = logits
    let N = logits.count / K
    for n in 0..<N {
      var m = -Float.infinity
      for k in 0..<K { m = max(m, logits[n * K + k] / T) }
      var s: Float = 0
      for k in 0..<K {
        let e = expf(logits[n * K + k] / T - m)
        out[n * K + k] = e
        s += e
      }
      for k in 0..<K { out[n * K + k] /= s }
    }
    return out
  }

  /// Mean negative log-likelihood of the truth under softmax(logits / T).
  public static func nll(_ logits: [Float], truth: [Int], classes K: Int, temperature T: Float) -> Double {
    let p = softmax(logits, classes: K, temperature: T)
    var s = 0.0
    for (n, t) in truth.enumerated() { s -= log(max(Double(p[n * K + t]), 1e-12)) }
    return s / Double(max(1, truth.count))
  }

  /// The temperature minimising NLL (temperature scaling), by golden-section search on log T in
  /// [0.05, 20].
  public static func fitTemperature(_ logits: [Float], truth: [Int], classes K: Int) -> Float {
    fitTemperature(pooled: [(logits, truth, K)])
  }

  /// One temperature for several labelled sets (each with its own class count), minimising
  /// their pooled mean NLL (each set weighted by its size); golden-section search on log T in
  /// [0.05, 20].
  public static func fitTemperature(pooled sets: [(logits: [Float], truth: [Int], classes: Int)]) -> Float {
    func f(_ x: Double) -> Double { nll(pooled: sets, temperature: Float(exp(x))) }
    var a = log(0.05), b = log(20.0)
    let g = (sqrt(5.0) - 1) / 2
    var c = b - g * (b - a), d = a + g * (b - a)
    for _ in 0..<60 {
      if f(c) < f(d) { b = d } else { a = c }
      c = b - g * (b - a)
      d = a + g * (b - a)
    }
    return Float(exp((a + b) / 2))
  }

  /// Mean NLL over several labelled sets (each with its own class count), each weighted by its
  /// size.
  public static func nll(pooled sets: [(logits: [Float], truth: [Int], classes: Int)], temperature T: Float) -> Double {
    let n = Double(max(1, sets.reduce(0) { $0 + $1.truth.count }))
    return sets.reduce(0.0) {
      $0 + nll($1.logits, truth: $1.truth, classes: $1.classes, temperature: T) * Double($1.truth.count)
    } / n
  }

  /// The one-sided lower confidence bound of a proportion (Wilson score interval; z 1.645 is a
  /// 95% one-sided bound): how low the true accuracy may be, given `successes` of `trials`.
  public static func wilsonLowerBound(successes: Int, trials: Int, z: Double = 1.645) -> Double {
    guard trials > 0 else { return 0 }
    let n = Double(trials), p = Double(successes) / n, z2 = z * z
    return (p + z2 / (2 * n) - z * (p * (1 - p) / n + z2 / (4 * n * n)).squareRoot()) / (1 + z2 / n)
  }

  /// The review threshold guarded against small samples: the lowest confidence threshold on
  /// `grid` that keeps at least `minimumKept` predictions whose accuracy reaches
  /// `targetAccuracy` and whose lower confidence bound (``wilsonLowerBound(successes:trials:z:)``)
  /// is within `slack` of it. nil when none does, so every verdict should be flagged. A point
  /// estimate on a few kept tiles (19 of 20 right, bound 0.80) does not carry to unseen tiles;
  /// 250 of 264 (bound 0.93) does.
  public static func guardedThreshold(
    confidence: [Float], correct: [Bool], targetAccuracy: Double, minimumKept: Int = 20, slack: Double = 0.05,
    z: Double = 1.645, grid: [Float] = stride(from: 0.3, through: 0.99, by: 0.01).map { $0 }
  ) -> (threshold: Float, coverage: Double, accuracy: Double)? {
    for t in grid {
      let (kept, ok) = keptAndRight(confidence, correct, t)
      if kept >= minimumKept && Double(ok) >= targetAccuracy * Double(kept)
        && wilsonLowerBound(successes: ok, trials: kept, z: z) >= targetAccuracy - slack
      {
        return (t, Double(kept) / Double(max(1, confidence.count)), Double(ok) / Double(kept))
      }
    }
    return nil
  }

  /// Accuracy of the kept predictions and the share kept, when keeping those with confidence
  /// at or above each threshold.
  public static func selective(confidence: [Float], correct: [Bool], thresholds: [Float]) -> [(
    threshold: Float, coverage: Double, accuracy: Double
  )] {
    thresholds.map { t in
      let (kept, ok) = keptAndRight(confidence, correct, t)
      return (t, Double(kept) / Double(max(1, confidence.count)), kept == 0 ? 1 : Double(ok) / Double(kept))
    }
  }

  /// How many predictions have confidence at or above `t`, and how many of those are right.
  static func keptAndRight(_ confidence: [Float], _ correct: [Bool], _ t: Float) -> (kept: Int, right: Int) {
    var kept = 0, ok = 0
    for (c, r) in zip(confidence, correct) where c >= t {
      kept += 1
      if r { ok += 1 }
    }
    return (kept, ok)
  }
}

import EosinModels
import Foundation

/// Zero-shot classification metrics on labelled tiles, the one definition that `eosin eval
/// zero-shot` and `eosin train finalize` (EVALUATION.md) both report.
///
/// "Unflagged" means what a user sees: a tile whose prediction raises no review flag under the
/// full review policy (probability, margin, prompt spread, domain similarity).
public struct ZeroShotScores: Sendable {
  /// Classes of the prompt set, background included.
  public let classes: Int
  /// Tiles scored.
  public let count: Int
  /// Rows truth, columns predicted.
  public let confusion: [[Int]]
  public let balancedAccuracy: Double
  public let accuracy: Double
  /// Per-class recall (nil for a class with no tiles).
  public let recall: [Double?]
  /// Expected calibration error of the top-class probability at T = 1 and at the classifier's
  /// temperature.
  public let eceUncalibrated: Double
  public let ece: Double
  /// Share of tiles with no review flag, and the accuracy among them (1 when none is kept).
  public let unflaggedShare: Double
  public let unflaggedAccuracy: Double
  /// Accuracy against coverage when keeping tiles whose calibrated top probability reaches each
  /// threshold.
  public let selective: [(threshold: Float, coverage: Double, accuracy: Double)]

  /// - Parameters:
  ///   - logits: (N, classes) raw logits from ``ZeroShotClassifier/logits(_:)``.
  ///   - predictions: the classifier's predictions for the same N tiles.
  ///   - truth: the class index of each tile.
  ///   - organs: the organ check and the tiles' embeddings, so that "unflagged" counts its flags
  ///     as every output does.
  public init(
    logits: [Float], predictions: [TilePrediction], truth: [Int], classifier: ZeroShotClassifier, policy: ReviewPolicy,
    organs: (check: OrganCheck, embeddings: [Float])? = nil, selectiveThresholds: [Float] = [0, 0.5, 0.6, 0.7, 0.8, 0.9]
  ) {
    let K = classifier.classCount
    classes = K
    count = truth.count
    let predicted = predictions.map { $0.top }
    confusion = Metrics.confusion(truth: truth, predicted: predicted, classes: K)
    balancedAccuracy = Metrics.balancedAccuracy(confusion)
    recall = Metrics.recall(confusion)
    let ok = zip(predicted, truth).map { $0 == $1 }
    accuracy = Double(ok.filter { $0 }.count) / Double(max(1, ok.count))
    let p1 = Metrics.softmax(logits, classes: K, temperature: 1)
    let conf1: [Float] = (0..<truth.count).map { n in p1[(n * K)..<((n + 1) * K)].max()! }
    let confT = predictions.map { $0.probs[$0.top] }
    eceUncalibrated = Metrics.ece(confidence: conf1, correct: ok)
    ece = Metrics.ece(confidence: confT, correct: ok)
    let organ = organs.map { o in
      zip(o.check.organs(o.embeddings), predictions).map {
        o.check.flag(set: classifier.promptSet, verdict: classifier.classNames[$1.top], found: $0) != nil
      }
    }
    let kept = predictions.indices.filter {
      policy.tileFlags(predictions[$0], classifier: classifier).isEmpty && !(organ?[$0] ?? false)
    }
    unflaggedShare = Double(kept.count) / Double(max(1, ok.count))
    unflaggedAccuracy = kept.isEmpty ? 1 : Double(kept.filter { ok[$0] }.count) / Double(kept.count)
    selective = Metrics.selective(confidence: confT, correct: ok, thresholds: selectiveThresholds)
  }

  /// The scores as JSON-ready values (for manifests and `--json`).
  public var json: [String: Any] {
    [
      "tiles": count, "balanced_accuracy": balancedAccuracy, "accuracy": accuracy, "confusion": confusion,
      "ece_t1": eceUncalibrated, "ece": ece, "unflagged_share": unflaggedShare, "unflagged_accuracy": unflaggedAccuracy,
      "selective": selective.map { ["threshold": Double($0.threshold), "coverage": $0.coverage, "accuracy": $0.accuracy] },
    ]
  }
}

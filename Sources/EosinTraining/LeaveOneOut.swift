import EosinPipelines
import Foundation

/// Leave-one-dataset-out evaluation: zero-shot on a tile set the weights never saw and were
/// never fitted on, under the full review policy and under the same policy without the
/// class-support check (what the image-side checks catch on their own). `eosin eval lodo` runs
/// it; ``WeightsFinalizer`` and the command share ``section(_:)`` for the report.
public enum LeaveOneOut {
  /// One prompt set's result.
  public struct Row: Sendable {
    public var set: String
    public var classes: Int, tiles: Int
    public var balancedAccuracy: Double
    public var flaggedShare: Double, unflaggedAccuracy: Double
    public var flaggedShareWithoutClassSupport: Double, unflaggedAccuracyWithoutClassSupport: Double
    /// Share of the tiles over the out-of-domain tile limit.
    public var outOfDomainShare: Double

    /// The row as JSON for `lodo.json`.
    public var json: [String: Any] {
      [
        "prompt_set": set, "tiles": tiles, "balanced_accuracy": balancedAccuracy, "flagged_share": flaggedShare,
        "unflagged_accuracy": unflaggedAccuracy, "flagged_share_without_class_support": flaggedShareWithoutClassSupport,
        "unflagged_accuracy_without_class_support": unflaggedAccuracyWithoutClassSupport,
        "out_of_domain_share": outOfDomainShare,
      ]
    }
  }

  /// Scores tiles already embedded and classified by `classifier`.
  public static func row(_ t: ScoredTiles, classifier clf: ZeroShotClassifier, bundle: ModelBundle, organs: OrganCheck?) -> Row {
    var imageOnly = bundle.thresholds
    imageOnly.trainedOrgans = nil
    func scores(_ th: ReviewThresholds) -> ZeroShotScores {
      ZeroShotScores(
        logits: t.logits, predictions: t.predictions, truth: t.truth, classifier: clf, policy: ReviewPolicy(thresholds: th),
        organs: organs.map { ($0, t.embeddings) })
    }
    let full = scores(bundle.thresholds), image = scores(imageOnly)
    var ood = 0.0
    let d = t.predictions.compactMap(\.outlier)
    if let lim = bundle.thresholds.maxOutlierDistance, !d.isEmpty {
      ood = Double(d.filter { $0 > lim }.count) / Double(d.count)
    }
    return Row(
      set: clf.promptSet.name, classes: full.classes, tiles: full.count, balancedAccuracy: full.balancedAccuracy,
      flaggedShare: 1 - full.unflaggedShare, unflaggedAccuracy: full.unflaggedAccuracy,
      flaggedShareWithoutClassSupport: 1 - image.unflaggedShare, unflaggedAccuracyWithoutClassSupport: image.unflaggedAccuracy,
      outOfDomainShare: ood)
  }

  /// The markdown table of the rows, after a sentence saying what was left out and how.
  public static func markdown(_ rows: [Row], leftOut: String, tiles: Int, trainedBy: String, trainedOrgans: [String]) -> String {
    func acc(_ share: Double, _ a: Double) -> String { share < 1 ? String(format: "%.3f", a) : "none unflagged" }
    var md =
      "The recipe of `make weights`, trained without **\(leftOut)** (\(trainedBy.isEmpty ? "`make weights-lodo`" : "`" + trainedBy + "`")); temperature, review threshold and out-of-domain limits fitted on the other datasets' val splits; all \(tiles) \(leftOut) tiles scored, nothing fitted on them. Trained organs of that model: \(trainedOrgans.joined(separator: ", ")).\n\n| prompt set | classes | tiles | balanced accuracy | flagged share | unflagged accuracy | flagged share without the class-support check | unflagged accuracy without it | over the out-of-domain tile limit |\n|---|---|---|---|---|---|---|---|---|\n"
    for r in rows {
      md +=
        "| \(r.set) | \(r.classes) | \(r.tiles) | \(String(format: "%.3f", r.balancedAccuracy)) | \(String(format: "%.3f", r.flaggedShare)) | \(acc(r.flaggedShare, r.unflaggedAccuracy)) | \(String(format: "%.3f", r.flaggedShareWithoutClassSupport)) | \(acc(r.flaggedShareWithoutClassSupport, r.unflaggedAccuracyWithoutClassSupport)) | \(String(format: "%.3f", r.outOfDomainShare)) |\n"
    }
    return md
  }

  static let heading = "\n## Leave one dataset out\n"

  /// The report section for a result's markdown (nil: not measured yet, `file` says where it goes).
  public static func section(_ markdown: String?, file: String) -> String {
    heading + "\n"
      + (markdown
        ?? "Not measured for these weights yet: `make weights-lodo` trains the same recipe without one dataset and writes `\(file)`.\n")
  }

  /// `report` with its leave-one-dataset-out section replaced by `markdown`'s, as finalize would
  /// write it; nil when the report has no such section.
  public static func replacingSection(in report: String, with markdown: String) -> String? {
    guard let a = report.range(of: heading) else { return nil }
    let end = report.range(of: "\n## ", range: a.upperBound..<report.endIndex)?.lowerBound ?? report.endIndex
    return report.replacingCharacters(in: a.lowerBound..<end, with: section(markdown, file: ""))
  }
}

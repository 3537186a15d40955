import ArgumentParser
import EosinPipelines
import EosinTraining
import Foundation

/// `eosin train finalize`: parses the options, runs ``WeightsFinalizer``, writes EVALUATION.md.
struct TrainFinalize: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "finalize",
    abstract: "Calibrate on val, evaluate on test, and write Weights/NAME/manifest.json and EVALUATION.md.")

  @Option(help: "Weights folder.") var weights = "Weights/eosin-small-v1"
  @Option(help: "LC25000 lung tiles.") var lung = "../shared/data/tiles/lc25000-lung"
  @Option(help: "EBHI-Seg tiles.") var ebhi = "../shared/data/tiles/ebhi-seg"
  @Option(help: "Where to write the evaluation report.") var report = "EVALUATION.md"
  @Option(help: "Unflagged accuracy the review threshold aims for on val.") var targetAccuracy: Double = 0.9

  func run() throws {
    let f = WeightsFinalizer(
      weights: weights, lung: lung, ebhi: ebhi, targetAccuracy: targetAccuracy, dirs: promptDirs,
      makeGrounded: { try groundedLM($0, bundle: $1).0 },
      log: warn)
    let (_, md) = try f.run()
    try writeAtomically(Data(md.utf8), to: report)
    print(md)
  }
}

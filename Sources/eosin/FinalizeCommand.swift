import ArgumentParser
import EosinPipelines
import EosinTraining
import Foundation

/// The datasets of ../shared/data that finalize knows by folder name: display name, prompt sets
/// (its own first) and terms.
let knownDatasets: [String: (name: String, sets: [String], terms: String)] = [
  "lc25000-lung": (
    "LC25000 lung", ["lung"], "No licence stated upstream; cite Borkowski et al. 2019 (arXiv:1912.12142). Research use."
  ),
  "ebhi-seg": (
    "EBHI-Seg", ["colorectal", "colorectal-coarse"], "CC BY 4.0 (MIaMIA group, figshare 10.6084/m9.figshare.21540159)."
  ),
  "prostate-panda": (
    "PANDA prostate", ["prostate"], "CC BY-NC-SA 4.0 (PANDA challenge, Bulten et al., Nat Med 2022): non-commercial."
  ),
  "endometrium": (
    "Endometrium", ["endometrium", "endometrium-subtypes"],
    "Free to use with citation (Zhang et al. 2018, figshare 10.6084/m9.figshare.7306361; Sun et al., IEEE JBHI 2020); research use."
  ),
  "monuseg-organs": ("MoNuSeg organs", ["organ"], "CC BY-NC-SA 4.0 (MoNuSeg 2018, Kumar et al.): non-commercial."),
  "brain-glioma": ("Brain glioma", ["organ"], "No terms stated (TCGA and Emory): research use only."),
  "breakhis-400x": ("BreakHis 400x", ["organ"], "Research use (BreakHis, Spanhol et al. 2016)."),
  "camelyon16-lymph": ("CAMELYON16 lymph node", ["organ"], "CC0 (CAMELYON16)."),
]

/// `--sets FOLDER=SET[,SET...]` options as a table from folder name to prompt sets.
func setsTable(_ sets: [String]) throws -> [String: [String]] {
  var table: [String: [String]] = [:]
  for s in sets {
    let kv = s.split(separator: "=", maxSplits: 1).map(String.init)
    guard kv.count == 2, !kv[1].isEmpty else { throw CLIError("--sets \(s): expected FOLDER=SET[,SET...]") }
    table[kv[0]] = kv[1].split(separator: ",").map(String.init)
  }
  return table
}

/// A folder as a ``FinalizeDataset``: known folders by name, others by `--sets FOLDER=SET,SET`.
func finalizeDataset(_ dir: String, sets: [String: [String]]) throws -> FinalizeDataset {
  let folder = (dir as NSString).lastPathComponent
  if let s = sets[folder] {
    return FinalizeDataset(
      name: knownDatasets[folder]?.name ?? folder, dir: dir, promptSets: s, terms: knownDatasets[folder]?.terms ?? "not stated")
  }
  guard let k = knownDatasets[folder] else {
    throw CLIError("\(dir): no prompt set known for the dataset '\(folder)'; pass --sets \(folder)=SET[,SET...]")
  }
  return FinalizeDataset(name: k.name, dir: dir, promptSets: k.sets, terms: k.terms)
}

/// `eosin train finalize`: parses the options, runs ``WeightsFinalizer``, writes EVALUATION.md.
struct TrainFinalize: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "finalize",
    abstract: "Calibrate on val, evaluate on test, and write Weights/NAME/manifest.json and EVALUATION.md.")

  @Option(help: "Weights folder.") var weights = defaultWeights
  @Option(parsing: .upToNextOption, help: "Diagnostic tile sets (calibration, review threshold, out-of-domain model, test rows).")
  var data: [String] = defaultDiagnosticData
  @Option(parsing: .upToNextOption, help: "Organ-recognition tile sets (organ rows and out-of-domain rows).")
  var organData: [String] = defaultOrganData
  @Option(parsing: .upToNextOption, help: "Prompt sets of a dataset folder, FOLDER=SET[,SET...] (its own set first).")
  var sets: [String] = []
  @Option(
    parsing: .upToNextOption,
    help:
      "More tile sets for the chat evaluation's closed questions only, judged against their own diagnostic prompt sets (organs the weights were not trained on)."
  )
  var chatData: [String] = []
  @Option(help: "A previous version's recorded metrics to show beside these.") var record = "Weights/records/eosin-small-v1.json"
  @Option(help: "The leave-one-dataset-out result (make weights-lodo).") var lodo = "Weights/records/lodo.json"
  @Option(help: "Where to write the evaluation report.") var report = "EVALUATION.md"
  @Option(help: "Unflagged accuracy the review threshold aims for on val.") var targetAccuracy: Double = 0.95
  @Option(help: "Quantile of the val distances where the out-of-domain limits sit (0.5 to 1).") var outlierQuantile = 0.95
  @Flag(
    inversion: .prefixedNo,
    help:
      "Measure the out-of-domain distance on the backbone row and the tiles' fixed tissue statistics (without: the backbone row alone)."
  ) var outlierTissueStatistics = true
  @Option(
    help:
      "Shrinkage of the out-of-domain covariance (backbone and tissue statistics) towards its diagonal: each variance grows by this share of itself."
  ) var outlierShrinkage = 0.1
  @Flag(
    inversion: .prefixedNo,
    help:
      "Scale each training set's out-of-domain distances by its own val spread, so one limit flags about the same share of every set's tiles (without: one pooled scale)."
  ) var outlierScales = true
  @Flag(
    inversion: .prefixedNo,
    help:
      "Write the chat section: every chat model answers closed, yes/no, off-topic and general questions (most of finalize's time)."
  ) var chat = true
  @Option(
    help:
      "How zero-shot prompt phrases are read from now on: as-written, or lm (a phrase the text tower was not trained on borrows the text embeddings of the trained names nearest to it in the language model's hidden states; writes clip/vocabulary.json and records the language model's sha256 in the manifest)."
  ) var wording: Wording = .asWritten

  func run() throws {
    guard outlierShrinkage >= 0 && outlierShrinkage.isFinite else {
      throw ValidationError("--outlier-shrinkage must be 0 or more, not \(outlierShrinkage)")
    }
    guard (0.5...1).contains(outlierQuantile) else {
      throw ValidationError("--outlier-quantile must be between 0.5 and 1, not \(outlierQuantile)")
    }
    guard wording != .auto else { throw ValidationError("--wording must be as-written or lm") }
    let table = try setsTable(sets)
    let notes = try chatNotes()
    var f = WeightsFinalizer(
      weights: weights, name: (weights as NSString).lastPathComponent,
      datasets: try data.map { try finalizeDataset($0, sets: table) },
      organData: try organData.map { try finalizeDataset($0, sets: table) }, targetAccuracy: targetAccuracy,
      record: FileManager.default.fileExists(atPath: record) ? record : nil, lodo: lodo,
      languageModel: chat ? LanguageModel.Default.resolve(nil) : nil, dirs: promptDirs,
      makeGrounded: { try groundedLM($0, bundle: $1, notes: notes).0 },
      log: warn)
    f.outlierQuantile = outlierQuantile
    f.outlierTissueStatistics = outlierTissueStatistics
    f.outlierShrinkage = outlierShrinkage
    f.outlierScalesByDataset = outlierScales
    f.notes = notes
    f.chatData = try chatData.map { try finalizeDataset($0, sets: [:]) }
    if wording == .lm {
      guard let path = LanguageModel.Default.resolve(nil) else {
        throw CLIError("--wording lm needs the language model: fetch SmolLM2 (`make lm`) or set EOSIN_LM")
      }
      let names = try trainedVocabulary(weights)
      f.wording = (names, try WordingResolver(languageModel: path, vocabulary: names))
    }
    let (_, md) = try f.run()
    try writeAtomically(Data(md.utf8), to: report)
    print(md)
  }
}

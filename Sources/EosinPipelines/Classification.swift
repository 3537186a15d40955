import EosinModels
import EosinSlide
import Foundation

/// One evidence tile: where it is and how strongly it supports a class.
public struct EvidenceTile: Codable, Sendable {
  public var x: Int
  public var y: Int
  public var size: Int
  public var probability: Float
}

/// A slide-level zero-shot result.
public struct SlideResult: Sendable {
  public var classNames: [String]
  /// Calibrated slide probabilities from top-K mean pooling of tile logits (MI-Zero).
  public var probs: [Float]
  public var verdict: Int
  /// Share of tissue tiles whose top class is each class.
  public var fractions: [Double]
  /// Per class, the K tiles with the highest logits.
  public var evidence: [[EvidenceTile]]
  public var confidence: Confidence
  public var flags: [ReviewFlag]
  public var tiles: [TilePrediction]
  /// The review policy's flags for each tile (same order as ``tiles``): what every per-tile
  /// output (CSV, JSON, GeoJSON, heatmap) shows.
  public var tileFlags: [[ReviewFlag]]
  public var topK: Int
  /// The calibration temperature and where it came from.
  public var temperature: Float
  public var temperatureSource: TemperatureSource
}

/// Pools tile predictions into a slide verdict and applies the review policy.
public enum SlidePooling {
  /// Top-K mean pooling: for each class, the mean of its K highest tile logits; then a softmax
  /// at the calibration temperature. Tiles whose top class is the background class do not vote.
  /// - Parameter k: tiles pooled per class (default: 10, or fewer when the slide is small).
  public static func pool(
    _ preds: [TilePrediction], tiles: [TileRef], extent0: Double, classifier: ZeroShotClassifier, k: Int?, facts: InputFacts,
    policy: ReviewPolicy
  ) -> SlideResult {
    let K = classifier.classCount
    let bg = classifier.backgroundIndex
    var voters = preds.indices.filter { preds[$0].top != bg }
    if voters.isEmpty { voters = Array(preds.indices) }
    let kk = max(1, min(k ?? 10, voters.count))
    var pooled = [Float](repeating: 0, count: K)
    var evidence: [[EvidenceTile]] = []
    for c in 0..<K {
      let order = voters.sorted { preds[$0].logits[c] > preds[$1].logits[c] }.prefix(kk)
      pooled[c] = order.map { preds[$0].logits[c] }.reduce(0, +) / Float(order.count)
      evidence.append(
        order.map { EvidenceTile(x: tiles[$0].x, y: tiles[$0].y, size: Int(extent0.rounded()), probability: preds[$0].probs[c]) })
    }
    let probs =
      preds.isEmpty
      ? [Float](repeating: 1 / Float(K), count: K) : Metrics.softmax(pooled, classes: K, temperature: classifier.temperature)
    var fractions = [Double](repeating: 0, count: K)
    for p in preds { fractions[p.top] += 1 / Double(max(1, preds.count)) }
    let order = probs.indices.sorted { probs[$0] > probs[$1] }
    let verdict = order[0]
    // Slide-level prompt sensitivity and domain: averaged over the verdict's evidence tiles.
    let ev = voters.sorted { preds[$0].logits[verdict] > preds[$1].logits[verdict] }.prefix(kk)
    let spread = ev.isEmpty ? 0 : ev.map { preds[$0].promptSpread }.reduce(0, +) / Float(ev.count)
    let domain = ev.isEmpty ? 0 : ev.map { preds[$0].domain }.reduce(0, +) / Float(ev.count)
    var conf = Confidence(
      probability: probs[verdict], margin: K > 1 ? probs[order[0]] - probs[order[1]] : 1, promptSpread: spread, domain: domain,
      tissueFraction: facts.tissueFraction)
    // Out of domain is a property of the input, not of a prompt set: the mean distance over every
    // tissue tile of the slide, so each prompt set's verdict on it gets the same answer.
    let dists = preds.compactMap { $0.outlier }
    if !dists.isEmpty { conf.outlier = dists.reduce(0, +) / Float(dists.count) }
    if preds.isEmpty { conf.probability = 0 }
    var flags = policy.flags(
      conf, verdict: classifier.classNames[verdict], runnerUp: K > 1 ? classifier.classNames[order[1]] : nil, facts: facts,
      slide: true, set: classifier.promptSet)
    if preds.isEmpty { flags.append(ReviewFlag(code: "no-tiles", reason: "no tissue tiles were found")) }
    if verdict == bg { flags.append(ReviewFlag(code: "no-tissue", reason: "no interpretable tissue")) }
    flags += policy.caveats(classifier.classNames[verdict], classifier)
    return SlideResult(
      classNames: classifier.classNames, probs: probs, verdict: verdict, fractions: fractions, evidence: evidence,
      confidence: conf, flags: flags, tiles: preds,
      tileFlags: preds.map { policy.tileFlags($0, classifier: classifier, facts: facts) },
      topK: kk, temperature: classifier.temperature, temperatureSource: classifier.temperatureSource)
  }
}

/// A temperature fitted by `eosin calibrate` on a user's labelled tiles, picked up by later runs
/// with the same model and prompt set.
public struct CalibrationFile: Codable, Sendable {
  public var modelSHA256: String
  public var promptSetSHA256: String
  public var promptSet: String
  public var temperature: Float
  public var tiles: Int
  public var nllBefore: Double
  public var nllAfter: Double
  public var eceBefore: Double
  public var eceAfter: Double
  /// The identity of the resolver that read the prompt wording when the temperature was fitted
  /// (``WordingResolver/identity``); nil: the prompts as written. A temperature fitted on one
  /// reading of the prompts does not hold for another.
  public var wording: String? = nil

  enum CodingKeys: String, CodingKey {
    case modelSHA256 = "model_sha256", promptSetSHA256 = "prompt_set_sha256", promptSet = "prompt_set", temperature, tiles
    case nllBefore = "nll_before", nllAfter = "nll_after", eceBefore = "ece_before", eceAfter = "ece_after", wording
  }

  public init(
    modelSHA256: String, promptSetSHA256: String, promptSet: String, temperature: Float, tiles: Int, nllBefore: Double,
    nllAfter: Double,
    eceBefore: Double, eceAfter: Double
  ) {
    self.modelSHA256 = modelSHA256
    self.promptSetSHA256 = promptSetSHA256
    self.promptSet = promptSet
    self.temperature = temperature
    self.tiles = tiles
    self.nllBefore = nllBefore
    self.nllAfter = nllAfter
    self.eceBefore = eceBefore
    self.eceAfter = eceAfter
  }

  /// Where the calibration for (model, prompt set, wording) lives under a cache/config folder;
  /// `wording` is the identity of the resolver that reads the prompts (nil: as written, the
  /// path calibrations had before wording was read).
  public static func path(dir: String, modelSHA: String, promptSetSHA: String, wording: String? = nil) -> String {
    "\(dir)/calibration/\(modelSHA.prefix(16))-\(promptSetSHA.prefix(16))"
      + (wording.map { "-wording-\($0.prefix(16))" } ?? "") + ".json"
  }

  /// The saved temperature for (model, prompt set, wording), if any.
  public static func load(dir: String, modelSHA: String, promptSetSHA: String, wording: String? = nil) -> CalibrationFile? {
    let p = path(dir: dir, modelSHA: modelSHA, promptSetSHA: promptSetSHA, wording: wording)
    guard let d = FileManager.default.contents(atPath: p),
      let c = try? JSONDecoder().decode(CalibrationFile.self, from: d), c.wording == wording
    else { return nil }
    return c
  }
}

/// Gathers image inputs: files, and folders searched recursively, in a stable order.
public enum InputCollector {
  public enum Kind: Sendable { case image, slide }
  public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "tif", "tiff"]
  public static let slideExtensions: Set<String> = ["svs", "ndpi", "mrxs", "vms", "vmu", "scn", "bif", "svslide", "tif", "tiff"]

  /// Expands inputs into (path, kind). A TIFF is a slide when OpenSlide opens it as a tiled
  /// pyramid, else an image.
  /// - Throws: ``PipelineError`` for a missing path, an empty folder, or an unknown file type.
  public static func collect(_ inputs: [String]) throws -> [(String, Kind)] {
    var out: [(String, Kind)] = []
    for p in inputs {
      var isDir: ObjCBool = false
      guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else {
        var st = stat()
        if lstat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
          throw PipelineError.file(path: p, message: "a symbolic link that leads nowhere (broken, or a loop)")
        }
        throw PipelineError.file(path: p, message: "no such file or directory")
      }
      if isDir.boolValue {
        var found: [String] = []
        let e = FileManager.default.enumerator(atPath: p)
        while let f = e?.nextObject() as? String {
          let ext = (f as NSString).pathExtension.lowercased()
          if imageExtensions.contains(ext) || slideExtensions.contains(ext) {
            found.append((p as NSString).appendingPathComponent(f))
          }
        }
        guard !found.isEmpty else { throw PipelineError.file(path: p, message: "folder holds no images or slides") }
        for f in found.sorted() { out.append((f, kind(f))) }
      } else {
        let ext = (p as NSString).pathExtension.lowercased()
        guard imageExtensions.contains(ext) || slideExtensions.contains(ext) else {
          throw PipelineError.file(
            path: p,
            message: "unknown file type '.\(ext)'; expected an image (jpg, png, tif) or a slide (svs, ndpi, mrxs, tiff, ...)")
        }
        out.append((p, kind(p)))
      }
    }
    return out
  }

  static func kind(_ p: String) -> Kind {
    let ext = (p as NSString).pathExtension.lowercased()
    if ["jpg", "jpeg", "png"].contains(ext) { return .image }
    if ["tif", "tiff"].contains(ext) { return (try? Slide(path: p)) != nil ? .slide : .image }
    return .slide
  }
}

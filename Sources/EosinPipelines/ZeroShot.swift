import EosinModels
import EosinTensor
import EosinWeights
import Foundation

/// Where a classifier's calibration temperature came from.
public enum TemperatureSource: Sendable, Equatable {
  /// The weights manifest (fitted on Eosin's validation tiles).
  case manifest
  /// A file written by `eosin calibrate` for this model and prompt set.
  case calibration(path: String)
  /// Given on the command line.
  case explicit

  /// A short label: `manifest`, `calibration FILE` or `explicit`.
  public var label: String {
    switch self {
    case .manifest: return "weights manifest"
    case .calibration(let p): return "calibration \(p)"
    case .explicit: return "command line"
    }
  }
}

/// A tile's zero-shot result.
public struct TilePrediction: Sendable {
  /// Calibrated probabilities over ``ZeroShotClassifier/classNames``.
  public var probs: [Float]
  /// Raw logits (scale x cosine).
  public var logits: [Float]
  public var top: Int
  /// Probability of the top class minus the runner-up.
  public var margin: Float
  /// Standard deviation of the top class's probability across templates.
  public var promptSpread: Float
  /// Best cosine similarity to any class (domain score).
  public var domain: Float
  /// Distance to the training embeddings (``OutlierModel``), when the weights have the model.
  public var outlier: Float? = nil
}

/// Zero-shot classification from text prompts. Class embeddings are the normalised mean over
/// synonyms x templates (CONCH style); per-template class embeddings measure prompt
/// sensitivity. Text embeddings are cached on disk keyed by model sha256 + prompt-set sha256
/// (and the identity of the bundle's ``ModelBundle/wording`` resolver when one reads the prompts).
public final class ZeroShotClassifier: @unchecked Sendable {
  public let bundle: ModelBundle
  public let promptSet: PromptSet
  public let classNames: [String]
  /// Index of the background class in ``classNames``, if the set has one.
  public let backgroundIndex: Int?
  /// (K, D) normalised class embeddings.
  public let classEmbeddings: [Float]
  /// Per template: (K, D) normalised class embeddings.
  public let templateEmbeddings: [[Float]]
  public var temperature: Float
  /// Where ``temperature`` came from; every output that shows a probability names it.
  public var temperatureSource: TemperatureSource
  public let fromCache: Bool
  /// The resolver that read the prompt wording through a language model (the bundle's
  /// ``ModelBundle/wording`` when the classifier was built), or nil: as written.
  public let wording: WordingResolver?
  /// The phrases of this set that were read as written although the weights' temperature and
  /// review thresholds were fitted with them read through a language model (the manifest's
  /// `wording` entry, when the bundle has no resolver: that language model is not fetched, or
  /// another one was given). Phrases among the names the text tower was trained on are not
  /// here: the resolver never changes them. Empty when the wording is read as fitted.
  public let unreadPhrases: [String]

  /// - Parameter temperature: an explicit temperature; nil: the one `eosin calibrate` fitted for
  ///   this model and prompt set (found under `cacheDir`), else the weights manifest's. Every
  ///   command that scores a (model, prompt set) pair builds its classifier here, so a fitted
  ///   temperature reaches classify, report, chat and eval alike.
  ///   Each phrase that is not a trained name is read through the bundle's ``ModelBundle/wording``
  ///   resolver when it has one.
  public init(bundle: ModelBundle, promptSet: PromptSet, cacheDir: String?, temperature: Float? = nil) throws {
    self.bundle = bundle
    self.promptSet = promptSet
    let wording = bundle.wording
    self.wording = wording
    let all = promptSet.allClasses
    if let entry = bundle.manifest.wording {
      var seen = Set<String>()
      let phrases = all.flatMap(\.phrases).filter { seen.insert($0.trimmingCharacters(in: .whitespaces).lowercased()).inserted }
      if let w = wording {
        unreadPhrases = phrases.filter { !w.canRead($0) }
      } else {
        // A vocabulary that cannot be read trains nothing: every phrase counts as unread.
        let trained = Set(((try? ModelBundle.vocabulary(bundle, entry).names) ?? []).map { $0.lowercased() })
        unreadPhrases = phrases.filter { !trained.contains($0.trimmingCharacters(in: .whitespaces).lowercased()) }
      }
    } else {
      unreadPhrases = []
    }
    classNames = all.map { $0.name }
    backgroundIndex = promptSet.background == nil ? nil : all.count - 1
    if let t = temperature {
      self.temperature = t
      temperatureSource = .explicit
    } else if let dir = cacheDir,
      let cal = CalibrationFile.load(
        dir: dir, modelSHA: bundle.clipSHA256, promptSetSHA: promptSet.sha256, wording: wording?.identity)
    {
      self.temperature = cal.temperature
      temperatureSource = .calibration(
        path: CalibrationFile.path(
          dir: dir, modelSHA: bundle.clipSHA256, promptSetSHA: promptSet.sha256, wording: wording?.identity))
    } else {
      self.temperature = bundle.temperature
      temperatureSource = .manifest
    }
    let D = bundle.clip.embedDim, K = all.count, NT = promptSet.templates.count
    var key = "\(bundle.clipSHA256.prefix(16))-\(promptSet.sha256.prefix(16))"
    if let w = wording { key += "-wording-\(w.identity.prefix(16))" }
    let cachePath = cacheDir.map { "\($0)/text/\(key).safetensors" }
    if let p = cachePath, let f = try? SafeTensorsFile(path: p), let t = try? f.tensor("templates", shape: [NT, K, D]) {
      templateEmbeddings = (0..<NT).map { Array(t.data[($0 * K * D)..<(($0 + 1) * K * D)]) }
      fromCache = true
    } else {
      // One forward for every phrase of every class under every template.
      var texts: [String] = [], owner: [(Int, Int)] = []
      for (ti, tmpl) in promptSet.templates.enumerated() {
        for (k, c) in all.enumerated() {
          for ph in c.phrases {
            texts.append(tmpl.replacingOccurrences(of: "{}", with: ph))
            owner.append((ti, k))
          }
        }
      }
      var emb = try bundle.embedTexts(texts)
      if let w = wording {
        var resolutions: [String: WordingResolver.Resolution] = [:]
        for p in Set(all.flatMap(\.phrases)) { resolutions[p] = try w.resolve(p) }
        try Self.blend(&emb, phrases: all.map(\.phrases), templates: promptSet.templates, resolutions, bundle)
      }
      var te = [[Float]](repeating: [Float](repeating: 0, count: K * D), count: NT)
      for (i, (ti, k)) in owner.enumerated() { for d in 0..<D { te[ti][k * D + d] += emb[i * D + d] } }
      for ti in 0..<NT { te[ti].withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, K, D) } }
      templateEmbeddings = te
      fromCache = false
      if let p = cachePath {
        try? FileManager.default.createDirectory(
          atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? SafeTensorsWriter.write(
          ["templates": Tensor(shape: [NT, K, D], data: te.flatMap { $0 })], metadata: ["prompt_set": promptSet.name], to: p)
      }
    }
    var ce = [Float](repeating: 0, count: K * D)
    for te in templateEmbeddings { for i in 0..<(K * D) { ce[i] += te[i] } }
    ce.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, K, D) }
    classEmbeddings = ce
  }

  public var classCount: Int { classNames.count }

  /// How the prompt wording was read, for the line that names the temperature: nil as written;
  /// "wording read through MODEL"; or, without the language model, "wording as MODEL read it
  /// in finalize" (with how many phrases stayed as written).
  public var wordingLabel: String? {
    guard let w = wording else { return nil }
    if w.modelPath != nil { return "wording read through \(w.modelName)" }
    let n = unreadPhrases.count
    return "wording as \(w.modelName) read it in finalize" + (n > 0 ? " (\(n) phrase\(n == 1 ? "" : "s") as written)" : "")
  }

  /// Replaces each phrase's normalised text embedding in `emb` (rows in the order templates,
  /// then classes, then the class's phrases) by `(1 - share) · own + share · Σ weight ·
  /// embedding(template with name)` for its ``WordingResolver/Resolution`` in `resolutions`.
  public static func blend(
    _ emb: inout [Float], phrases: [[String]], templates: [String], _ resolutions: [String: WordingResolver.Resolution],
    _ bundle: ModelBundle
  ) throws {
    let D = bundle.clip.embedDim
    // Every borrowed name under every template, embedded in one pass.
    var texts: [String] = [], row: [String: Int] = [:]
    for tmpl in templates {
      for r in resolutions.values where r.share > 0 {
        for n in r.names {
          let t = tmpl.replacingOccurrences(of: "{}", with: n)
          if row[t] == nil {
            row[t] = texts.count
            texts.append(t)
          }
        }
      }
    }
    let named = texts.isEmpty ? [] : try bundle.embedTexts(texts)
    var i = 0
    for tmpl in templates {
      for ps in phrases {
        for p in ps {
          defer { i += 1 }
          guard let r = resolutions[p], r.share > 0 else { continue }
          let rows = r.names.map { row[tmpl.replacingOccurrences(of: "{}", with: $0)]! * D }
          for d in 0..<D {
            var m: Float = 0
            for (at, x) in zip(rows, r.weights) { m += x * named[at + d] }
            emb[i * D + d] = (1 - r.share) * emb[i * D + d] + r.share * m
          }
        }
      }
    }
    precondition(i * D == emb.count, "one embedding row per template and phrase")
  }

  /// Logits (N,K) = exp(logit_scale) x cosine, for normalised image embeddings (N,D).
  public func logits(_ emb: [Float]) -> [Float] { bundle.clip.logits(images: emb, texts: classEmbeddings) }

  /// Predictions for normalised image embeddings (N,D). `outlier` holds the rows' out-of-domain
  /// distances when the encoder measured them on its backbone (``SlideEmbeddings/outlier``,
  /// ``SlideIndex/embedImagesScored(_:bundle:)``); without it, weights whose model measures the
  /// embeddings themselves are measured here, and backbone models give no distance.
  public func predict(_ emb: [Float], outlier: [Float]? = nil) -> [TilePrediction] {
    let K = classCount, D = bundle.clip.embedDim, N = emb.count / D
    let lg = logits(emb)
    let probs = Metrics.softmax(lg, classes: K, temperature: temperature)
    let scale = expf(bundle.clip.logitScale)
    let perT = templateEmbeddings.map {
      Metrics.softmax(bundle.clip.logits(images: emb, texts: $0), classes: K, temperature: temperature)
    }
    let dist =
      outlier.flatMap { $0.count == N ? $0 : nil }
      ?? bundle.outlier.flatMap { $0.features == .embedding && $0.dim == D ? $0.distances(emb) : nil }
    var out: [TilePrediction] = []
    out.reserveCapacity(N)
    for n in 0..<N {
      let p = Array(probs[(n * K)..<((n + 1) * K)])
      let order = p.indices.sorted { p[$0] > p[$1] }
      let top = order[0]
      let tp = perT.map { $0[n * K + top] }
      let mean = tp.reduce(0, +) / Float(tp.count)
      let spread = (tp.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(tp.count)).squareRoot()
      let lrow = Array(lg[(n * K)..<((n + 1) * K)])
      out.append(
        TilePrediction(
          probs: p, logits: lrow, top: top, margin: K > 1 ? p[order[0]] - p[order[1]] : 1, promptSpread: spread,
          domain: (lrow.max() ?? 0) / scale, outlier: dist?[n]))
    }
    return out
  }
}

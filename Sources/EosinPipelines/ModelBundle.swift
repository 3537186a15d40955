import EosinModels
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// Review thresholds, fitted on validation data and stored in the weights manifest.
public struct ReviewThresholds: Codable, Equatable, Sendable {
  /// Flag when the calibrated probability of the verdict is below this.
  public var minProbability: Float = 0.6
  /// Flag when the verdict beats the runner-up by less than this.
  public var minMargin: Float = 0.15
  /// Flag when the verdict's probability varies across templates by more than this (std).
  public var maxPromptSpread: Float = 0.15
  /// Flag as out of domain when the best cosine similarity to any class is below this.
  public var minDomainSimilarity: Float = 0.1
  /// Flag a slide when less than this share of it is tissue.
  public var minTissueFraction: Double = 0.02
  /// Flag a tile as out of domain when its distance to the training embeddings
  /// (``OutlierModel``) is above this (a high quantile of val tiles' distances, set by
  /// `eosin train finalize --outlier-quantile`); nil: no check.
  public var maxOutlierDistance: Float? = nil
  /// The same for a slide verdict, on the mean distance of its evidence tiles (the same
  /// quantile of the mean over up to 10 tiles of each val group or case).
  public var maxSlideOutlierDistance: Float? = nil
  /// The organs the model was trained on (``OrganLexicon`` names); a class naming only other
  /// organs is flagged `class-unsupported`. nil: not stated, no check.
  public var trainedOrgans: [String]? = nil
  /// `min_probability` fitted for one prompt set on its own val tiles, keyed by
  /// ``key(for:)`` (its name and the first 12 hex digits of its sha256, so an edited set falls
  /// back to the pooled threshold). nil or absent: ``minProbability``.
  public var minProbabilityBySet: [String: Float]? = nil

  /// The key of a prompt set in ``minProbabilityBySet``.
  public static func key(for set: PromptSet) -> String { set.name + "@" + set.sha256.prefix(12) }

  /// The probability threshold for verdicts of `set`: its own when fitted, else the pooled one.
  public func minProbability(for set: PromptSet?) -> Float {
    set.flatMap { minProbabilityBySet?[Self.key(for: $0)] } ?? minProbability
  }

  enum CodingKeys: String, CodingKey {
    case minProbability = "min_probability", minMargin = "min_margin", maxPromptSpread = "max_prompt_spread"
    case minDomainSimilarity = "min_domain_similarity", minTissueFraction = "min_tissue_fraction"
    case maxOutlierDistance = "max_outlier_distance", maxSlideOutlierDistance = "max_slide_outlier_distance"
    case trainedOrgans = "trained_organs", minProbabilityBySet = "min_probability_by_set"
  }

  public init() {}
}

/// A set of Eosin weights: the CLIP pair (with its tokenizer and preprocessing) and what the
/// manifest says about them: native tile size and mpp, calibration temperature, review
/// thresholds. Loads `Weights/NAME/` (with `clip/` and `manifest.json`) or a bare HF CLIP
/// checkpoint folder (defaults: 224 px at 0.5 µm/px, temperature 1).
public final class ModelBundle: @unchecked Sendable {
  public let directory: String
  public let clip: CLIPModel
  public let tokenizer: Tokenizer
  public let preprocess: ImagePreprocessor
  /// sha256 of the CLIP weights file, the cache key for everything derived from the model.
  public let clipSHA256: String
  public let tileSize: Int
  public let mpp: Double
  public let temperature: Float
  public let thresholds: ReviewThresholds
  public let manifest: WeightsManifest
  /// The training-distribution model for out-of-domain checks (`clip/outlier.safetensors`),
  /// when the weights have one.
  public let outlier: OutlierModel?
  /// The image tower as a feature encoder (projected, L2-normalised CLIP embeddings) at the
  /// bundle's native tile size and mpp.
  public var featureEncoder: FeatureEncoder {
    FeatureEncoder(
      encoder: clip, preprocess: preprocess,
      name: manifest.name.isEmpty ? (directory as NSString).lastPathComponent : manifest.name,
      family: manifest.version > 0 ? "eosin" : "transformers-clip", sha256: clipSHA256, tileSize: tileSize, mpp: mpp,
      precision: precision, outlier: outlier.flatMap { $0.features.usesBackbone ? ($0, outlierSHA256 ?? "") : nil })
  }

  /// Width of the rows an out-of-domain model of kind `features` measures on `clip`'s tower.
  public static func outlierRowWidth(_ features: OutlierModel.Features, _ clip: CLIPModel) -> Int {
    switch features {
    case .embedding: return clip.embedDim
    case .backbone: return clip.backboneDim
    case .backboneAndTissue: return clip.backboneDim + TissueFeatures.count
    }
  }

  /// sha256 of `clip/outlier.safetensors`, when the weights have one.
  public let outlierSHA256: String?

  /// The decoder folder, when the bundle has one.
  public var decoderDirectory: String? { Self.decoderDirectory(in: directory) }

  /// The `decoder/` folder of the weights folder `path`, when it has one (a `config.json`).
  public static func decoderDirectory(in path: String) -> String? {
    let d = (path as NSString).appendingPathComponent("decoder")
    return FileManager.default.fileExists(atPath: d + "/config.json") ? d : nil
  }

  /// The precision the image tower runs at.
  public let precision: Precision

  /// Reads zero-shot prompt phrases the text tower was not trained on through a language model
  /// (``WordingResolver``); every ``ZeroShotClassifier`` built on this bundle uses it. nil: as
  /// written. Set by ``loadWording(languageModel:cacheDirectory:)`` when the manifest asks for it.
  public var wording: WordingResolver?

  /// Sets ``wording`` as the manifest's `wording` entry asks: its vocabulary (the names the
  /// text tower was trained on, checked against the manifest's sha256) read by the language
  /// model at `path` when that file's sha256 is the one the entry records. Without that file,
  /// the readings finalize stored in the vocabulary file still read the phrases they cover (a
  /// resolver without a language model; other phrases are kept as written).
  /// - Returns: nil when the wording is read through the language model, else why it is not
  ///   (no entry, no language model, another language model).
  /// - Throws: ``PipelineError/file`` for a vocabulary file that is missing, damaged or malformed.
  public func loadWording(languageModel path: String?, cacheDirectory: String?) throws -> String? {
    wording = nil
    guard let entry = manifest.wording else { return "these weights read prompts as written" }
    let v = try ModelBundle.vocabulary(self, entry)
    let why: String
    if let p = path, FileManager.default.fileExists(atPath: p) {
      if try LanguageModel.Default.cachedSHA256(p) == entry.languageModelSHA256 {
        let r = try WordingResolver(languageModel: p, vocabulary: v.names, cacheDirectory: cacheDirectory)
        if v.readingsIdentity == r.readingsIdentity { r.remember(v.readings) }
        wording = r
        return nil
      }
      why = "\((p as NSString).lastPathComponent) is not the language model the vocabulary was fitted with (\(entry.model))"
    } else {
      why = "the language model \(entry.model) is not fetched (`eosin models fetch`)"
    }
    if !v.readings.isEmpty {
      let r = try WordingResolver(
        readings: v.readings, vocabulary: v.names, languageModelSHA256: entry.languageModelSHA256, modelName: entry.model,
        cacheDirectory: cacheDirectory)
      if r.readingsIdentity == v.readingsIdentity { wording = r }
    }
    return why
  }

  /// The vocabulary file of a `wording` entry, its sha256 checked: `{"names": [...]}`, and the
  /// readings finalize stored (`"readings"`, valid under `"readings_identity"`).
  static func vocabulary(_ b: ModelBundle, _ entry: WeightsManifest.WordingEntry) throws -> VocabularyFile {
    let file = b.directory + "/" + entry.vocabulary
    _ = try verifiedSHA(b.manifest, entry.vocabulary, file)
    guard let d = FileManager.default.contents(atPath: file), let v = try? JSONDecoder().decode(VocabularyFile.self, from: d),
      !v.names.isEmpty
    else {
      throw PipelineError.file(path: file, message: "not a vocabulary file (a JSON object with a non-empty \"names\" list)")
    }
    return v
  }

  /// `clip/vocabulary.json`: the names the text tower was trained on and the stored readings.
  public struct VocabularyFile: Codable, Sendable {
    /// The trained names.
    public var names: [String]
    /// How finalize read each prompt phrase of the shipped prompt sets, by phrase.
    public var readings: [String: WordingResolver.Resolution] = [:]
    /// The ``WordingResolver/readingsIdentity`` the readings were made under.
    public var readingsIdentity: String? = nil
    /// What the file is, in words.
    public var note: String? = nil

    enum CodingKeys: String, CodingKey {
      case names, readings, note
      case readingsIdentity = "readings_identity"
    }

    public init(names: [String], readings: [String: WordingResolver.Resolution], readingsIdentity: String?, note: String?) {
      self.names = names
      self.readings = readings
      self.readingsIdentity = readingsIdentity
      self.note = note
    }

    public init(from decoder: Decoder) throws {
      let c = try decoder.container(keyedBy: CodingKeys.self)
      names = try c.decode([String].self, forKey: .names)
      readings = try c.decodeIfPresent([String: WordingResolver.Resolution].self, forKey: .readings) ?? [:]
      readingsIdentity = try c.decodeIfPresent(String.self, forKey: .readingsIdentity)
      note = try c.decodeIfPresent(String.self, forKey: .note)
    }
  }

  /// - Parameter precision: the image tower's GEMM precision (`--precision`); bf16 weights are
  ///   packed once here.
  /// - Throws: ``PipelineError`` or the underlying weights/tokenizer error, naming the file.
  public init(path: String, precision: Precision = .fp32) throws {
    self.precision = precision
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
      throw PipelineError.file(
        path: path, message: "weights folder not found; pass --weights DIR (default \(ModelBundle.defaultRelativePath))")
    }
    directory = path
    var sub: ObjCBool = false
    let hasClipFolder = FileManager.default.fileExists(atPath: path + "/clip", isDirectory: &sub) && sub.boolValue
    if hasClipFolder && !FileManager.default.fileExists(atPath: path + "/clip/config.json") {
      throw PipelineError.file(path: path + "/clip/config.json", message: "missing: the CLIP folder has no config.json")
    }
    let clipDir = hasClipFolder ? path + "/clip" : path
    let ck = try Checkpoint(path: clipDir)
    clip = try CLIPModel(checkpoint: ck).converted(to: precision)
    tokenizer = try Tokenizer.load(clipDir)
    let outlierPath = clipDir + "/outlier.safetensors"
    outlier = FileManager.default.fileExists(atPath: outlierPath) ? try OutlierModel(file: outlierPath) : nil
    let pre = clipDir + "/preprocessor_config.json"
    if let d = FileManager.default.contents(atPath: pre) {
      preprocess = try ImagePreprocessor(configData: d, imageSize: clip.imageSize)
    } else {
      preprocess = ImagePreprocessor(imageSize: clip.imageSize)
    }
    let manPath = path + "/manifest.json"
    let man =
      FileManager.default.fileExists(atPath: manPath)
      ? try WeightsManifest.load(manPath) : WeightsManifest(name: (path as NSString).lastPathComponent, version: 0)
    manifest = man
    clipSHA256 = try ModelBundle.verifiedSHA(man, "clip/model.safetensors", ck.weights.path)
    if FileManager.default.fileExists(atPath: outlierPath) {
      outlierSHA256 = try ModelBundle.verifiedSHA(man, "clip/outlier.safetensors", outlierPath)
    } else {
      outlierSHA256 = nil
    }
    if let o = outlier, o.dim != ModelBundle.outlierRowWidth(o.features, clip) {
      throw PipelineError.file(
        path: outlierPath,
        message:
          "measures \(o.features.rawValue) rows of width \(o.dim), but the image tower's are \(ModelBundle.outlierRowWidth(o.features, clip)) wide"
      )
    }
    tileSize = man.native?.tileSize ?? 224
    mpp = man.native?.mpp ?? 0.5
    temperature = Float(man.calibration?.temperature ?? 1)
    thresholds = man.review ?? ReviewThresholds()
  }

  /// Hashes a weights file and checks it against the sha256 the manifest records for it (when
  /// it records one). Returns the verified hash, the cache key for everything derived from the
  /// file.
  /// - Throws: ``PipelineError/file`` naming the file when it does not match: a damaged or
  ///   replaced file is refused, never run.
  public static func verifiedSHA(_ man: WeightsManifest?, _ relative: String, _ path: String) throws -> String {
    let h: String
    do { h = try SHA256.hex(fileAt: path) } catch {
      throw PipelineError.file(path: path, message: "cannot read the weights file")
    }
    if let want = man?.files[relative]?.sha256, want != h {
      throw PipelineError.file(
        path: path,
        message:
          "sha256 \(h.prefix(16))... does not match the manifest's \(want.prefix(16))...: the file is damaged or not the one these weights list"
      )
    }
    return h
  }

  /// The committed default weights, relative to the project root.
  public static let defaultRelativePath = "Weights/eosin-small-v2"

  /// The default weights: `$EOSIN_WEIGHTS`, else ``defaultRelativePath`` under the working
  /// directory or the project that holds the executable.
  public static func defaultPath(executable: String = CommandLine.arguments[0]) -> String {
    if let e = ProcessInfo.processInfo.environment["EOSIN_WEIGHTS"], !e.isEmpty { return e }
    let rel = defaultRelativePath
    if FileManager.default.fileExists(atPath: rel) { return rel }
    var url = URL(fileURLWithPath: executable).resolvingSymlinksInPath()
    while url.path != "/" {
      url.deleteLastPathComponent()
      let c = url.appendingPathComponent(rel).path
      if FileManager.default.fileExists(atPath: c) { return c }
    }
    return rel
  }

  /// Token ids for the text tower: start token (if any), ids, end token, padded with the end
  /// token to the model's context.
  public func textIDs(_ text: String) -> [Int32] {
    tokenizer.encodeForModel(text, contextLength: clip.config.textConfig.maxPositionEmbeddings)
  }

  /// Normalised text embeddings (N,D) for phrases.
  public func embedTexts(_ texts: [String]) throws -> [Float] {
    try clip.textEmbeddings(texts.map { textIDs($0) })
  }
}

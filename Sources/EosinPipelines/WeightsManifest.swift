import Foundation

/// A JSON value, for the free-form parts of a manifest (training records, metrics).
public enum JSONValue: Codable, Equatable, Sendable {
  case null
  case bool(Bool)
  case number(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  public init(from decoder: Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() {
      self = .null
    } else if let b = try? c.decode(Bool.self) {
      self = .bool(b)
    } else if let n = try? c.decode(Double.self) {
      self = .number(n)
    } else if let s = try? c.decode(String.self) {
      self = .string(s)
    } else if let a = try? c.decode([JSONValue].self) {
      self = .array(a)
    } else {
      self = .object(try c.decode([String: JSONValue].self))
    }
  }

  public func encode(to encoder: Encoder) throws {
    var c = encoder.singleValueContainer()
    switch self {
    case .null: try c.encodeNil()
    case .bool(let b): try c.encode(b)
    case .number(let n):
      // Whole numbers as integers, so counts read back as counts.
      if n.rounded() == n && abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
    case .string(let s): try c.encode(s)
    case .array(let a): try c.encode(a)
    case .object(let o): try c.encode(o)
    }
  }

  /// The number, when this is one.
  public var number: Double? { if case .number(let n) = self { return n } else { return nil } }
}

/// `Weights/NAME/manifest.json`: what a set of weights is, how it was trained and fitted, its
/// files' hashes, its metrics and its terms. Written by `eosin train finalize`, read by
/// ``ModelBundle``.
public struct WeightsManifest: Codable, Equatable, Sendable {
  public struct Native: Codable, Equatable, Sendable {
    public var tileSize: Int
    public var mpp: Double
    public var note: String?
    enum CodingKeys: String, CodingKey {
      case tileSize = "tile_size", mpp, note
    }
    public init(tileSize: Int, mpp: Double, note: String? = nil) {
      self.tileSize = tileSize
      self.mpp = mpp
      self.note = note
    }
  }
  public struct Calibration: Codable, Equatable, Sendable {
    public var temperature: Double
    public var fittedOn: String?
    public var valNLL: Double?
    enum CodingKeys: String, CodingKey {
      case temperature, fittedOn = "fitted_on", valNLL = "val_nll"
    }
    public init(temperature: Double, fittedOn: String? = nil, valNLL: Double? = nil) {
      self.temperature = temperature
      self.fittedOn = fittedOn
      self.valNLL = valNLL
    }
  }
  public struct ReviewFitting: Codable, Equatable, Sendable {
    public var rule: String
    public var valCoverage: Double
    public var valAccuracy: Double
    enum CodingKeys: String, CodingKey {
      case rule, valCoverage = "val_coverage", valAccuracy = "val_accuracy"
    }
    public init(rule: String, valCoverage: Double, valAccuracy: Double) {
      self.rule = rule
      self.valCoverage = valCoverage
      self.valAccuracy = valAccuracy
    }
  }
  public struct DataSource: Codable, Equatable, Sendable {
    public var name: String
    public var tiles: Int?
    public var terms: String
    public init(name: String, tiles: Int? = nil, terms: String) {
      self.name = name
      self.tiles = tiles
      self.terms = terms
    }
  }
  public struct LanguageModelEntry: Codable, Equatable, Sendable {
    public var file: String
    public var sha256: String
    public var source: String
    public var model: String
    public var licence: String
    /// The slide-token projector trained for it (nil: none yet).
    public var projector: String?
    /// Low-rank adapters trained for it with the projector (`train lm-adapters`); nil: none.
    public var adapters: String?
    public init(file: String, sha256: String, source: String, model: String, licence: String, projector: String? = nil) {
      self.file = file
      self.sha256 = sha256
      self.source = source
      self.model = model
      self.licence = licence
      self.projector = projector
    }
    public func encode(to encoder: Encoder) throws {
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(file, forKey: .file)
      try c.encode(sha256, forKey: .sha256)
      try c.encode(source, forKey: .source)
      try c.encode(model, forKey: .model)
      try c.encode(licence, forKey: .licence)
      try c.encode(projector, forKey: .projector)  // null when none, so readers see the field
      try c.encodeIfPresent(adapters, forKey: .adapters)
    }
  }
  /// How zero-shot prompt wording is read (``WordingResolver``): through this language model,
  /// onto the names in `vocabulary` (the names the text tower was trained on).
  public struct WordingEntry: Codable, Equatable, Sendable {
    /// The vocabulary file, relative to the weights folder (`clip/vocabulary.json`).
    public var vocabulary: String
    /// The language model's file name and sha256.
    public var model: String
    public var languageModelSHA256: String
    enum CodingKeys: String, CodingKey {
      case vocabulary, model, languageModelSHA256 = "language_model_sha256"
    }
    public init(vocabulary: String, model: String, languageModelSHA256: String) {
      self.vocabulary = vocabulary
      self.model = model
      self.languageModelSHA256 = languageModelSHA256
    }
  }
  public struct FileEntry: Codable, Equatable, Sendable {
    public var sha256: String
    public var bytes: Int
    public init(sha256: String, bytes: Int) {
      self.sha256 = sha256
      self.bytes = bytes
    }
  }

  public var name: String
  public var version: Int
  public var description: String?
  public var native: Native?
  public var calibration: Calibration?
  public var review: ReviewThresholds?
  public var reviewFitting: ReviewFitting?
  public var data: [DataSource]?
  public var terms: String?
  public var splits: String?
  /// How the labelled tile sets were split, for tools that evaluate these weights on a split:
  /// `group-stratified-by-label` (``splitsStratifiedByLabel``) or `group-hash` (v1's rule). A
  /// manifest without it whose `splits` text names the "mod 100" hash rule used the hash rule.
  public var splitRule: String?
  public var trainingCLIP: JSONValue?
  public var trainingDecoder: JSONValue?
  public var languageModel: LanguageModelEntry?
  /// Zero-shot prompt wording read through a language model; nil: as written.
  public var wording: WordingEntry?
  /// Relative path → sha256 and size of every weights file.
  public var files: [String: FileEntry]
  public var metrics: [String: JSONValue]?

  enum CodingKeys: String, CodingKey {
    case name, version, description, native, calibration, review, data, terms, splits, files, metrics
    case reviewFitting = "review_fitting", trainingCLIP = "training_clip", trainingDecoder = "training_decoder"
    case languageModel = "language_model", splitRule = "split_rule", wording
  }

  /// Whether these weights' splits are the label-stratified group splits (else the plain
  /// group hash of eosin-small-v1): evaluating on the other rule's test split would score
  /// training tiles.
  public var splitsStratifiedByLabel: Bool {
    if let r = splitRule { return r == "group-stratified-by-label" }
    return !(splits?.contains("mod 100") ?? false)
  }

  public init(name: String, version: Int) {
    self.name = name
    self.version = version
    files = [:]
  }

  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
    version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 1
    description = try c.decodeIfPresent(String.self, forKey: .description)
    native = try c.decodeIfPresent(Native.self, forKey: .native)
    calibration = try c.decodeIfPresent(Calibration.self, forKey: .calibration)
    review = try c.decodeIfPresent(ReviewThresholds.self, forKey: .review)
    reviewFitting = try c.decodeIfPresent(ReviewFitting.self, forKey: .reviewFitting)
    data = try c.decodeIfPresent([DataSource].self, forKey: .data)
    terms = try c.decodeIfPresent(String.self, forKey: .terms)
    splits = try c.decodeIfPresent(String.self, forKey: .splits)
    splitRule = try c.decodeIfPresent(String.self, forKey: .splitRule)
    trainingCLIP = try c.decodeIfPresent(JSONValue.self, forKey: .trainingCLIP)
    trainingDecoder = try c.decodeIfPresent(JSONValue.self, forKey: .trainingDecoder)
    languageModel = try c.decodeIfPresent(LanguageModelEntry.self, forKey: .languageModel)
    wording = try c.decodeIfPresent(WordingEntry.self, forKey: .wording)
    files = try c.decodeIfPresent([String: FileEntry].self, forKey: .files) ?? [:]
    metrics = try c.decodeIfPresent([String: JSONValue].self, forKey: .metrics)
  }

  /// Reads a manifest. - Throws: ``PipelineError/file`` naming the file and the problem.
  public static func load(_ path: String) throws -> WeightsManifest {
    guard let d = FileManager.default.contents(atPath: path) else {
      throw PipelineError.file(path: path, message: "cannot read the weights manifest")
    }
    do { return try JSONDecoder().decode(WeightsManifest.self, from: d) } catch {
      throw PipelineError.file(path: path, message: "not a weights manifest: \(error.localizedDescription)")
    }
  }

  /// The manifest as pretty, key-sorted JSON (slashes unescaped).
  public func encoded() throws -> Data {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return try e.encode(self)
  }
}

extension JSONValue {
  /// Converts a `JSONSerialization`-style value (dictionaries, arrays, strings, numbers, Bool,
  /// NSNull); anything else becomes its description.
  public init(any v: Any) {
    if let b = v as? Bool, type(of: v) == Bool.self {
      self = .bool(b)
      return
    }
    switch v {
    case let j as JSONValue: self = j
    case is NSNull: self = .null
    case let i as Int: self = .number(Double(i))
    case let d as Double: self = .number(d)
    case let f as Float: self = .number(Double(f))
    case let s as String: self = .string(s)
    case let a as [Any]: self = .array(a.map { JSONValue(any: $0) })
    case let o as [String: Any]: self = .object(o.mapValues { JSONValue(any: $0) })
    default: self = .string("\(v)")
    }
  }
}

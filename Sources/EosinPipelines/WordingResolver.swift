import EosinWeights
import Foundation

/// Reads prompt wording the CLIP text tower never saw through a language model.
///
/// Eosin's text tower is trained from scratch on captions built from the knowledge notes, so it
/// knows the class names and synonyms it was trained on and little else: "pulmonary
/// adenocarcinoma" is not "lung adenocarcinoma" to it, and "pulmonary" even leans benign,
/// because it met the word only in "benign pulmonary tissue". A pretrained language model knows
/// such synonyms. The resolver embeds every name the text tower was trained on (its
/// ``vocabulary``) and each prompt phrase with the language model's hidden state
/// (``NoteEmbeddings``'s PromptEOL prompt), and a phrase that is not itself in the vocabulary
/// borrows the text embeddings of the names nearest to it: ``ZeroShotClassifier`` replaces the
/// phrase's own embedding under each template by
/// `(1 - share) · own + share · Σ weight · embedding(template with name)`.
///
/// - The weights are a softmax (scale ``scale``) over the ``neighbours`` nearest names by cosine.
/// - ``Resolution/share`` grows linearly from 0 at cosine ``lower`` to 1 at ``upper``: a
///   phrase far from every trained name keeps its own embedding, as written.
/// - A phrase in the vocabulary (case aside) is never changed.
///
/// The names' hidden states are computed once per language model and vocabulary and kept in
/// the cache folder (`$XDG_CACHE_HOME/eosin/wording`). The language model is loaded, and those
/// states read, only when a phrase is first resolved: a classifier whose text embeddings are
/// already cached (keyed by ``identity``) needs neither.
///
/// Each reading is remembered (``readings``). `eosin train finalize --wording lm` stores the
/// readings of every shipped prompt set's phrases in `clip/vocabulary.json`, so a phrase read
/// there needs no language model at all: the weights score the shipped prompt sets as finalize
/// measured them, with the language model or without it. A resolver without a language model
/// (``init(readings:vocabulary:languageModelSHA256:modelName:cacheDirectory:)``) reads those
/// phrases and keeps any other as written (``canRead(_:)`` says which).
public final class WordingResolver: @unchecked Sendable {
  /// The names the text tower was trained on, sorted.
  public let vocabulary: [String]
  /// Nearest names a phrase borrows from.
  public let neighbours = 3
  /// Softmax scale over the neighbours' cosines.
  public let scale: Float = 20
  /// Cosine below which a phrase keeps its own embedding.
  public let lower: Float = 0.3
  /// Cosine from which a phrase takes its neighbours' embeddings alone.
  public let upper: Float = 0.6
  /// The language model's file; nil for a resolver that only has stored ``readings``.
  public let modelPath: String?
  /// The language model's file name, for the line that says how prompts were read.
  public let modelName: String
  let lmSHA: String
  let cacheDirectory: String?
  let lock = NSLock()
  var loaded: (lm: LanguageModel, index: HiddenStateIndex)?
  var known: [String: Resolution]

  /// How one phrase is read.
  public struct Resolution: Codable, Equatable, Sendable {
    /// The vocabulary names it borrows from, nearest first (empty: kept as written).
    public var names: [String]
    /// Their weights, summing to one.
    public var weights: [Float]
    /// How much of the phrase's embedding comes from the names (0: as written).
    public var share: Float
    /// The cosine of the nearest name (1 for a vocabulary name).
    public var cosine: Float

    /// A resolution borrowing `weights` of `names` for `share` of the embedding.
    public init(names: [String], weights: [Float], share: Float, cosine: Float) {
      self.names = names
      self.weights = weights
      self.share = share
      self.cosine = cosine
    }
  }

  /// What identifies the readings a resolver with its language model gives: the language
  /// model's hash, the parameters and the vocabulary. Stored readings are used only under the
  /// same one.
  public var readingsIdentity: String {
    SHA256.hex(
      Array(
        "wording-v1|\(lmSHA)|\(neighbours)|\(scale)|\(lower)|\(upper)|\(vocabulary.joined(separator: "\n"))".utf8))
  }

  /// What identifies the resolver's output, for cache keys: ``readingsIdentity``, and for a
  /// resolver without its language model also the phrases it can read (any other it keeps as
  /// written).
  public var identity: String {
    guard modelPath == nil else { return readingsIdentity }
    let phrases = readings.keys.sorted().joined(separator: "\n")
    return SHA256.hex(Array("\(readingsIdentity)|readings-only|\(phrases)".utf8))
  }

  /// Every phrase read so far (and the stored readings), by phrase.
  public var readings: [String: Resolution] {
    lock.lock()
    defer { lock.unlock() }
    return known
  }

  /// Whether `phrase` is read as the language model reads it: a trained name, a stored
  /// reading, or any phrase when the language model is at hand.
  public func canRead(_ phrase: String) -> Bool {
    let p = phrase.trimmingCharacters(in: .whitespaces)
    return modelPath != nil || isTrainedName(p) || readings[p] != nil
  }

  func isTrainedName(_ p: String) -> Bool { vocabulary.contains { $0.caseInsensitiveCompare(p) == .orderedSame } }

  /// Where the vocabulary's hidden states are cached.
  public static var cacheDirectory: String { EosinCache.root + "/wording" }

  /// A resolver onto `vocabulary` (deduplicated, sorted) through the GGUF language model at
  /// `path`, whose sha256 is read here (``LanguageModel/Default/cachedSHA256(_:)``).
  /// - Throws: ``PipelineError/input(_:)`` for an empty vocabulary; ``PipelineError/file`` for a
  ///   language model file that cannot be read.
  public init(languageModel path: String, vocabulary: [String], cacheDirectory: String? = WordingResolver.cacheDirectory)
    throws
  {
    let names = try Self.names(vocabulary)
    guard let sha = try? LanguageModel.Default.cachedSHA256(path) else {
      throw PipelineError.file(path: path, message: "cannot read the language model")
    }
    modelPath = path
    modelName = (path as NSString).lastPathComponent
    lmSHA = sha
    self.vocabulary = names
    self.cacheDirectory = cacheDirectory
    known = [:]
  }

  /// A resolver that reads the phrases of `readings` as stored (finalize computed them with the
  /// language model whose sha256 is `languageModelSHA256`) and keeps every other phrase as
  /// written; it never loads a language model.
  /// - Throws: ``PipelineError/input(_:)`` for an empty vocabulary.
  public init(
    readings: [String: Resolution], vocabulary: [String], languageModelSHA256: String, modelName: String,
    cacheDirectory: String? = nil
  ) throws {
    let names = try Self.names(vocabulary)
    modelPath = nil
    self.modelName = modelName
    lmSHA = languageModelSHA256
    self.vocabulary = names
    self.cacheDirectory = cacheDirectory
    known = readings
  }

  /// `vocabulary` trimmed, deduplicated and sorted.
  /// - Throws: ``PipelineError/input(_:)`` when no name is left.
  static func names(_ vocabulary: [String]) throws -> [String] {
    let names = Array(Set(vocabulary.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })).sorted()
    guard !names.isEmpty else { throw PipelineError.input("the wording resolver needs at least one trained name") }
    return names
  }

  /// Adds stored readings (from `clip/vocabulary.json`); a phrase already read keeps its reading.
  public func remember(_ readings: [String: Resolution]) {
    lock.lock()
    defer { lock.unlock() }
    known.merge(readings) { old, _ in old }
  }

  /// The language model and the vocabulary's hidden states, loaded on first use.
  func load() throws -> (lm: LanguageModel, index: HiddenStateIndex) {
    lock.lock()
    defer { lock.unlock() }
    if let l = loaded { return l }
    guard let modelPath else { throw PipelineError.input("no language model to read prompt wording with") }
    let lm = try LanguageModel(path: modelPath)
    let key = "wording-names-v1|" + lmSHA + "\n" + vocabulary.joined(separator: "\n")
    let l = (lm, try HiddenStateIndex(lm: lm, texts: vocabulary, cacheDirectory: cacheDirectory, key: key))
    loaded = l
    return l
  }

  /// How `phrase` is read (``Resolution``). Without a language model, a phrase that is neither
  /// a trained name nor a stored reading is kept as written (``canRead(_:)`` is false for it).
  /// - Throws: ``PipelineError`` when the language model cannot be loaded or the phrase embedded.
  public func resolve(_ phrase: String) throws -> Resolution {
    let p = phrase.trimmingCharacters(in: .whitespaces)
    if isTrainedName(p) { return Resolution(names: [], weights: [], share: 0, cosine: 1) }
    if let r = readings[p] { return r }
    guard modelPath != nil else { return Resolution(names: [], weights: [], share: 0, cosine: 0) }
    let r = try read(p)
    lock.lock()
    known[p] = r
    lock.unlock()
    return r
  }

  func read(_ p: String) throws -> Resolution {
    let (lm, index) = try load()
    let top = try index.similarities(lm, p).enumerated().sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
      .prefix(neighbours)
    let best = top.first!.1
    let share = min(1, max(0, (best - lower) / (upper - lower)))
    if share == 0 { return Resolution(names: [], weights: [], share: 0, cosine: best) }
    let e = top.map { exp(scale * ($0.1 - best)) }
    let z = e.reduce(0, +)
    return Resolution(names: top.map { vocabulary[$0.0] }, weights: e.map { $0 / z }, share: share, cosine: best)
  }

  /// The names a text tower was trained on: every class name and synonym in the knowledge
  /// notes of `knowledgeDirectory` (`Prompts/knowledge`), less the synonyms in `heldOut` (the
  /// prompt sets' synonyms, which training captions never use), case aside; class names stay,
  /// as ``CaptionBuilder`` always uses them.
  /// - Throws: ``PipelineError/file`` for a folder without knowledge files or a file that is not one.
  public static func trainedNames(knowledgeDirectory dir: String, heldOut: Set<String>) throws -> [String] {
    struct File: Decodable {
      struct Class: Decodable {
        var name: String
        var synonyms: [String]?
      }
      var classes: [Class]
    }
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
    guard !files.isEmpty else { throw PipelineError.file(path: dir, message: "no knowledge files (*.json)") }
    let held = Set(heldOut.map { $0.lowercased() })
    var out: [String] = []
    for f in files {
      let p = (dir as NSString).appendingPathComponent(f)
      let file: File
      do {
        file = try JSONDecoder().decode(File.self, from: FileManager.default.contents(atPath: p) ?? Data())
      } catch {
        throw PipelineError.file(path: p, message: "not a knowledge file (\(error.localizedDescription))")
      }
      // Captions always use the class's own name; a synonym only when no prompt set holds it out.
      for c in file.classes {
        out.append(c.name)
        for n in c.synonyms ?? [] where !held.contains(n.lowercased()) { out.append(n) }
      }
    }
    return out
  }
}

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
/// the cache folder (`$XDG_CACHE_HOME/eosin/wording`).
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
  let vectors: [Float]
  let mean: [Float]
  let dim: Int
  let lm: LanguageModel
  let lmSHA: String

  /// How one phrase is read.
  public struct Resolution: Equatable, Sendable {
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

  /// What identifies the resolver's output, for cache keys: the language model's hash, the
  /// parameters and the vocabulary.
  public var identity: String {
    SHA256.hex(
      Array(
        "wording-v1|\(lmSHA)|\(neighbours)|\(scale)|\(lower)|\(upper)|\(vocabulary.joined(separator: "\n"))".utf8))
  }

  /// The language model's file name, for the line that says how prompts were read.
  public var modelName: String { (lm.path as NSString).lastPathComponent }
  /// The language model's file.
  public var modelPath: String { lm.path }

  /// Where the vocabulary's hidden states are cached.
  public static var cacheDirectory: String { EosinCache.root + "/wording" }

  /// Embeds `vocabulary` (deduplicated, sorted) with `lm`, or reads it from `cacheDirectory`.
  /// - Throws: ``PipelineError/input(_:)`` for an empty vocabulary; ``PipelineError`` when a
  ///   name cannot be embedded.
  public init(lm: LanguageModel, vocabulary: [String], cacheDirectory: String? = WordingResolver.cacheDirectory) throws {
    let names = Array(Set(vocabulary.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })).sorted()
    guard !names.isEmpty else { throw PipelineError.input("the wording resolver needs at least one trained name") }
    self.lm = lm
    self.vocabulary = names
    lmSHA = (try? LanguageModel.Default.cachedSHA256(lm.path)) ?? lm.path
    let C = lm.model.config.channels
    dim = C
    let key = SHA256.hex(Array(("wording-names-v1|" + lmSHA + "\n" + names.joined(separator: "\n")).utf8))
    let file = cacheDirectory.map { $0 + "/" + key + ".f32" }
    var raw: [Float]
    if let f = file, let d = FileManager.default.contents(atPath: f), d.count == names.count * C * 4 {
      raw = d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    } else {
      raw = []
      raw.reserveCapacity(names.count * C)
      for n in names { raw += try NoteEmbeddings.hidden(lm, n) }
      if let f = file, let dir = cacheDirectory {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try? raw.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: f), options: .atomic)
      }
    }
    var m = [Float](repeating: 0, count: C)
    for i in 0..<names.count { for j in 0..<C { m[j] += raw[i * C + j] } }
    for j in 0..<C { m[j] /= Float(names.count) }
    for i in 0..<names.count { NoteEmbeddings.centre(&raw, i * C, m) }
    mean = m
    vectors = raw
  }

  /// How `phrase` is read (``Resolution``).
  /// - Throws: ``PipelineError`` when the phrase cannot be embedded.
  public func resolve(_ phrase: String) throws -> Resolution {
    let p = phrase.trimmingCharacters(in: .whitespaces)
    if vocabulary.contains(where: { $0.caseInsensitiveCompare(p) == .orderedSame }) {
      return Resolution(names: [], weights: [], share: 0, cosine: 1)
    }
    var q = try NoteEmbeddings.hidden(lm, p)
    NoteEmbeddings.centre(&q, 0, mean)
    var cos: [(Int, Float)] = []
    for i in 0..<vocabulary.count {
      var s: Float = 0
      for j in 0..<dim { s += q[j] * vectors[i * dim + j] }
      cos.append((i, s))
    }
    cos.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
    let top = Array(cos.prefix(neighbours))
    let best = top[0].1
    let e = top.map { exp(scale * ($0.1 - best)) }
    let z = e.reduce(0, +)
    let share = min(1, max(0, (best - lower) / (upper - lower)))
    if share == 0 { return Resolution(names: [], weights: [], share: 0, cosine: best) }
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

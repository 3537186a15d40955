import EosinWeights
import Foundation

/// Dense retrieval over Eosin's curated notes with a language model's own hidden states: each
/// passage, and each question, is embedded as the final hidden state of the last token of
/// `This text: "…" means in one word: "` (the PromptEOL prompt of Jiang et al., 2023, which asks
/// a decoder to sum a text up in its next token), centred on the passages' mean and scaled to
/// unit length. ``KnowledgeNotes/search(_:k:minimumScore:fallback:dense:)`` fuses its ranking
/// with BM25's by reciprocal rank (k 60, equal weights): a question worded unlike the notes
/// ("What is scarring inside an organ called?") still finds its passage. Imported reference
/// text is not embedded: it is searched only when a passage holds every word of the question.
///
/// The passages' embeddings are computed once per language model and notes text (about 17 s
/// for SmolLM2-135M and Eosin's 65 passages on 2 cores) and kept in the cache folder
/// (`$XDG_CACHE_HOME/eosin/notes-index`), keyed by the model's sha256 and the passages.
public final class NoteEmbeddings: @unchecked Sendable {
  /// The hidden width.
  public var dim: Int { index.dim }
  /// How many passages are embedded.
  var count: Int { index.count }
  /// The passages' embeddings, in ``KnowledgeNotes/passages`` order.
  let index: HiddenStateIndex
  let lm: LanguageModel

  /// The language model's file.
  public var modelPath: String { lm.path }

  /// The prompt whose last token's hidden state embeds `text`.
  static func prompt(_ text: String) -> String { "This text: \"\(text)\" means in one word: \"" }

  /// Where the passages' embeddings are cached: `$XDG_CACHE_HOME/eosin/notes-index`, else
  /// `~/.cache/eosin/notes-index`.
  public static var cacheDirectory: String { EosinCache.root + "/notes-index" }

  /// Embeds `notes.passages` with `lm`, or reads them from `cacheDirectory` when this model
  /// and these passages were embedded before (nil: never cached).
  /// - Throws: ``PipelineError`` when the model cannot embed a passage (too long for its context).
  public init(notes: KnowledgeNotes, lm: LanguageModel, cacheDirectory: String? = NoteEmbeddings.cacheDirectory) throws {
    self.lm = lm
    var key = "v1|" + ((try? LanguageModel.Default.cachedSHA256(lm.path)) ?? lm.path)
    for p in notes.passages { key += "\n" + p.source + "\t" + p.title + "\t" + p.text }
    index = try HiddenStateIndex(
      lm: lm, texts: notes.passages.map { $0.title + ": " + $0.text }, cacheDirectory: cacheDirectory, key: key)
  }

  /// The final hidden state for `text`'s prompt.
  static func hidden(_ lm: LanguageModel, _ text: String) throws -> [Float] {
    let ids = lm.tokenizer.encodeLlama(prompt(text), addSpecial: true, parseSpecial: false)
    do {
      return try lm.model.lastHiddenState(Array(ids.suffix(lm.model.config.contextLength)))
    } catch {
      throw PipelineError.file(path: lm.path, message: "cannot embed a note for retrieval (\(error))")
    }
  }

  /// Subtracts the mean from row `at` and scales it to unit length.
  static func centre(_ v: inout [Float], _ at: Int, _ mean: [Float]) {
    var n: Float = 0
    for j in 0..<mean.count {
      v[at + j] -= mean[j]
      n += v[at + j] * v[at + j]
    }
    let s = 1 / max(n.squareRoot(), 1e-12)
    for j in 0..<mean.count { v[at + j] *= s }
  }

  /// The cosine similarity of `query` to every passage, in passage order.
  public func similarities(_ query: String) throws -> [Float] { try index.similarities(lm, query) }
}

/// Texts embedded by a language model's hidden states (``NoteEmbeddings/hidden(_:_:)``),
/// centred on their mean and scaled to unit length, with the cosine of any other text to each;
/// computed once per `key` and kept in `cacheDirectory` (nil: never cached). Shared by note
/// retrieval (``NoteEmbeddings``) and prompt wording (``WordingResolver``).
struct HiddenStateIndex {
  let dim: Int
  let count: Int
  /// (count, dim) centred unit rows, in `texts` order.
  let vectors: [Float]
  let mean: [Float]

  init(lm: LanguageModel, texts: [String], cacheDirectory: String?, key: String) throws {
    let C = lm.model.config.channels
    dim = C
    count = texts.count
    let file = cacheDirectory.map { $0 + "/" + SHA256.hex(Array(key.utf8)) + ".f32" }
    var raw: [Float]
    if let f = file, let d = FileManager.default.contents(atPath: f), d.count == count * C * 4 {
      raw = d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    } else {
      raw = []
      raw.reserveCapacity(count * C)
      for t in texts { raw += try NoteEmbeddings.hidden(lm, t) }
      if let f = file, let dir = cacheDirectory {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try? raw.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: f), options: .atomic)
      }
    }
    var m = [Float](repeating: 0, count: C)
    for i in 0..<count { for j in 0..<C { m[j] += raw[i * C + j] } }
    for j in 0..<C { m[j] /= Float(max(1, count)) }
    for i in 0..<count { NoteEmbeddings.centre(&raw, i * C, m) }
    mean = m
    vectors = raw
  }

  /// The cosine similarity of `text` (embedded by `lm`, centred on the same mean) to every row.
  func similarities(_ lm: LanguageModel, _ text: String) throws -> [Float] {
    var q = try NoteEmbeddings.hidden(lm, text)
    NoteEmbeddings.centre(&q, 0, mean)
    var out = [Float](repeating: 0, count: count)
    for i in 0..<count {
      var s: Float = 0
      for j in 0..<dim { s += q[j] * vectors[i * dim + j] }
      out[i] = s
    }
    return out
  }
}

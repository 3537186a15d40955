import Foundation

/// One retrievable passage of Eosin's notes.
public struct NotePassage: Sendable, Equatable {
  /// Where it came from, as `FILE#id`, quoted in answers.
  public var source: String
  public var title: String
  public var text: String
}

/// Eosin's notes, searchable offline: the per-class morphology notes (`Prompts/knowledge/*.json`,
/// one passage per class) and the general retrieval notes (`Prompts/notes/*.json`, kept apart
/// from the files that feed `train bpe` and the CLIP captions, so the committed weights still
/// reproduce). Ranked by BM25 (k1 1.2, b 0.75) over lower-cased word tokens without stop words.
public final class KnowledgeNotes: @unchecked Sendable {
  public let passages: [NotePassage]
  private let docs: [[String: Int]]
  private let lengths: [Double]
  private let df: [String: Int]
  private let avgLength: Double

  /// Builds the index from passages.
  public init(passages: [NotePassage]) {
    self.passages = passages
    var d: [[String: Int]] = []
    var f: [String: Int] = [:]
    var lens: [Double] = []
    for p in passages {
      var tf: [String: Int] = [:]
      let words = KnowledgeNotes.words(p.title + " " + p.title + " " + p.text)
      for w in words { tf[w, default: 0] += 1 }
      for w in tf.keys { f[w, default: 0] += 1 }
      d.append(tf)
      lens.append(Double(words.count))
    }
    docs = d
    df = f
    lengths = lens
    avgLength = max(1, lens.reduce(0, +) / Double(max(1, lens.count)))
  }

  /// Loads every `*.json` of the given folders: knowledge files (`classes` with name, synonyms,
  /// behaviour, features, next_steps) and notes files (`notes` with id, title, text).
  /// - Throws: ``PipelineError`` naming a file that is not valid JSON of either shape.
  public convenience init(directories: [String]) throws {
    var ps: [NotePassage] = []
    let fm = FileManager.default
    for dir in directories {
      guard let names = try? fm.contentsOfDirectory(atPath: dir) else { continue }
      for n in names.sorted() where n.hasSuffix(".json") {
        let path = (dir as NSString).appendingPathComponent(n)
        guard let data = fm.contents(atPath: path),
          let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else { throw PipelineError.file(path: path, message: "not a JSON object") }
        if let classes = obj["classes"] as? [[String: Any]] {
          for c in classes {
            guard let name = c["name"] as? String else { continue }
            var t = name
            if let s = c["synonyms"] as? [String], !s.isEmpty { t += " (also: \(s.joined(separator: ", ")))" }
            if let b = c["behaviour"] as? String, b != "not stated" { t += "; \(b)" }
            if let f = c["features"] as? [String], !f.isEmpty { t += ". Features: \(f.joined(separator: "; "))" }
            if let x = c["next_steps"] as? String { t += ". Next steps: \(x)" }
            ps.append(NotePassage(source: "\(n)#\(c["id"] as? String ?? name)", title: name, text: t + "."))
          }
        } else if let notes = obj["notes"] as? [[String: Any]] {
          for e in notes {
            guard let id = e["id"] as? String, let title = e["title"] as? String, let text = e["text"] as? String else {
              throw PipelineError.file(path: path, message: "every note needs id, title and text")
            }
            ps.append(NotePassage(source: "\(n)#\(id)", title: title, text: text))
          }
        }
      }
    }
    self.init(passages: ps)
  }

  /// The best passages for a query with their BM25 scores, best first; passages scoring below
  /// `minimumScore` are left out.
  public func search(_ query: String, k: Int = 2, minimumScore: Double = 2.0) -> [(NotePassage, Double)] {
    let q = Set(KnowledgeNotes.words(query))
    let N = Double(passages.count)
    var scored: [(Int, Double)] = []
    for (i, d) in docs.enumerated() {
      var s = 0.0
      for w in q {
        guard let tf = d[w], let n = df[w] else { continue }
        let idf = log(1 + (N - Double(n) + 0.5) / (Double(n) + 0.5))
        let t = Double(tf)
        s += idf * t * 2.2 / (t + 1.2 * (0.25 + 0.75 * lengths[i] / avgLength))
      }
      if s >= minimumScore { scored.append((i, s)) }
    }
    scored.sort { $0.1 > $1.1 }
    return scored.prefix(k).map { (passages[$0.0], $0.1) }
  }

  static let stopWords: Set<String> = [
    "a", "an", "the", "is", "are", "was", "were", "be", "of", "in", "on", "at", "to", "for", "and", "or", "with", "what", "which",
    "who", "how", "why", "when", "where", "does", "do", "this", "that", "these", "those", "it", "its", "as", "by", "from", "can",
    "you", "me", "my", "i", "tell", "about", "there", "any", "there", "show", "shows", "see", "slide", "image", "please",
    "explain",
    "describe", "one", "sentence", "into", "than", "then", "so", "if", "not", "no", "yes", "has", "have", "had", "may", "also",
  ]

  /// Lower-cased word tokens (letters and digits), stop words removed, a plural "s" dropped.
  static func words(_ s: String) -> [String] {
    var out: [String] = []
    var cur = ""
    func flush() {
      if cur.count > 1 && !stopWords.contains(cur) {
        out.append(
          cur.count > 4 && cur.hasSuffix("s") && !cur.hasSuffix("ss") && !cur.hasSuffix("is") ? String(cur.dropLast()) : cur)
      }
      cur = ""
    }
    for ch in s.lowercased().unicodeScalars {
      if CharacterSet.alphanumerics.contains(ch) { cur.unicodeScalars.append(ch) } else { flush() }
    }
    flush()
    return out
  }
}

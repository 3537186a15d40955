import Foundation

/// One retrievable passage of Eosin's notes.
public struct NotePassage: Sendable, Equatable {
  /// Where it came from, as `FILE#id`, quoted in answers.
  public var source: String
  public var title: String
  public var text: String
  /// The collection named when an answer cites the passage: "Eosin's notes", or an imported
  /// collection with its terms (`eosin notes import`).
  public var collection: String = NotePassage.curated
  /// What to do next, for a knowledge file's class (its `next_steps`); nil for other passages.
  public var nextSteps: String? = nil

  /// The collection of Eosin's own, curated notes.
  public static let curated = "Eosin's notes"

  /// A passage of `collection`, cited as `source`.
  public init(source: String, title: String, text: String, collection: String = NotePassage.curated) {
    self.source = source
    self.title = title
    self.text = text
    self.collection = collection
  }
}

/// Eosin's notes, searchable offline: the per-class morphology notes (`Prompts/knowledge/*.json`,
/// one passage per class) and the general retrieval notes (`Prompts/notes/*.json`, kept apart
/// from the files that feed `train bpe` and the CLIP captions, so the committed weights still
/// reproduce). Ranked by BM25 (k1 1.2, b 0.75) over lower-cased word tokens without stop words.
public final class KnowledgeNotes: @unchecked Sendable {
  public let passages: [NotePassage]
  /// Searched only when these passages have nothing relevant: imported reference text (the
  /// atlas lecture notes) backs Eosin's curated notes up, never outranks them.
  public let fallback: KnowledgeNotes?
  private let docs: [[String: Int]]
  private let lengths: [Double]
  private let df: [String: Int]
  private let avgLength: Double

  /// Whether a passage must contain every content word of the query (question words such as
  /// "cause" or "used" aside) to count as a hit. The
  /// imported lecture notes are hundreds of terse fragments with a wide vocabulary: "bread"
  /// (bread-and-butter pericarditis), "light" (light microscopy) or "book" let off-topic
  /// questions through on one shared word, so they answer only when a passage covers the whole
  /// question.
  public let requireEveryWord: Bool

  /// Builds the index from passages, with `fallback` searched when they have no hit or their
  /// best misses a word of the question.
  public init(passages: [NotePassage], fallback: KnowledgeNotes? = nil, requireEveryWord: Bool = false) {
    self.passages = passages
    self.fallback = fallback
    self.requireEveryWord = requireEveryWord
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
  /// behaviour, features, next_steps) and notes files (`notes` with id, title, text, and an
  /// optional `collection` naming them in citations). `fallback` folders (imported reference
  /// text) are searched after these (see ``search(_:k:minimumScore:fallback:)``).
  /// - Throws: ``PipelineError`` naming a file that is not valid JSON of either shape.
  public convenience init(directories: [String], fallback: [String] = []) throws {
    let back = try KnowledgeNotes.passages(in: fallback)
    self.init(
      passages: try KnowledgeNotes.passages(in: directories),
      fallback: back.isEmpty ? nil : KnowledgeNotes(passages: back, requireEveryWord: true))
  }

  /// The passages of every `*.json` in `directories` (see ``init(directories:fallback:)``).
  static func passages(in directories: [String]) throws -> [NotePassage] {
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
            var passage = NotePassage(source: "\(n)#\(c["id"] as? String ?? name)", title: name, text: t + ".")
            passage.nextSteps = c["next_steps"] as? String
            ps.append(passage)
          }
        } else if let notes = obj["notes"] as? [[String: Any]] {
          let collection = obj["collection"] as? String ?? NotePassage.curated
          for e in notes {
            guard let id = e["id"] as? String, let title = e["title"] as? String, let text = e["text"] as? String else {
              throw PipelineError.file(path: path, message: "every note needs id, title and text")
            }
            ps.append(NotePassage(source: "\(n)#\(id)", title: title, text: text, collection: collection))
          }
        }
      }
    }
    return ps
  }

  /// Where `eosin notes import` keeps imported reference text: `$XDG_CACHE_HOME/eosin/notes`,
  /// else `~/.cache/eosin/notes`. Chat searches it after Eosin's own notes.
  public static var importedDirectory: String {
    EosinCache.root + "/notes"
  }

  /// BM25's inverse document frequency of a word in these passages (a word none holds counts
  /// as the rarest).
  func idf(_ w: String) -> Double {
    let n = Double(df[w] ?? 0), N = Double(passages.count)
    return log(1 + (N - n + 0.5) / (n + 0.5))
  }

  /// The question's most specific subject word: of those these passages hold, the rarest in
  /// them (ties alphabetical); nil when they hold none. A word no passage holds is left out: it
  /// is as often a plain verb ("give", "point") as a term the notes lack, which ``match(of:by:)``
  /// already weighs.
  public func mostSpecificWord(of question: String) -> String? {
    KnowledgeNotes.subjectWords(question).filter { df[$0] != nil }.min { a, b in
      let (x, y) = (df[a] ?? 0, df[b] ?? 0)
      return x != y ? x < y : a < b
    }
  }

  /// Whether `word` is among `words`, or shares its first five letters or more with one of them
  /// as inflections do ("grade" and "graded", "necrosis" and "necrotic").
  static func mentions(_ words: Set<String>, _ word: String) -> Bool {
    if words.contains(word) { return true }
    guard word.count >= 5 else { return false }
    return words.contains { w in zip(w, word).prefix { $0 == $1 }.count >= 5 }
  }

  /// How much of the question `passage` speaks to: the share of the question's subject words
  /// (content words, question words such as "cause" aside) it contains, each weighted by its
  /// inverse document frequency in these passages, so that a rare word ("dead", "womb", a word
  /// no note holds) counts for more than a common one ("tissue", "cell"); and the subject words
  /// it leaves out, rarest first. A passage that holds only the common words of a question
  /// ("What does dead tissue look like under the microscope?" against the biopsy note) was
  /// found for the wrong reason.
  public func match(of question: String, by passage: NotePassage) -> (share: Double, missing: [String]) {
    let subject = KnowledgeNotes.subjectWords(question)
    guard !subject.isEmpty else { return (0, []) }
    let have = Set(KnowledgeNotes.words(passage.title + " " + passage.text))
    var got = 0.0, all = 0.0
    for w in subject {
      all += idf(w)
      if have.contains(w) { got += idf(w) }
    }
    let missing = subject.filter { !have.contains($0) }.sorted { (idf($0), $1) > (idf($1), $0) }
    return (all > 0 ? got / all : 0, missing)
  }

  /// A question's subject words: its content words less the words that shape a question.
  static func subjectWords(_ question: String) -> Set<String> { Set(words(question)).subtracting(questionWords) }

  /// Every passage, with the fallback's after these.
  public var allPassages: [NotePassage] { passages + (fallback?.allPassages ?? []) }

  /// Lecture notes (JSON lines of `file`, `title`, `text`, as the atlas lecture notes in
  /// `../shared/data/text`) cut into retrievable passages: the text's lines, less figure
  /// credits, citations and links, joined into passages of about `words` words, each titled
  /// with its lecture. Lectures that are not in English are left out (the chat model answers
  /// in English). Returns a notes file (`collection`, `notes`) for ``init(directories:fallback:)``.
  /// - Throws: ``PipelineError`` naming the file and line that is not a JSON object with text.
  public static func lectureNotes(jsonl path: String, collection: String, words: Int = 90) throws -> [String: Any] {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
      throw PipelineError.file(path: path, message: "cannot read the lecture notes as UTF-8 text")
    }
    var notes: [[String: String]] = []
    for (ln, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
      guard let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        let body = obj["text"] as? String
      else { throw PipelineError.file(path: path, message: "line \(ln + 1) is not a JSON object with a text field") }
      let file = obj["file"] as? String ?? "lecture-\(ln + 1)"
      let stem = (file as NSString).deletingPathExtension
      var title = (obj["title"] as? String ?? "").trimmingCharacters(in: .whitespaces)
      if title.isEmpty || title.lowercased() == "title" {
        title = stem.split(separator: "-").joined(separator: " ").capitalized
      }
      // Turkish lectures: their letters are a reliable sign at any length.
      let turkish = body.unicodeScalars.filter { "ğışĞİŞ".unicodeScalars.contains($0) }.count
      guard turkish * 200 < max(1, body.count), !stem.lowercased().contains("disclaimer") else { continue }
      var chunk: [String] = [], count = 0, part = 0
      func flush() {
        guard count >= 12 else { return }
        part += 1
        notes.append([
          "id": "\(stem)-\(part)", "title": title, "text": "\(title): " + chunk.joined(separator: "; ") + ".",
        ])
        chunk = []
        count = 0
      }
      let credit = ["et al", "http", "doi", "figure ", "©", "robbins", "cotran", "question to think"]
      for raw in body.split(separator: "\n") {
        let l = raw.replacingOccurrences(of: "<[^>]*>", with: "", options: .regularExpression)
          .split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
        let lower = l.lowercased()
        if l.count < 3 || lower == "title" || lower == title.lowercased() || lower.hasPrefix("atlas of")
          || credit.contains(where: { lower.contains($0) })
        {
          continue
        }
        chunk.append(l.trimmingCharacters(in: CharacterSet(charactersIn: " .;:")))
        count += l.split(separator: " ").count
        if count >= words { flush() }
      }
      flush()
    }
    return ["collection": collection, "source": (path as NSString).lastPathComponent, "notes": notes]
  }

  /// The passage written for a class of that name (a knowledge file's class, whose title is its
  /// name; letter case ignored), else the best passage for the name by ``search(_:k:minimumScore:fallback:dense:)``
  /// among these passages, scored 0 when it is the named one. Nil when neither exists. A verdict's
  /// own class passage must win over a sibling that shares most of its words ("Gleason pattern
  /// 3" against "Gleason pattern 4").
  public func passage(forClass name: String) -> (NotePassage, Double)? {
    let key = name.lowercased()
    if let p = passages.first(where: { $0.title.lowercased() == key }) { return (p, 0) }
    return search(name, k: 1, minimumScore: 0, fallback: false).first
  }

  /// The best passages for a query with their BM25 scores, best first; passages scoring below
  /// `minimumScore` are left out. `fallback: false` searches these passages only. With `dense`
  /// (embeddings of these passages), the passages BM25 finds are ranked by reciprocal rank
  /// fusion of BM25's ranking and the embeddings' ranking of every passage (k 60, equal weights):
  /// BM25 still decides whether anything is relevant, the embeddings help choose which passage.
  public func search(
    _ query: String, k: Int = 2, minimumScore: Double = 2.0, fallback useFallback: Bool = true, dense: NoteEmbeddings? = nil
  ) -> [(NotePassage, Double)] {
    let q = Set(KnowledgeNotes.words(query))
    let subject = q.subtracting(KnowledgeNotes.questionWords)
    var scored: [(Int, Double)] = []
    for (i, d) in docs.enumerated() {
      if requireEveryWord && (subject.isEmpty || !subject.allSatisfy({ d[$0] != nil })) { continue }
      var s = 0.0
      for w in q {
        guard let tf = d[w] else { continue }
        let t = Double(tf)
        s += idf(w) * t * 2.2 / (t + 1.2 * (0.25 + 0.75 * lengths[i] / avgLength))
      }
      if s >= minimumScore { scored.append((i, s)) }
    }
    scored.sort { $0.1 > $1.1 }
    if let e = dense, e.count == passages.count, scored.count > 1, let sim = try? e.similarities(query) {
      let order = sim.indices.sorted { sim[$0] > sim[$1] }
      var denseRank = [Int](repeating: 0, count: sim.count)
      for (r, i) in order.enumerated() { denseRank[i] = r }
      let fused = scored.enumerated().map { r, e in (e, 1 / Double(60 + r) + 1 / Double(60 + denseRank[e.0]), r) }
      // Ties keep BM25's order.
      scored = fused.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.2 < $1.2 }.map(\.0)
    }
    // The fallback answers when these passages have nothing, or when their best passage misses
    // a word of the question that one fallback passage covers along with every other.
    if useFallback, let f = fallback, scored.first.map({ best in !subject.allSatisfy { docs[best.0][$0] != nil } }) ?? true {
      let back = f.search(query, k: k, minimumScore: minimumScore)
      if !back.isEmpty { return back }
    }
    return scored.prefix(k).map { (passages[$0.0], $0.1) }
  }

  /// Words that shape a question rather than name its subject ("What causes X?", "Which stain
  /// is used to show X?"): left out when a passage must cover the whole question.
  static let questionWords: Set<String> = [
    "cause", "caused", "used", "use", "made", "make", "called", "mean", "common", "commonest", "type", "kind", "happen",
    "difference", "between", "role", "main", "usually", "typical", "typically", "seen", "found",
  ]

  /// American spellings a language model writes, as Eosin's notes spell them ("tumor" must
  /// count as a word of a note that says "tumour").
  static let britishSpelling: [String: String] = [
    "tumor": "tumour", "tumors": "tumours", "hematoxylin": "haematoxylin", "edema": "oedema", "color": "colour",
    "colors": "colours", "hemorrhage": "haemorrhage", "ischemia": "ischaemia", "ischemic": "ischaemic",
    "esophagus": "oesophagus", "esophageal": "oesophageal", "estrogen": "oestrogen", "anemia": "anaemia",
    "leukemia": "leukaemia", "hemorrhagic": "haemorrhagic", "fetal": "foetal", "pediatric": "paediatric",
    "gray": "grey", "center": "centre", "centers": "centres", "fiber": "fibre", "fibers": "fibres",
  ]

  static let stopWords: Set<String> = [
    "a", "an", "the", "is", "are", "was", "were", "be", "of", "in", "on", "at", "to", "for", "and", "or", "with", "what", "which",
    "who", "how", "why", "when", "where", "does", "do", "this", "that", "these", "those", "it", "its", "as", "by", "from", "can",
    "you", "me", "my", "i", "tell", "about", "there", "any", "there", "show", "shows", "see", "slide", "image", "please",
    "explain",
    "describe", "one", "sentence", "into", "than", "then", "so", "if", "not", "no", "yes", "has", "have", "had", "may", "also",
    "look", "like",
    // Prepositions: "under the microscope" must not match a note for "under".
    "under", "over", "inside", "outside", "through", "after", "before", "during", "within", "without", "above", "below",
    "around", "upon", "onto", "via", "across", "along", "toward", "towards",
  ]

  /// Lower-cased word tokens (letters and digits), stop words removed, a plural "s" dropped.
  static func words(_ s: String) -> [String] {
    var out: [String] = []
    var cur: [UInt8] = []
    func flush() {
      guard !cur.isEmpty else { return }
      var w = String(decoding: cur, as: UTF8.self)
      cur.removeAll(keepingCapacity: true)
      if let b = britishSpelling[w] { w = b }
      if w.count > 1 && !stopWords.contains(w) {
        out.append(w.count > 4 && w.hasSuffix("s") && !w.hasSuffix("ss") && !w.hasSuffix("is") ? String(w.dropLast()) : w)
      }
    }
    // ASCII letters and digits byte by byte (the notes are mostly ASCII: indexing 550 atlas
    // passages through Foundation's character sets took 200 ms of chat's start-up); any other
    // character is lower-cased and tested as before.
    for ch in s.unicodeScalars {
      let v = ch.value
      if v < 128 {
        if (v >= 97 && v <= 122) || (v >= 48 && v <= 57) {
          cur.append(UInt8(v))
        } else if v >= 65 && v <= 90 {
          cur.append(UInt8(v + 32))
        } else {
          flush()
        }
      } else {
        for l in String(ch).lowercased().unicodeScalars {
          if CharacterSet.alphanumerics.contains(l) { cur.append(contentsOf: Array(String(l).utf8)) } else { flush() }
        }
      }
    }
    flush()
    return out
  }
}

extension KnowledgeNotes {
  /// How retrieval does on questions with key facts: the share whose first passage holds every
  /// key fact (``ChatEvaluation/GeneralQuestion/facts``, in its title or text) and, where the
  /// question names its note, the share whose first passage is that note.
  public struct RetrievalScore: Sendable, Equatable {
    public var questions = 0, factsFirst = 0, named = 0, noteFirst = 0
  }

  /// Retrieves each question's first passage as chat does for a general question (the
  /// fallback included), with `dense` fused in or not, and scores it (``RetrievalScore``).
  public func retrievalScore(_ questions: [ChatEvaluation.GeneralQuestion], dense: NoteEmbeddings?) -> RetrievalScore {
    var r = RetrievalScore()
    for q in questions {
      r.questions += 1
      if q.note != nil { r.named += 1 }
      guard let p = search(q.q, k: 1, dense: dense).first?.0 else { continue }
      if q.facts.allSatisfy({ ChatEvaluation.hasFact(p.title + " " + p.text, $0) }) { r.factsFirst += 1 }
      if let n = q.note, p.source == n { r.noteFirst += 1 }
    }
    return r
  }
}

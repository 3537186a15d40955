import Foundation

extension Tokenizer {
  /// Loads CLIP's `bpe_simple_vocab_16e6.txt[.gz]` merges file and builds CLIP's vocabulary:
  /// 256 byte symbols, the same with `</w>`, 48,894 merges, `<|startoftext|>`, `<|endoftext|>`
  /// (49,408 tokens).
  /// - Throws: ``TokenizerError`` for a missing, corrupt or malformed file, naming the line.
  public static func clip(mergesFile path: String, mergeCount: Int = 49152 - 256 - 2) throws -> Tokenizer {
    let text = try readText(path)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    guard !lines.isEmpty else { throw TokenizerError.file(path: path, message: "empty merges file") }
    lines.removeFirst()  // "#version: 0.2"
    var merges: [(String, String)] = []
    for (i, l) in lines.prefix(mergeCount).enumerated() {
      let parts = l.split(separator: " ", omittingEmptySubsequences: false)
      guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
        throw TokenizerError.line(
          path: path, line: i + 2, message: "expected two space-separated symbols, found '\(l.prefix(40))'")
      }
      merges.append((String(parts[0]), String(parts[1])))
    }
    guard merges.count == mergeCount else {
      throw TokenizerError.file(path: path, message: "has \(merges.count) merges, CLIP needs \(mergeCount)")
    }
    var vocabList = ByteLevel.orderedBytes.map { String(ByteLevel.encoder[Int($0)]) }
    vocabList += vocabList.map { $0 + "</w>" }
    vocabList += merges.map { $0.0 + $0.1 }
    vocabList += ["<|startoftext|>", "<|endoftext|>"]
    var vocab: [String: Int32] = [:]
    for (i, t) in vocabList.enumerated() where vocab[t] == nil { vocab[t] = Int32(i) }
    let model = try BPEModel(vocab: vocab, merges: merges, endOfWord: "</w>", source: path, firstMergeLine: 2)
    let sot = vocab["<|startoftext|>"]!, eot = vocab["<|endoftext|>"]!
    return Tokenizer(
      style: .clip, model: model, special: ["<|startoftext|>": sot, "<|endoftext|>": eot], bos: sot, eos: eot, source: path)
  }

  /// Loads a GPT-2 style `vocab.json` + `merges.txt`. Special tokens: `<|endoftext|>` when in the
  /// vocabulary, plus those listed in `special_tokens.json` beside the vocabulary when present.
  public static func byteLevel(vocabFile: String, mergesFile: String) throws -> Tokenizer {
    let vtext = try readText(vocabFile)
    let mtext = try readText(mergesFile)
    let sp = ((vocabFile as NSString).deletingLastPathComponent as NSString).appendingPathComponent("special_tokens.json")
    let stext = FileManager.default.fileExists(atPath: sp) ? try readText(sp) : nil
    // Eosin's CLIP and its embedded decoder ship the same vocabulary: files with the same
    // contents give the same (immutable, thread-safe) tokenizer, built once per process.
    return try ByteLevelMemo.shared.tokenizer(key: .init([vtext, mtext, stext ?? "\u{0}none"])) {
      try buildByteLevel(vtext: vtext, mtext: mtext, stext: stext, vocabFile: vocabFile, mergesFile: mergesFile, specialFile: sp)
    }
  }

  private static func buildByteLevel(
    vtext: String, mtext: String, stext: String?, vocabFile: String, mergesFile: String, specialFile sp: String
  ) throws -> Tokenizer {
    let obj: Any
    do { obj = try JSONSerialization.jsonObject(with: Data(vtext.utf8)) } catch {
      throw TokenizerError.line(path: vocabFile, line: jsonErrorLine(error, vtext), message: "malformed JSON")
    }
    guard let dict = obj as? [String: Any] else {
      throw TokenizerError.file(path: vocabFile, message: "expected a JSON object of token -> id")
    }
    var vocab: [String: Int32] = [:]
    for (k, v) in dict {
      guard let i = v as? Int else {
        throw TokenizerError.file(path: vocabFile, message: "token '\(k.prefix(40))' has a non-integer id")
      }
      vocab[k] = try vocabID(i, token: k, path: vocabFile)
    }
    let merges = try parseMerges(mtext, path: mergesFile)
    let model = try BPEModel(
      vocab: vocab, merges: merges.pairs, endOfWord: nil, source: mergesFile, firstMergeLine: merges.firstLine)
    var special: [String: Int32] = [:]
    if let e = vocab["<|endoftext|>"] { special["<|endoftext|>"] = e }
    if let st = stext {
      guard let list = try? JSONSerialization.jsonObject(with: Data(st.utf8)) as? [String] else {
        throw TokenizerError.file(path: sp, message: "expected a JSON array of token strings")
      }
      for t in list {
        guard let id = vocab[t] else {
          throw TokenizerError.file(path: sp, message: "special token '\(t)' is not in the vocabulary")
        }
        special[t] = id
      }
    }
    return Tokenizer(
      style: .byteLevel, model: model, special: special, bos: nil, eos: special["<|endoftext|>"], source: vocabFile)
  }

  /// Loads an HF `tokenizer.json` whose model is BPE. `end_of_word_suffix` "</w>" selects the CLIP
  /// style; otherwise byte-level. Added tokens become special tokens.
  public static func huggingFace(tokenizerJSON path: String) throws -> Tokenizer {
    let text = try readText(path)
    let obj: Any
    do { obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) } catch {
      throw TokenizerError.line(path: path, line: jsonErrorLine(error, text), message: "malformed JSON")
    }
    guard let root = obj as? [String: Any], let m = root["model"] as? [String: Any] else {
      throw TokenizerError.file(path: path, message: "no \"model\" object")
    }
    guard (m["type"] as? String) == "BPE" else {
      throw TokenizerError.file(path: path, message: "model type \(m["type"] ?? "?") is not BPE")
    }
    guard let v = m["vocab"] as? [String: Int] else { throw TokenizerError.file(path: path, message: "model.vocab missing") }
    var vocab: [String: Int32] = [:]
    for (k, i) in v { vocab[k] = try vocabID(i, token: k, path: path) }
    var merges: [(String, String)] = []
    for (i, e) in ((m["merges"] as? [Any]) ?? []).enumerated() {
      if let s = e as? String {
        let p = s.split(separator: " ", omittingEmptySubsequences: false)
        guard p.count == 2 else { throw TokenizerError.file(path: path, message: "model.merges[\(i)] is not 'a b'") }
        merges.append((String(p[0]), String(p[1])))
      } else if let a = e as? [String], a.count == 2 {
        merges.append((a[0], a[1]))
      } else {
        throw TokenizerError.file(path: path, message: "model.merges[\(i)] is malformed")
      }
    }
    var special: [String: Int32] = [:]
    for t in (root["added_tokens"] as? [[String: Any]]) ?? [] {
      if let c = t["content"] as? String, let id = t["id"] as? Int {
        special[c] = try vocabID(id, token: c, path: path)
        vocab[c] = special[c]
      }
    }
    let eow = m["end_of_word_suffix"] as? String
    let model = try BPEModel(vocab: vocab, merges: merges, endOfWord: eow, source: path)
    if eow == "</w>" {
      return Tokenizer(
        style: .clip, model: model, special: special, bos: special["<|startoftext|>"], eos: special["<|endoftext|>"], source: path
      )
    }
    return Tokenizer(style: .byteLevel, model: model, special: special, bos: nil, eos: special["<|endoftext|>"], source: path)
  }

  /// Loads whatever a path holds: a directory with `tokenizer.json` or `vocab.json` +
  /// `merges.txt`, a `tokenizer.json`, or a CLIP merges file (`.txt` or `.txt.gz`).
  public static func load(_ path: String) throws -> Tokenizer {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
      throw TokenizerError.file(path: path, message: "no such file or directory")
    }
    if isDir.boolValue {
      let tj = (path as NSString).appendingPathComponent("tokenizer.json")
      if FileManager.default.fileExists(atPath: tj) { return try huggingFace(tokenizerJSON: tj) }
      let v = (path as NSString).appendingPathComponent("vocab.json"), m = (path as NSString).appendingPathComponent("merges.txt")
      if FileManager.default.fileExists(atPath: v) { return try byteLevel(vocabFile: v, mergesFile: m) }
      throw TokenizerError.file(path: path, message: "holds neither tokenizer.json nor vocab.json + merges.txt")
    }
    if path.hasSuffix(".json") { return try huggingFace(tokenizerJSON: path) }
    return try clip(mergesFile: path)
  }

  /// Parses `merges.txt`: an optional `#version` line, then "a b" per line.
  static func parseMerges(_ text: String, path: String) throws -> (pairs: [(String, String)], firstLine: Int) {
    var pairs: [(String, String)] = []
    var first = 1
    for (i, l) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      if i == 0 && l.hasPrefix("#version") {
        first = 2
        continue
      }
      if l.isEmpty { continue }
      let p = l.split(separator: " ", omittingEmptySubsequences: false)
      guard p.count == 2, !p[0].isEmpty, !p[1].isEmpty else {
        throw TokenizerError.line(
          path: path, line: i + 1, message: "expected two space-separated symbols, found '\(l.prefix(40))'")
      }
      pairs.append((String(p[0]), String(p[1])))
    }
    return (pairs, first)
  }
}

/// The 1-based line of a JSONSerialization error.
func jsonErrorLine(_ error: Error, _ text: String) -> Int { jsonErrorLocation(error, in: text).line }

/// The 1-based line and column where JSONSerialization stopped, from its error: an error index,
/// or "around character N" (a UTF-8 byte offset) in the debug description, or "line L, column C".
public func jsonErrorLocation(_ error: Error, in text: String) -> (line: Int, column: Int) {
  let info = (error as NSError).userInfo
  var offset: Int? = info["NSJSONSerializationErrorIndex"] as? Int
  let d = (info[NSDebugDescriptionErrorKey] as? String) ?? ""
  func number(after p: String) -> Int? {
    guard let r = d.range(of: p) else { return nil }
    return Int(d[r.upperBound...].prefix { $0.isNumber })
  }
  if offset == nil, let l = number(after: "line "), let c = number(after: "column ") { return (l, c + 1) }
  if offset == nil { offset = number(after: "character ") }
  guard let o = offset else { return (1, 1) }
  var line = 1, col = 1
  for b in text.utf8.prefix(o) {
    if b == 0x0A {
      line += 1
      col = 1
    } else if b & 0xC0 != 0x80 {
      col += 1
    }
  }
  return (line, col)
}

/// The largest token id a vocabulary may use (16,777,215): real vocabularies stay far below.
let maxVocabID = (1 << 24) - 1

/// A vocabulary id, checked: 0...``maxVocabID``.
func vocabID(_ i: Int, token: String, path: String) throws -> Int32 {
  guard i >= 0 && i <= maxVocabID else {
    throw TokenizerError.file(path: path, message: "token '\(token.prefix(40))' has id \(i), outside 0...\(maxVocabID)")
  }
  return Int32(i)
}

/// Tokenizers built from `vocab.json` + `merges.txt` (+ `special_tokens.json`), by file
/// contents. A second thread asking for the same contents while the first builds waits for it.
final class ByteLevelMemo: @unchecked Sendable {
  static let shared = ByteLevelMemo()
  private final class Entry {
    let ready = DispatchSemaphore(value: 0)
    var result: Result<Tokenizer, Error>? = nil
  }
  private let lock = NSLock()
  private var entries: [Key: Entry] = [:]

  /// The files' bytes, hashed whole.
  struct Key: Hashable {
    let bytes: [UInt8]
    init(_ texts: [String]) {
      var b: [UInt8] = []
      for t in texts { b += t.utf8 + [0] }
      bytes = b
    }
    func hash(into h: inout Hasher) { bytes.withUnsafeBytes { h.combine(bytes: $0) } }
  }

  func tokenizer(key: Key, build: () throws -> Tokenizer) throws -> Tokenizer {
    lock.lock()
    if let e = entries[key] {
      lock.unlock()
      e.ready.wait()
      e.ready.signal()
      return try e.result!.get()
    }
    let e = Entry()
    entries[key] = e
    lock.unlock()
    let r = Result { try build() }
    if case .failure = r {
      // A file that failed to parse is not remembered: each load reports its own error.
      lock.lock()
      entries[key] = nil
      lock.unlock()
    }
    e.result = r
    e.ready.signal()
    return try r.get()
  }
}

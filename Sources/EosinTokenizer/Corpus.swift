import Foundation

/// Reads training text from the corpus formats Eosin uses: JSON (caption datasets and Eosin's
/// prompt and knowledge files), CSV with a text column, and plain text (one document a line).
public enum TextCorpus {
  /// JSON keys whose string values are prose. Identifiers (ids, uuids, positions) are skipped.
  public static let textKeys: Set<String> = [
    "caption", "text", "description", "name", "names", "synonyms", "features", "templates", "classes", "label",
    "organ", "summary", "notes", "subtype", "question", "answer",
  ]

  /// All prose from a file, de-duplicated in first-seen order.
  /// - Throws: ``TokenizerError`` naming the file (and line, for malformed JSON).
  public static func read(_ path: String) throws -> [String] {
    let text = try readText(path)
    var out: [String] = []
    switch (path as NSString).pathExtension.lowercased() {
    case "json":
      let obj: Any
      do { obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) } catch {
        throw TokenizerError.line(path: path, line: jsonErrorLine(error, text), message: "malformed JSON")
      }
      collect(obj, key: nil, into: &out)
    case "csv":
      let rows = try CSV.parse(text, path: path)
      guard let header = rows.first else { return [] }
      let cols = header.enumerated().filter { textKeys.contains($0.element.lowercased()) }.map { $0.offset }
      for r in rows.dropFirst() { for c in cols where c < r.count { out.append(r[c]) } }
    default:
      out = text.split(separator: "\n").map(String.init)
    }
    var seen: Set<String> = []
    return out.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty && seen.insert($0).inserted }
  }

  static func collect(_ o: Any, key: String?, into out: inout [String]) {
    if let s = o as? String {
      if let k = key, textKeys.contains(k.lowercased()) { out.append(s) }
    } else if let d = o as? [String: Any] {
      for k in d.keys.sorted() { collect(d[k]!, key: k, into: &out) }
    } else if let a = o as? [Any] {
      for e in a { collect(e, key: key, into: &out) }
    }
  }
}

/// A small RFC 4180 CSV reader: quoted fields, doubled quotes, commas and newlines in quotes.
public enum CSV {
  /// Parses CSV text into rows of fields.
  /// - Throws: ``TokenizerError/line`` for an unterminated quote, naming the line it began on.
  public static func parse(_ text: String, path: String) throws -> [[String]] {
    var rows: [[String]] = []
    var row: [String] = []
    var field = ""
    var inQuotes = false
    var line = 1, quoteLine = 1
    var it = text.unicodeScalars.makeIterator()
    var pending: Unicode.Scalar? = nil
    var atFieldStart = true
    while let c = pending ?? it.next() {
      pending = nil
      if inQuotes {
        if c == "\"" {
          if let n = it.next() {
            if n == "\"" {
              field.unicodeScalars.append("\"")
            } else {
              inQuotes = false
              pending = n
            }
          } else {
            inQuotes = false
          }
        } else {
          if c == "\n" { line += 1 }
          field.unicodeScalars.append(c)
        }
        continue
      }
      switch c {
      case "\"" where atFieldStart:
        inQuotes = true
        quoteLine = line
        atFieldStart = false
      case ",":
        row.append(field)
        field = ""
        atFieldStart = true
      case "\n":
        row.append(field)
        rows.append(row)
        row = []
        field = ""
        line += 1
        atFieldStart = true
      case "\r":
        continue
      default:
        field.unicodeScalars.append(c)
        atFieldStart = false
      }
    }
    if inQuotes { throw TokenizerError.line(path: path, line: quoteLine, message: "unterminated quoted field") }
    if !field.isEmpty || !row.isEmpty {
      row.append(field)
      rows.append(row)
    }
    return rows
  }
}

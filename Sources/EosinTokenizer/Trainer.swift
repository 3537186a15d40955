import Foundation

/// Trains a byte-level BPE vocabulary (GPT-2 format) from text.
///
/// Deterministic: words come from GPT-2's pre-tokenisation; each step merges the adjacent pair
/// with the highest count over the corpus. **Ties** are broken by the pair's token strings,
/// compared as UTF-8 bytes: the smaller left token wins, then the smaller right token. Pairs
/// seen fewer than `minFrequency` times are never merged. Ids: the 256 byte symbols in GPT-2's
/// order, then merges in order, then the special tokens.
public struct BPETrainer {
  public var vocabSize: Int
  public var specialTokens: [String]
  public var minFrequency: Int = 2

  public init(vocabSize: Int, specialTokens: [String], minFrequency: Int = 2) {
    self.vocabSize = vocabSize
    self.specialTokens = specialTokens
    self.minFrequency = minFrequency
  }

  /// The result: token -> id and the ranked merges.
  public struct Result {
    public var vocab: [String: Int32]
    public var merges: [(String, String)]
  }

  /// Trains on `texts`. O(total merges x affected words). `progress` gets (merges done, target).
  public func train(_ texts: [String], progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
    let target = vocabSize - 256 - specialTokens.count
    guard target >= 0 else {
      throw TokenizerError.invalid("vocab size \(vocabSize) is smaller than 256 bytes + \(specialTokens.count) special tokens")
    }
    // Count words.
    var counts: [String: Int] = [:]
    for t in texts {
      let u = Array(t.unicodeScalars)
      for r in gpt2Split(u) {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: u[r])
        counts[String(s), default: 0] += 1
      }
    }
    // Symbols: ids 0..<256 are bytes in GPT-2 order.
    var tokenStr: [String] = ByteLevel.orderedBytes.map { String(ByteLevel.encoder[Int($0)]) }
    var tokenBytes: [[UInt8]] = tokenStr.map { Array($0.utf8) }
    var byteToID = [Int32](repeating: 0, count: 256)
    for (i, b) in ByteLevel.orderedBytes.enumerated() { byteToID[Int(b)] = Int32(i) }
    let sortedWords = counts.keys.sorted()
    var words: [[Int32]] = sortedWords.map { w in w.utf8.map { byteToID[Int($0)] } }
    let freq: [Int] = sortedWords.map { counts[$0]! }
    // Pair counts and pair -> words index.
    var pairCount: [UInt64: Int] = [:]
    var pairWords: [UInt64: Set<Int32>] = [:]
    @inline(__always) func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
    for (wi, w) in words.enumerated() where w.count > 1 {
      for i in 0..<(w.count - 1) {
        let k = key(w[i], w[i + 1])
        pairCount[k, default: 0] += freq[wi]
        pairWords[k, default: []].insert(Int32(wi))
      }
    }
    // Max-heap of (count, pair) with lazy invalidation.
    // Pops the highest count first; `less` is inverted into the heap's `before`.
    let less: (PairEntry, PairEntry) -> Bool = { a, b in
      if a.count != b.count { return a.count < b.count }
      // Tie: smaller (left bytes, right bytes) is "greater" so it pops first.
      let la = tokenBytes[Int(a.key >> 32)], lb = tokenBytes[Int(b.key >> 32)]
      if la != lb { return !la.lexicographicallyPrecedes(lb) }
      let ra = tokenBytes[Int(a.key & 0xFFFF_FFFF)], rb = tokenBytes[Int(b.key & 0xFFFF_FFFF)]
      return !ra.lexicographicallyPrecedes(rb) && ra != rb
    }
    var heap = BinaryHeap<PairEntry> { less($1, $0) }
    for (k, c) in pairCount where c >= minFrequency { heap.push(.init(count: c, key: k)) }
    var merges: [(String, String)] = []
    while merges.count < target, let top = heap.pop() {
      guard let cur = pairCount[top.key], cur == top.count else {
        if let cur = pairCount[top.key], cur >= minFrequency { heap.push(.init(count: cur, key: top.key)) }
        continue
      }
      let a = Int32(top.key >> 32), b = Int32(top.key & 0xFFFF_FFFF)
      let newID = Int32(tokenStr.count)
      tokenStr.append(tokenStr[Int(a)] + tokenStr[Int(b)])
      tokenBytes.append(tokenBytes[Int(a)] + tokenBytes[Int(b)])
      merges.append((tokenStr[Int(a)], tokenStr[Int(b)]))
      var touched: Set<UInt64> = []
      for wi32 in (pairWords[top.key] ?? []).sorted() {
        let wi = Int(wi32)
        let w = words[wi]
        let f = freq[wi]
        var nw: [Int32] = []
        nw.reserveCapacity(w.count)
        var i = 0
        var changed = false
        while i < w.count {
          if i + 1 < w.count && w[i] == a && w[i + 1] == b {
            nw.append(newID)
            i += 2
            changed = true
          } else {
            nw.append(w[i])
            i += 1
          }
        }
        guard changed else { continue }
        // Remove the old word's pairs, add the new word's.
        for j in 0..<(w.count - 1) {
          let k = key(w[j], w[j + 1])
          pairCount[k, default: 0] -= f
          touched.insert(k)
        }
        for j in 0..<max(0, nw.count - 1) {
          let k = key(nw[j], nw[j + 1])
          pairCount[k, default: 0] += f
          pairWords[k, default: []].insert(wi32)
          touched.insert(k)
        }
        words[wi] = nw
      }
      pairCount[top.key] = nil
      pairWords[top.key] = nil
      for k in touched {
        if let c = pairCount[k], c >= minFrequency { heap.push(.init(count: c, key: k)) }
      }
      if merges.count % 500 == 0 { progress(merges.count, target) }
    }
    var vocab: [String: Int32] = [:]
    for (i, t) in tokenStr.enumerated() { vocab[t] = Int32(i) }
    for s in specialTokens {
      guard vocab[s] == nil else { throw TokenizerError.invalid("special token \(s) collides with a learned token") }
      vocab[s] = Int32(vocab.count)
    }
    return Result(vocab: vocab, merges: merges)
  }

  /// Writes `vocab.json` (sorted by id), `merges.txt` (with a `#version: 0.2` header) and
  /// `special_tokens.json` into `dir`, atomically each.
  public static func write(_ r: Result, specialTokens: [String], to dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let byID = r.vocab.sorted { $0.value < $1.value }
    var json = "{\n"
    for (i, (t, id)) in byID.enumerated() {
      json += "  \(jsonString(t)): \(id)\(i + 1 < byID.count ? "," : "")\n"
    }
    json += "}\n"
    try Data(json.utf8).write(to: URL(fileURLWithPath: dir + "/vocab.json"), options: .atomic)
    let merges = "#version: 0.2\n" + r.merges.map { "\($0.0) \($0.1)\n" }.joined()
    try Data(merges.utf8).write(to: URL(fileURLWithPath: dir + "/merges.txt"), options: .atomic)
    let sp = "[" + specialTokens.map { jsonString($0) }.joined(separator: ", ") + "]\n"
    try Data(sp.utf8).write(to: URL(fileURLWithPath: dir + "/special_tokens.json"), options: .atomic)
  }
}

/// A JSON string literal with escapes for quotes, backslashes and control characters.
public func jsonString(_ s: String) -> String {
  var o = "\""
  for u in s.unicodeScalars {
    switch u {
    case "\"": o += "\\\""
    case "\\": o += "\\\\"
    case "\n": o += "\\n"
    case "\r": o += "\\r"
    case "\t": o += "\\t"
    default:
      if u.value < 0x20 { o += String(format: "\\u%04x", u.value) } else { o.unicodeScalars.append(u) }
    }
  }
  return o + "\""
}

struct PairEntry {
  var count: Int
  var key: UInt64
}

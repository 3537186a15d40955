import Foundation

/// A byte-pair-encoding model: a vocabulary and ranked merges over integer symbol ids.
///
/// `encodeWord` applies merges lowest rank first with a binary heap over adjacent pairs and a
/// linked list of symbols, so a word of n symbols costs O(n log n), never O(n²) (a 1 MB
/// "word" stays linear-time in practice).
public struct BPEModel: Sendable {
  /// token string -> id
  public let vocab: [String: Int32]
  /// id -> token string
  public let tokens: [String]
  /// (left id << 32 | right id) -> (rank, merged id)
  let merges: [UInt64: (rank: Int32, id: Int32)]
  /// Merge list in rank order, as token-string pairs.
  public let mergeList: [(String, String)]
  /// Appended to a word's last symbol (CLIP's `</w>`), or nil (GPT-2).
  public let endOfWord: String?
  /// Ids of the 256 single-byte symbols, and with the end-of-word suffix when there is one.
  let byteIDs: [Int32]
  let byteEndIDs: [Int32]

  /// Builds the model. Every merge's parts and result must be in `vocab`.
  /// - Throws: ``TokenizerError`` naming `source` and the merge line that is not consistent.
  /// - Parameter requireAllBytes: when false (GGUF vocabularies, some of which lack a few
  ///   control-byte symbols), a byte without a symbol is dropped from the output instead.
  public init(
    vocab: [String: Int32], merges: [(String, String)], endOfWord: String?, source: String, firstMergeLine: Int = 1,
    requireAllBytes: Bool = true
  ) throws {
    self.vocab = vocab
    // Ids index an array: they must be non-negative and dense enough that the array stays the
    // size of the vocabulary (a few unused ids are allowed).
    let maxID = vocab.values.max().map { Int($0) } ?? -1
    if let (t, i) = vocab.first(where: { $0.value < 0 }) {
      throw TokenizerError.file(path: source, message: "negative id \(i) for token '\(t.prefix(40))'")
    }
    guard maxID < 2 * vocab.count + 1024 else {
      throw TokenizerError.file(
        path: source, message: "the largest id (\(maxID)) is far beyond the vocabulary's \(vocab.count) tokens")
    }
    var toks = [String](repeating: "", count: maxID + 1)
    for (t, i) in vocab {
      guard i >= 0 else { throw TokenizerError.file(path: source, message: "negative id for token \(t)") }
      toks[Int(i)] = t
    }
    tokens = toks
    var m: [UInt64: (rank: Int32, id: Int32)] = [:]
    m.reserveCapacity(merges.count)
    for (r, (a, b)) in merges.enumerated() {
      guard let ia = vocab[a], let ib = vocab[b], let im = vocab[a + b] else {
        throw TokenizerError.line(
          path: source, line: firstMergeLine + r, message: "merge '\(a) \(b)' uses a token missing from the vocabulary")
      }
      let key = UInt64(UInt32(bitPattern: ia)) << 32 | UInt64(UInt32(bitPattern: ib))
      if m[key] == nil { m[key] = (Int32(r), im) }
    }
    self.merges = m
    mergeList = merges
    self.endOfWord = endOfWord
    var bi: [Int32] = [], be: [Int32] = []
    for b in 0..<256 {
      let c = String(ByteLevel.encoder[b])
      guard let id = vocab[c] else {
        if !requireAllBytes {
          bi.append(-1)
          continue
        }
        throw TokenizerError.file(path: source, message: "vocabulary lacks the byte symbol '\(c)' (byte \(b))")
      }
      bi.append(id)
      if let e = endOfWord {
        guard let ide = vocab[c + e] else { throw TokenizerError.file(path: source, message: "vocabulary lacks '\(c + e)'") }
        be.append(ide)
      }
    }
    byteIDs = bi
    byteEndIDs = be
  }

  /// Encodes one pre-token's UTF-8 bytes to ids.
  public func encodeWord(_ bytes: ArraySlice<UInt8>) -> [Int32] {
    let n = bytes.count
    if n == 0 { return [] }
    var sym = [Int32](repeating: 0, count: n)
    var k = 0
    for b in bytes {
      sym[k] = byteIDs[Int(b)]
      k += 1
    }
    if endOfWord != nil { sym[n - 1] = byteEndIDs[Int(bytes[bytes.index(before: bytes.endIndex)])] }
    if n == 1 { return sym[0] >= 0 ? sym : [] }
    // Doubly linked list over positions; heap of (rank, position, left id, right id).
    var next = [Int32](repeating: -1, count: n), prev = [Int32](repeating: -1, count: n)
    for i in 0..<n {
      next[i] = i + 1 < n ? Int32(i + 1) : -1
      prev[i] = Int32(i - 1)
    }
    var alive = [Bool](repeating: true, count: n)
    var heap = BinaryHeap<HeapItem> { $0.before($1) }
    func push(_ i: Int) {
      let j = Int(next[i])
      if j < 0 { return }
      let key = UInt64(UInt32(bitPattern: sym[i])) << 32 | UInt64(UInt32(bitPattern: sym[j]))
      if let m = merges[key] { heap.push(HeapItem(rank: m.rank, pos: Int32(i), left: sym[i], right: sym[j])) }
    }
    for i in 0..<(n - 1) { push(i) }
    while let top = heap.pop() {
      let i = Int(top.pos)
      guard alive[i], sym[i] == top.left else { continue }
      let j = Int(next[i])
      guard j >= 0, sym[j] == top.right else { continue }
      let key = UInt64(UInt32(bitPattern: top.left)) << 32 | UInt64(UInt32(bitPattern: top.right))
      sym[i] = merges[key]!.id
      alive[j] = false
      let nj = next[j]
      next[i] = nj
      if nj >= 0 { prev[Int(nj)] = Int32(i) }
      if prev[i] >= 0 { push(Int(prev[i])) }
      push(i)
    }
    var out: [Int32] = []
    var i = 0
    while i >= 0 {
      if sym[i] >= 0 { out.append(sym[i]) }
      i = Int(next[i])
    }
    return out
  }
}

struct HeapItem {
  var rank: Int32
  var pos: Int32
  var left: Int32
  var right: Int32
  /// Lower rank first; ties (the same merge at several places) leftmost first, as HF does.
  @inline(__always) func before(_ o: HeapItem) -> Bool { rank != o.rank ? rank < o.rank : pos < o.pos }
}

/// A binary heap ordered by `before`: the element for which `before(x, y)` holds against every
/// other comes out first. Used for BPE merge candidates and for the trainer's pair counts.
struct BinaryHeap<T> {
  var a: [T] = []
  let before: (T, T) -> Bool

  init(before: @escaping (T, T) -> Bool) { self.before = before }

  mutating func push(_ x: T) {
    a.append(x)
    var i = a.count - 1
    while i > 0 {
      let p = (i - 1) / 2
      guard before(a[i], a[p]) else { break }
      a.swapAt(i, p)
      i = p
    }
  }

  mutating func pop() -> T? {
    guard let first = a.first else { return nil }
    let last = a.removeLast()
    if !a.isEmpty {
      a[0] = last
      var i = 0
      while true {
        let l = 2 * i + 1, r = l + 1
        var m = i
        if l < a.count && before(a[l], a[m]) { m = l }
        if r < a.count && before(a[r], a[m]) { m = r }
        if m == i { break }
        a.swapAt(i, m)
        i = m
      }
    }
    return first
  }
}

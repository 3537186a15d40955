import Foundation

/// A BPE tokenizer in one of two styles:
/// - ``Style/clip``: CLIP's text clean-up (NFC, whitespace collapsed, lower-cased), CLIP's
///   pre-tokenisation pattern, byte symbols, `</w>` word ends, start/end tokens and truncation.
/// - ``Style/byteLevel``: GPT-2's byte-level BPE: no normalisation, GPT-2's pattern; decode is
///   the exact inverse of encode for valid UTF-8.
///
/// Special tokens (such as `<|endoftext|>` or Eosin's chat tokens) are matched literally in the
/// text before pre-tokenisation. Thread-safe: the word cache is locked.
public final class Tokenizer: @unchecked Sendable {
  public enum Style: String, Sendable { case clip, byteLevel = "byte-level" }

  public let style: Style
  public let model: BPEModel
  /// Special token text -> id, matched before pre-tokenisation.
  public let special: [String: Int32]
  /// Start and end tokens (CLIP: `<|startoftext|>`, `<|endoftext|>`).
  public let bos: Int32?
  public let eos: Int32?
  /// Where the vocabulary came from, for messages and cache keys.
  public let source: String

  /// The pre-tokeniser of byte-level vocabularies (GPT-2's unless a GGUF file names another).
  public internal(set) var pre: PreTokenizer = .gpt2
  /// Special tokens that are matched in text only when asked to (GGUF control tokens).
  public internal(set) var controlIDs: Set<Int32> = []
  /// Whether ``encodeLlama(_:addSpecial:parseSpecial:)`` puts the BOS token first.
  public internal(set) var addsBOS = false

  private var cache: [String: [Int32]] = [:]
  private let lock = NSLock()
  let specialsByLength: [(String, Int32)]

  public init(style: Style, model: BPEModel, special: [String: Int32], bos: Int32?, eos: Int32?, source: String) {
    self.style = style
    self.model = model
    self.special = special
    self.bos = bos
    self.eos = eos
    self.source = source
    // An empty special token would match everywhere without consuming input: it is dropped.
    specialsByLength = special.filter { !$0.key.isEmpty }.sorted {
      $0.key.count > $1.key.count || ($0.key.count == $1.key.count && $0.key < $1.key)
    }
  }

  public var vocabSize: Int { model.tokens.count }

  // MARK: Encoding

  /// Token ids for `text`, without start/end tokens.
  public func encode(_ text: String) -> [Int32] {
    var out: [Int32] = []
    for (piece, id) in splitSpecial(style == .clip ? Tokenizer.clipNormalize(text) : text) {
      if let id = id {
        out.append(id)
      } else {
        encodeOrdinary(piece, into: &out)
      }
    }
    return out
  }

  /// Ids for raw bytes: invalid UTF-8 is replaced by U+FFFD first, never a crash.
  public func encode(bytes: [UInt8]) -> [Int32] { encode(String(decoding: bytes, as: UTF8.self)) }

  /// CLIP-style model input: `[bos] + ids + [eos]`, truncated to `contextLength` (keeping the
  /// end token) and, when `pad`, padded with the end token to exactly `contextLength`.
  public func encodeForModel(_ text: String, contextLength: Int, pad: Bool = true) -> [Int32] {
    var ids = encode(text)
    let room = contextLength - (bos == nil ? 0 : 1) - (eos == nil ? 0 : 1)
    if ids.count > room { ids = Array(ids.prefix(max(0, room))) }
    var out = (bos.map { [$0] } ?? []) + ids + (eos.map { [$0] } ?? [])
    if pad, let e = eos { while out.count < contextLength { out.append(e) } }
    return out
  }

  /// CLIP's normalisation: NFC, every whitespace run to one space, lower case.
  public static func clipNormalize(_ s: String) -> String {
    let nfc = s.precomposedStringWithCanonicalMapping
    var out = String.UnicodeScalarView()
    var inSpace = false
    for u in nfc.unicodeScalars {
      if charClass(u) == .space {
        if !inSpace { out.append(" ") }
        inSpace = true
      } else {
        out.append(u)
        inSpace = false
      }
    }
    return String(out).lowercased()
  }

  /// Splits out special tokens (longest first at each position); other text comes back with a
  /// nil id.
  func splitSpecial(_ text: String) -> [(Substring, Int32?)] {
    if specialsByLength.isEmpty || !text.utf8.contains(0x3C) { return [(text[...], nil)] }
    var out: [(Substring, Int32?)] = []
    var rest = text[...]
    var plainStart = rest.startIndex
    var i = rest.startIndex
    while i < rest.endIndex {
      var matched = false
      if rest[i] == "<" || specialsByLength.contains(where: { $0.0.first == rest[i] }) {
        for (s, id) in specialsByLength where rest[i...].hasPrefix(s) {
          if plainStart < i { out.append((rest[plainStart..<i], nil)) }
          let e = rest.index(i, offsetBy: s.count)
          out.append((rest[i..<e], id))
          i = e
          plainStart = e
          matched = true
          break
        }
      }
      if !matched { i = rest.index(after: i) }
    }
    if plainStart < rest.endIndex { out.append((rest[plainStart...], nil)) }
    rest = ""
    return out
  }

  func encodeOrdinary(_ piece: Substring, into out: inout [Int32]) {
    var bytes = Array(piece.utf8)
    // Scalars with their UTF-8 byte offsets (offs has one extra entry: the end).
    var scalars: [Unicode.Scalar] = []
    var offs: [Int] = []
    scalars.reserveCapacity(bytes.count)
    offs.reserveCapacity(bytes.count + 1)
    var i = 0
    for u in piece.unicodeScalars {
      scalars.append(u)
      offs.append(i)
      i += UTF8.width(u)
    }
    offs.append(i)
    let ranges = style == .clip ? clipSplit(scalars) : pre == .gpt2 ? gpt2Split(scalars) : pre.split(scalars)
    bytes.withUnsafeMutableBufferPointer { b in
      for r in ranges {
        let lo = offs[r.lowerBound], hi = offs[r.upperBound]
        let word = UnsafeBufferPointer(rebasing: b[lo..<hi])
        if style == .clip && r.count > 10 && b[lo] == 0x3C, let id = special[String(decoding: word, as: UTF8.self)] {
          out.append(id)
          continue
        }
        out.append(contentsOf: encodeWord(word))
      }
    }
  }

  /// Encodes one pre-token's bytes, through the cache for words of up to 64 bytes.
  func encodeWord(_ bytes: UnsafeBufferPointer<UInt8>) -> [Int32] {
    if pre.ignoresMerges {
      // Llama 3: a word that is itself a token is taken whole, before any merge.
      var sym = ""
      for b in bytes { sym.append(ByteLevel.encoder[Int(b)]) }
      if let id = model.vocab[sym] { return [id] }
    }
    if bytes.count > 64 { return model.encodeWord(Array(bytes)[...]) }
    let key = String(decoding: bytes, as: UTF8.self)
    lock.lock()
    if let c = cache[key] {
      lock.unlock()
      return c
    }
    lock.unlock()
    let ids = model.encodeWord(Array(bytes)[...])
    lock.lock()
    if cache.count > 200_000 { cache.removeAll(keepingCapacity: true) }
    cache[key] = ids
    lock.unlock()
    return ids
  }

  // MARK: Decoding

  /// Token strings for ids (byte symbols as stored in the vocabulary). Unknown ids show as `<unk:N>`.
  public func tokenStrings(_ ids: [Int32]) -> [String] {
    ids.map { $0 >= 0 && Int($0) < model.tokens.count ? model.tokens[Int($0)] : "<unk:\($0)>" }
  }

  /// The bytes a byte-level token stands for; control tokens give none, other special tokens
  /// their text.
  public func bytes(of id: Int32) -> [UInt8] {
    guard id >= 0 && Int(id) < model.tokens.count else { return [] }
    if controlIDs.contains(id) { return [] }
    let t = model.tokens[Int(id)]
    if special[t] == id { return Array(t.utf8) }
    return t.compactMap { ByteLevel.decoder[$0] }
  }

  /// Text for ids. Byte-level: the exact inverse of ``encode(_:)`` for valid UTF-8. CLIP: words
  /// joined by single spaces (case and spacing are not recoverable).
  /// - Parameter skipSpecial: leave out special tokens.
  public func decode(_ ids: [Int32], skipSpecial: Bool = false) -> String {
    let specialIDs = Set(special.values)
    var bytes: [UInt8] = []
    for id in ids {
      guard id >= 0 && Int(id) < model.tokens.count else { continue }
      let t = model.tokens[Int(id)]
      if specialIDs.contains(id) {
        if !skipSpecial { bytes.append(contentsOf: Array(t.utf8)) }
        continue
      }
      var tok = Substring(t)
      var wordEnd = false
      if let e = model.endOfWord, tok.hasSuffix(e) {
        tok = tok.dropLast(e.count)
        wordEnd = true
      }
      for c in tok { if let b = ByteLevel.decoder[c] { bytes.append(b) } }
      if wordEnd { bytes.append(0x20) }
    }
    let s = String(decoding: bytes, as: UTF8.self)
    if style == .clip { return s.trimmingCharacters(in: .whitespaces) }
    return s
  }
}

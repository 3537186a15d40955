import Foundation

/// The pre-tokenisers of GGUF byte-level (`gpt2`) vocabularies, by `tokenizer.ggml.pre`, with
/// the split rules llama.cpp defines for each (its hand-written scanners, not a regex engine).
public enum PreTokenizer: String, Sendable, CaseIterable {
  /// GPT-2's pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
  case gpt2
  /// SmolLM (StarCoder family): every `\p{N}` a piece of its own, then GPT-2's pattern on the rest.
  case smollm
  /// Qwen2: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
  case qwen2
  /// Llama 3 (`llama-bpe`): as Qwen2 but digits in runs of up to three, `\p{N}{1,3}`.
  case llama3 = "llama-bpe"

  /// The GGUF `tokenizer.ggml.pre` names llama.cpp maps to each.
  public init?(ggufName: String) {
    switch ggufName {
    case "gpt2", "default", "gpt-2", "mpt", "olmo": self = .gpt2
    case "smollm", "starcoder", "refact", "command-r", "codeshell": self = .smollm
    case "qwen2", "stablelm2", "deepseek-r1-qwen": self = .qwen2
    case "llama3", "llama-v3", "llama-bpe", "falcon3": self = .llama3
    default: return nil
    }
  }

  /// Whether a word that is itself in the vocabulary skips the merges (llama.cpp's
  /// `ignore_merges`, set for Llama 3).
  var ignoresMerges: Bool { self == .llama3 }

  /// Splits scalars into pieces (ranges cover the input).
  public func split(_ u: [Unicode.Scalar]) -> [Range<Int>] {
    switch self {
    case .gpt2: return llamaGPT2Split(u, 0..<u.count)
    case .smollm:
      // `\p{N}` first: each number scalar alone; GPT-2's pattern on each stretch between them.
      var out: [Range<Int>] = []
      var start = 0
      for i in 0..<u.count where scalarFlags(u[i]) == .number {
        if start < i { out += llamaGPT2Split(u, start..<i) }
        out.append(i..<(i + 1))
        start = i + 1
      }
      if start < u.count { out += llamaGPT2Split(u, start..<u.count) }
      return out
    case .qwen2: return llama3Split(u, maxDigits: 1)
    case .llama3: return llama3Split(u, maxDigits: 3)
    }
  }
}

/// A scalar's class as llama.cpp's Unicode tables flag it; `.undefined` for unassigned code
/// points, which match no class of the patterns.
enum ScalarFlags { case letter, number, space, other, undefined }

@inline(__always)
func scalarFlags(_ s: Unicode.Scalar) -> ScalarFlags {
  switch charClass(s) {
  case .letter: return .letter
  case .number: return .number
  case .space: return .space
  case .other:
    return s.value >= 128 && s.properties.generalCategory == .unassigned ? .undefined : .other
  }
}

/// GPT-2's pattern over `u[r]`, treating the end of `r` as the end of the text.
func llamaGPT2Split(_ u: [Unicode.Scalar], _ r: Range<Int>) -> [Range<Int>] {
  var out: [Range<Int>] = []
  let end = r.upperBound
  func flags(_ i: Int) -> ScalarFlags? { i < end ? scalarFlags(u[i]) : nil }
  func isPunct(_ f: ScalarFlags?) -> Bool { f == .other }
  var pos = r.lowerBound
  while pos < end {
    let start = pos
    let c = u[pos]
    if c == "'" && pos + 1 < end {
      let n = u[pos + 1]
      if n == "s" || n == "t" || n == "m" || n == "d" {
        out.append(pos..<(pos + 2))
        pos += 2
        continue
      }
      if pos + 2 < end {
        let m = u[pos + 2]
        if (n == "r" && m == "e") || (n == "v" && m == "e") || (n == "l" && m == "l") {
          out.append(pos..<(pos + 3))
          pos += 3
          continue
        }
      }
    }
    let f2 = c == " " ? flags(pos + 1) : flags(pos)
    if f2 == .letter || f2 == .number || isPunct(f2) {
      let k = f2!
      if c == " " { pos += 1 }
      while pos < end && flags(pos) == k { pos += 1 }
      out.append(start..<pos)
      continue
    }
    var ws = 0
    while flags(pos + ws) == .space { ws += 1 }
    if ws > 1 && pos + ws < end {
      pos += ws - 1
      out.append(start..<pos)
      continue
    }
    if ws > 0 {
      pos += ws
      out.append(start..<pos)
      continue
    }
    pos += 1
    out.append(start..<pos)
  }
  return out
}

/// The Llama 3 / Qwen2 pattern over the whole input, digits in runs of at most `maxDigits`.
func llama3Split(_ u: [Unicode.Scalar], maxDigits: Int) -> [Range<Int>] {
  var out: [Range<Int>] = []
  let end = u.count
  func flags(_ i: Int) -> ScalarFlags? { i < end ? scalarFlags(u[i]) : nil }
  func lower(_ s: Unicode.Scalar) -> Unicode.Scalar {
    s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s
  }
  var pos = 0
  var prev = 0
  func add(_ e: Int) {
    if e > prev { out.append(prev..<e) }
    prev = e
  }
  while pos < end {
    let c = u[pos]
    let f = flags(pos)!
    if c == "'" && pos + 1 < end {
      let n = lower(u[pos + 1])
      if n == "s" || n == "t" || n == "m" || n == "d" {
        pos += 2
        add(pos)
        continue
      }
      if pos + 2 < end {
        let m = lower(u[pos + 2])
        if (n == "r" && m == "e") || (n == "v" && m == "e") || (n == "l" && m == "l") {
          pos += 3
          add(pos)
          continue
        }
      }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if !(c == "\r" || c == "\n" || f == .number) {
      if f == .letter || flags(pos + 1) == .letter {
        pos += 1
        while flags(pos) == .letter { pos += 1 }
        add(pos)
        continue
      }
    }
    // \p{N}{1,maxDigits}
    if f == .number {
      var ini = pos
      while flags(pos) == .number {
        pos += 1
        if pos - ini >= maxDigits {
          add(pos)
          ini = pos
        }
      }
      add(pos)
      continue
    }
    // <space>?[^\s\p{L}\p{N}]+[\r\n]*
    let f2 = c == " " ? flags(pos + 1) : f
    if f2 == .other && f != .undefined {
      if c == " " { pos += 1 }
      while flags(pos) == .other { pos += 1 }
      while pos < end && (u[pos] == "\r" || u[pos] == "\n") { pos += 1 }
      add(pos)
      continue
    }
    var ws = 0
    var lastNL = 0
    while flags(pos + ws) == .space {
      let c2 = u[pos + ws]
      if c2 == "\r" || c2 == "\n" { lastNL = pos + ws + 1 }
      ws += 1
    }
    if lastNL > 0 {
      pos = lastNL
      add(pos)
      continue
    }
    if ws > 1 && pos + ws < end {
      pos += ws - 1
      add(pos)
      continue
    }
    if ws > 0 {
      pos += ws
      add(pos)
      continue
    }
    pos += 1
    add(pos)
  }
  return out
}

/// The kinds of GGUF vocabulary entries (`tokenizer.ggml.token_type`).
public enum GGUFTokenType: Int, Sendable {
  case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

extension Tokenizer {
  /// Builds the tokenizer of a GGUF `gpt2` (byte-level BPE) vocabulary as llama.cpp runs it:
  /// the pre-tokeniser named by `tokenizer.ggml.pre`, its merges, and control, user-defined and
  /// unknown tokens as special tokens (control ones matched only when asked to).
  /// - Parameters:
  ///   - tokens: `tokenizer.ggml.tokens` (byte-level symbol strings).
  ///   - types: `tokenizer.ggml.token_type`, one per token (normal when absent).
  ///   - merges: `tokenizer.ggml.merges`, "left right" per line, in rank order.
  /// - Throws: ``TokenizerError`` naming `source` when the pieces disagree.
  public static func llamaCpp(
    tokens: [String], types: [Int]?, merges: [String], pre: PreTokenizer, bos: Int32?, eos: Int32?, addBOS: Bool, source: String
  ) throws -> Tokenizer {
    guard !tokens.isEmpty, tokens.count < Int(Int32.max) else {
      throw TokenizerError.file(path: source, message: "vocabulary has \(tokens.count) tokens")
    }
    if let t = types, t.count != tokens.count {
      throw TokenizerError.file(path: source, message: "token_type has \(t.count) entries for \(tokens.count) tokens")
    }
    var vocab: [String: Int32] = [:]
    vocab.reserveCapacity(tokens.count)
    for (i, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = Int32(i) }
    var pairs: [(String, String)] = []
    pairs.reserveCapacity(merges.count)
    for (i, m) in merges.enumerated() {
      guard let sp = m.firstIndex(of: " "), sp != m.startIndex else {
        throw TokenizerError.line(path: source, line: i + 1, message: "merge '\(m.prefix(40))' is not 'left right'")
      }
      pairs.append((String(m[..<sp]), String(m[m.index(after: sp)...])))
    }
    let model = try BPEModel(vocab: vocab, merges: pairs, endOfWord: nil, source: source, requireAllBytes: false)
    var special: [String: Int32] = [:]
    var control: Set<Int32> = []
    if let ts = types {
      for (i, t) in ts.enumerated() {
        guard let k = GGUFTokenType(rawValue: t), k == .control || k == .userDefined || k == .unknown else { continue }
        if tokens[i].isEmpty { continue }
        special[tokens[i]] = Int32(i)
        if k != .userDefined { control.insert(Int32(i)) }
      }
    }
    for id in [bos, eos].compactMap({ $0 }) where id < 0 || Int(id) >= tokens.count {
      throw TokenizerError.file(path: source, message: "special token id \(id) is outside the vocabulary (\(tokens.count))")
    }
    let tok = Tokenizer(style: .byteLevel, model: model, special: special, bos: bos, eos: eos, source: source)
    tok.pre = pre
    tok.controlIDs = control
    tok.addsBOS = addBOS
    return tok
  }

  /// llama.cpp's tokenisation: special tokens split out first (longest first; control and
  /// unknown tokens only when `parseSpecial`), then pre-tokenisation and BPE on the rest, with
  /// the BOS token in front when the vocabulary asks for it and `addSpecial` is set.
  public func encodeLlama(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = false) -> [Int32] {
    var out: [Int32] = []
    if addSpecial && addsBOS, let b = bos { out.append(b) }
    // Fragments: (text, nil) or ("", id).
    var frags: [(Substring, Int32?)] = [(text[...], nil)]
    for (s, id) in specialsByLength where parseSpecial || !controlIDs.contains(id) {
      var next: [(Substring, Int32?)] = []
      for f in frags {
        guard f.1 == nil, f.0.contains(s) else {
          next.append(f)
          continue
        }
        var rest = f.0
        while let r = rest.range(of: s) {
          if r.lowerBound > rest.startIndex { next.append((rest[rest.startIndex..<r.lowerBound], nil)) }
          next.append(("", id))
          rest = rest[r.upperBound...]
        }
        if !rest.isEmpty { next.append((rest, nil)) }
      }
      frags = next
    }
    for (piece, id) in frags {
      if let id = id { out.append(id) } else { encodeOrdinary(piece, into: &out) }
    }
    return out
  }
}

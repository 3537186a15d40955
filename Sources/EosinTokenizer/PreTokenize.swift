import Foundation

/// Unicode classes used by the CLIP and GPT-2 pre-tokenisation patterns.
@usableFromInline
enum CharClass {
  case letter, number, space, other
}

@inline(__always) @usableFromInline
func charClass(_ s: Unicode.Scalar) -> CharClass {
  let v = s.value
  if v < 128 {
    if (v >= 65 && v <= 90) || (v >= 97 && v <= 122) { return .letter }
    if v >= 48 && v <= 57 { return .number }
    if v == 32 || (v >= 9 && v <= 13) { return .space }
    return .other
  }
  if s.properties.isWhitespace { return .space }
  switch s.properties.generalCategory {
  case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
  case .decimalNumber, .letterNumber, .otherNumber: return .number
  default: return .other
  }
}

/// Splits text with GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// written as a scanner over Unicode scalars (linear time; no regex engine).
/// - Returns: scalar index ranges of the pieces, which cover the whole input.
public func gpt2Split(_ u: [Unicode.Scalar]) -> [Range<Int>] {
  let n = u.count
  var out: [Range<Int>] = []
  out.reserveCapacity(n / 4 + 1)
  var cls = [CharClass](repeating: .other, count: n)
  for i in 0..<n { cls[i] = charClass(u[i]) }
  var i = 0
  while i < n {
    if let c = contraction(u, i, caseInsensitive: false) {
      out.append(i..<(i + c))
      i += c
      continue
    }
    let start = i
    var j = i
    if u[i] == " " && i + 1 < n && cls[i + 1] != .space { j = i + 1 }
    let k = cls[j]
    if k != .space {
      var e = j + 1
      while e < n && cls[e] == k { e += 1 }
      out.append(start..<e)
      i = e
      continue
    }
    // Whitespace run [i, m).
    var m = i + 1
    while m < n && cls[m] == .space { m += 1 }
    if m == n || m - i == 1 {
      out.append(i..<m)
      i = m
    } else {
      out.append(i..<(m - 1))
      i = m - 1
    }
  }
  return out
}

/// Length of a contraction ('s 't 're 've 'm 'll 'd) at `i`, or nil.
@inline(__always)
func contraction(_ u: [Unicode.Scalar], _ i: Int, caseInsensitive: Bool) -> Int? {
  guard u[i] == "'", i + 1 < u.count else { return nil }
  func lower(_ s: Unicode.Scalar) -> Unicode.Scalar {
    caseInsensitive && s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s
  }
  let a = lower(u[i + 1])
  if a == "s" || a == "t" || a == "m" || a == "d" { return 2 }
  if i + 2 < u.count {
    let b = lower(u[i + 2])
    if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { return 3 }
  }
  return nil
}

/// Splits normalised (lower-cased) text with CLIP's pattern
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`;
/// whitespace between matches is dropped.
public func clipSplit(_ u: [Unicode.Scalar]) -> [Range<Int>] {
  let n = u.count
  var out: [Range<Int>] = []
  let sot = Array("<|startoftext|>".unicodeScalars), eot = Array("<|endoftext|>".unicodeScalars)
  func starts(_ p: [Unicode.Scalar], _ i: Int) -> Bool {
    guard i + p.count <= n else { return false }
    for k in 0..<p.count where u[i + k] != p[k] { return false }
    return true
  }
  var i = 0
  while i < n {
    if u[i] == "<" {
      if starts(sot, i) { out.append(i..<(i + sot.count)); i += sot.count; continue }
      if starts(eot, i) { out.append(i..<(i + eot.count)); i += eot.count; continue }
    }
    if let c = contraction(u, i, caseInsensitive: false) {
      out.append(i..<(i + c))
      i += c
      continue
    }
    let k = charClass(u[i])
    switch k {
    case .space: i += 1
    case .number:
      out.append(i..<(i + 1))
      i += 1
    case .letter, .other:
      var e = i + 1
      while e < n && charClass(u[e]) == k { e += 1 }
      out.append(i..<e)
      i = e
    }
  }
  return out
}

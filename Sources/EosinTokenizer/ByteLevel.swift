import CZlib
import Foundation

/// Errors from loading or training vocabularies. Each names the file and, where it applies, the
/// line.
public enum TokenizerError: LocalizedError, Equatable {
  case file(path: String, message: String)
  case line(path: String, line: Int, message: String)
  case invalid(String)

  public var errorDescription: String? {
    switch self {
    case .file(let p, let m): return "\(p): \(m)"
    case .line(let p, let l, let m): return "\(p):\(l): \(m)"
    case .invalid(let m): return m
    }
  }
}

/// GPT-2's reversible byte <-> printable-character map: printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100 onward, in byte order.
public enum ByteLevel {
  /// The bytes in the order CLIP and GPT-2 list them (printable ranges first).
  public static let orderedBytes: [UInt8] = {
    var bs: [Int] = Array(33...126) + Array(161...172) + Array(174...255)
    var rest: [Int] = []
    for b in 0..<256 where !bs.contains(b) { rest.append(b) }
    bs += rest
    return bs.map { UInt8($0) }
  }()

  /// byte -> character.
  public static let encoder: [Character] = {
    var m = [Character](repeating: " ", count: 256)
    var bs: Set<Int> = Set(Array(33...126) + Array(161...172) + Array(174...255))
    var n = 0
    for b in 0..<256 {
      if bs.contains(b) {
        m[b] = Character(Unicode.Scalar(UInt32(b))!)
      } else {
        m[b] = Character(Unicode.Scalar(UInt32(256 + n))!)
        n += 1
        bs.insert(b)
      }
    }
    return m
  }()

  /// character -> byte.
  public static let decoder: [Character: UInt8] = {
    var d: [Character: UInt8] = [:]
    for (b, c) in encoder.enumerated() { d[c] = UInt8(b) }
    return d
  }()
}

/// Reads a text file, gunzipping it when it starts with the gzip magic bytes.
/// - Throws: ``TokenizerError/file`` when missing, unreadable, corrupt, or not UTF-8.
func readText(_ path: String) throws -> String {
  guard FileManager.default.fileExists(atPath: path) else { throw TokenizerError.file(path: path, message: "no such file") }
  guard let data = FileManager.default.contents(atPath: path) else {
    throw TokenizerError.file(path: path, message: "cannot read")
  }
  var bytes = [UInt8](data)
  if bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B { bytes = try gunzip(bytes, path: path) }
  guard let s = String(validating: bytes, as: UTF8.self) else {
    throw TokenizerError.file(path: path, message: "not valid UTF-8 text")
  }
  return s
}

/// The largest text a tokenizer file may inflate to (256 MiB; CLIP's merges file is 1.6 MB).
let maxInflatedBytes = 256 << 20

/// Inflates a gzip stream with zlib, refusing output beyond ``maxInflatedBytes``.
func gunzip(_ input: [UInt8], path: String, limit: Int = maxInflatedBytes) throws -> [UInt8] {
  var strm = z_stream()
  guard inflateInit2_(&strm, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
    throw TokenizerError.file(path: path, message: "cannot start gzip decoder")
  }
  defer { inflateEnd(&strm) }
  var out: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 1 << 16)
  var status: Int32 = Z_OK
  try input.withUnsafeBufferPointer { inp in
    strm.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
    strm.avail_in = uInt(inp.count)
    repeat {
      status = chunk.withUnsafeMutableBufferPointer { c in
        strm.next_out = c.baseAddress
        strm.avail_out = uInt(c.count)
        return inflate(&strm, Z_NO_FLUSH)
      }
      guard status == Z_OK || status == Z_STREAM_END else { throw TokenizerError.file(path: path, message: "corrupt gzip data") }
      out.append(contentsOf: chunk[0..<(chunk.count - Int(strm.avail_out))])
      guard out.count <= limit else {
        throw TokenizerError.file(path: path, message: "inflates to more than \(limit >> 20) MiB; not a tokenizer file")
      }
    } while status != Z_STREAM_END && strm.avail_in > 0 || (status == Z_OK && strm.avail_out == 0)
  }
  guard status == Z_STREAM_END else { throw TokenizerError.file(path: path, message: "truncated gzip data") }
  return out
}

import EosinTensor
import Foundation

/// A GGUF metadata value. Integers keep their signedness; arrays may nest.
public enum GGUFValue: Sendable, Equatable {
  case uint(UInt64)
  case int(Int64)
  case float(Double)
  case bool(Bool)
  case string(String)
  case array([GGUFValue])

  /// The value as an Int, when it is an integer that fits.
  public var int: Int? {
    switch self {
    case .uint(let v): return v <= UInt64(Int.max) ? Int(v) : nil
    case .int(let v): return Int(exactly: v)
    default: return nil
    }
  }
  /// The value as a Double, when it is a number.
  public var double: Double? {
    switch self {
    case .float(let v): return v
    case .uint(let v): return Double(v)
    case .int(let v): return Double(v)
    default: return nil
    }
  }
  public var string: String? { if case .string(let s) = self { return s } else { return nil } }
  public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
  public var array: [GGUFValue]? { if case .array(let a) = self { return a } else { return nil } }

  /// A short rendering for `lm info` (long arrays are summarised).
  public var summary: String {
    switch self {
    case .uint(let v): return "\(v)"
    case .int(let v): return "\(v)"
    case .float(let v): return "\(v)"
    case .bool(let v): return "\(v)"
    case .string(let s): return s.count > 80 ? "\"\(s.prefix(77))...\" (\(s.count) chars)" : "\"\(s)\""
    case .array(let a): return a.count > 8 ? "[\(a.count) items]" : "[" + a.map(\.summary).joined(separator: ", ") + "]"
    }
  }
}

/// One tensor's entry in a GGUF file.
public struct GGUFTensorInfo: Sendable {
  public var name: String
  public var type: GGMLType
  /// ggml's dimensions, innermost first: a PyTorch (OC, C) weight has `dims == [C, OC]`.
  public var dims: [Int]
  /// Byte offset from the start of the data section.
  public var offset: Int
  public var byteCount: Int
  public var elementCount: Int
}

/// A GGUF file (llama.cpp's model format), memory-mapped and validated strictly at open.
///
/// Validation: magic and version (2 or 3); every count, string length and array length is
/// checked against the bytes left in the file before anything is allocated; metadata arrays nest
/// at most 4 deep; tensor names are unique; every tensor has a known type, at most 4 positive
/// dimensions whose product does not overflow, a row length that is a whole number of blocks, an
/// offset aligned to `general.alignment` and data inside the file. Nothing is read outside the
/// file. Thread-safe for reading after init.
public final class GGUFFile: @unchecked Sendable {
  public let path: String
  public let version: UInt32
  /// Metadata in file order, and by key.
  public let metadataKeys: [String]
  public let metadata: [String: GGUFValue]
  /// Tensors in file order, and by name.
  public let tensorList: [GGUFTensorInfo]
  public let tensors: [String: GGUFTensorInfo]
  public let alignment: Int
  public let fileSize: Int
  private let base: UnsafeMutableRawPointer
  private let dataStart: Int
  /// True when `base` is a heap copy (``init(bytes:name:)``), false when it is a mapping.
  private let owned: Bool

  /// Opens and validates a file.
  /// - Throws: ``WeightsError`` naming the file and what is wrong.
  public convenience init(path: String) throws {
    let (m, size) = try mapReadOnly(path, minimum: 24) {
      WeightsError.gguf(file: path, message: "file is \($0) bytes, shorter than a GGUF header")
    }
    do { try self.init(path: path, base: m, size: size, owned: false) } catch {
      munmap(m, size)
      throw error
    }
  }

  /// Parses a GGUF image held in memory (copied), for fuzzing and tests; `name` stands for the
  /// file in messages.
  public convenience init(bytes: UnsafeRawBufferPointer, name: String) throws {
    let size = bytes.count
    guard size >= 24 else { throw WeightsError.gguf(file: name, message: "file is \(size) bytes, shorter than a GGUF header") }
    let m = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    m.copyMemory(from: bytes.baseAddress!, byteCount: size)
    do { try self.init(path: name, base: m, size: size, owned: true) } catch {
      m.deallocate()
      throw error
    }
  }

  /// Parses the image at `base`; on a throw the caller still owns `base`.
  private init(path: String, base m: UnsafeMutableRawPointer, size: Int, owned: Bool) throws {
    let h = try GGUFFile.parse(UnsafeRawPointer(m), size, path)
    self.path = path
    version = h.version
    metadataKeys = h.keys
    metadata = h.metadata
    alignment = h.alignment
    dataStart = h.dataStart
    tensorList = h.tensors
    tensors = h.byName
    base = m
    fileSize = size
    self.owned = owned
  }

  /// What the header and tensor infos of a file hold.
  private struct Header {
    var version: UInt32
    var keys: [String]
    var metadata: [String: GGUFValue]
    var alignment: Int
    var dataStart: Int
    var tensors: [GGUFTensorInfo]
    var byName: [String: GGUFTensorInfo]
  }

  private static func parse(_ m: UnsafeRawPointer, _ size: Int, _ path: String) throws -> Header {
    var r = GGUFReader(base: m, size: size, path: path)
    let magic = try r.u32()
    guard magic == 0x4655_4747 else { throw WeightsError.gguf(file: path, message: "wrong magic (not a GGUF file)") }
    let version = try r.u32()
    guard version == 2 || version == 3 else {
      throw WeightsError.gguf(
        file: path,
        message:
          "GGUF version \(version) is not supported (Eosin reads versions 2 and 3; convert the model again with a current llama.cpp)"
      )
    }
    let nTensors = try r.u64()
    let nKV = try r.u64()
    // Each tensor info takes at least 8+1+4+8+4+8 bytes, each key-value pair at least 8+1+4+1.
    guard nTensors <= UInt64(size / 33), nKV <= UInt64(size / 14) else {
      throw WeightsError.gguf(
        file: path, message: "header claims \(nTensors) tensors and \(nKV) metadata entries, more than the file can hold")
    }
    var keys: [String] = []
    var meta: [String: GGUFValue] = [:]
    for _ in 0..<Int(nKV) {
      let k = try r.string()
      let t = try r.u32()
      let v = try r.value(type: t, depth: 0, key: k)
      if meta[k] != nil { throw WeightsError.gguf(file: path, message: "metadata key '\(k)' appears twice") }
      keys.append(k)
      meta[k] = v
    }
    var align = 32
    if let a = meta["general.alignment"] {
      guard let v = a.int, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
        throw WeightsError.gguf(file: path, message: "general.alignment \(a.summary) is not a power of two")
      }
      align = v
    }
    var infos: [GGUFTensorInfo] = []
    var byName: [String: GGUFTensorInfo] = [:]
    infos.reserveCapacity(Int(nTensors))
    for _ in 0..<Int(nTensors) {
      let name = try r.string()
      let nd = try r.u32()
      guard nd >= 1 && nd <= 4 else {
        throw WeightsError.gguf(file: path, message: "tensor '\(name)' has \(nd) dimensions (1 to 4 allowed)")
      }
      var dims: [Int] = []
      var count = 1
      for _ in 0..<Int(nd) {
        let d = try r.u64()
        guard d >= 1, d < 1 << 40 else { throw WeightsError.gguf(file: path, message: "tensor '\(name)' has dimension \(d)") }
        dims.append(Int(d))
        let (p, o) = count.multipliedReportingOverflow(by: Int(d))
        guard !o, p < 1 << 48 else { throw WeightsError.gguf(file: path, message: "tensor '\(name)' shape \(dims) overflows") }
        count = p
      }
      let tid = try r.u32()
      guard let type = GGMLType(rawValue: tid) else {
        throw WeightsError.gguf(
          file: path,
          message:
            "tensor '\(name)' has type \(GGMLType.unsupportedName(tid)), which Eosin does not support (supported: \(GGMLType.allCases.map(\.name).joined(separator: ", ")))"
        )
      }
      let off = try r.u64()
      guard dims[0] % type.blockSize == 0 else {
        throw WeightsError.gguf(
          file: path,
          message: "tensor '\(name)' row length \(dims[0]) is not a multiple of the \(type.name) block size \(type.blockSize)")
      }
      let bytes = count / type.blockSize * type.blockBytes
      guard off < UInt64(size), Int(off) % align == 0 else {
        throw WeightsError.gguf(file: path, message: "tensor '\(name)' offset \(off) is out of range or not aligned to \(align)")
      }
      guard byName[name] == nil else { throw WeightsError.gguf(file: path, message: "tensor '\(name)' appears twice") }
      let info = GGUFTensorInfo(name: name, type: type, dims: dims, offset: Int(off), byteCount: bytes, elementCount: count)
      infos.append(info)
      byName[name] = info
    }
    let ds = (r.pos + align - 1) / align * align
    guard ds <= size else { throw WeightsError.gguf(file: path, message: "data section starts past the end of the file") }
    for t in infos {
      guard t.offset <= size - ds, t.byteCount <= size - ds - t.offset else {
        throw WeightsError.gguf(
          file: path,
          message: "tensor '\(t.name)' data (\(t.byteCount) bytes at \(t.offset)) runs past the end of the file (truncated?)")
      }
    }
    return Header(version: version, keys: keys, metadata: meta, alignment: align, dataStart: ds, tensors: infos, byName: byName)
  }

  deinit {
    if owned { base.deallocate() } else { munmap(base, fileSize) }
  }

  /// Raw bytes of a tensor, zero-copy, valid while this object lives.
  public func bytes(_ name: String) throws -> UnsafeRawBufferPointer {
    guard let t = tensors[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
    return UnsafeRawBufferPointer(start: base + dataStart + t.offset, count: t.byteCount)
  }

  /// A metadata integer, or nil when absent; throws when present with another type.
  public func int(_ key: String) throws -> Int? {
    guard let v = metadata[key] else { return nil }
    guard let i = v.int else { throw WeightsError.gguf(file: path, message: "metadata '\(key)' is \(v.summary), not an integer") }
    return i
  }

  /// A metadata number, or nil when absent.
  public func double(_ key: String) throws -> Double? {
    guard let v = metadata[key] else { return nil }
    guard let d = v.double else {
      throw WeightsError.gguf(file: path, message: "metadata '\(key)' is \(v.summary), not a number")
    }
    return d
  }

  /// A metadata string, or nil when absent.
  public func string(_ key: String) throws -> String? {
    guard let v = metadata[key] else { return nil }
    guard let s = v.string else {
      throw WeightsError.gguf(file: path, message: "metadata '\(key)' is \(v.summary), not a string")
    }
    return s
  }

  /// A metadata array of strings, or nil when absent.
  public func strings(_ key: String) throws -> [String]? { try array(key, "string") { $0.string } }

  /// A metadata array of integers, or nil when absent.
  public func ints(_ key: String) throws -> [Int]? { try array(key, "integer") { $0.int } }

  private func array<T>(_ key: String, _ what: String, _ get: (GGUFValue) -> T?) throws -> [T]? {
    guard let v = metadata[key] else { return nil }
    guard let a = v.array else { throw WeightsError.gguf(file: path, message: "metadata '\(key)' is not an array") }
    var out: [T] = []
    out.reserveCapacity(a.count)
    for e in a {
      guard let x = get(e) else { throw WeightsError.gguf(file: path, message: "metadata '\(key)' holds a non-\(what)") }
      out.append(x)
    }
    return out
  }

  /// A tensor converted to Float32 (any supported type, dequantised), shaped as ggml's dims
  /// reversed (PyTorch order).
  public func tensor(_ name: String) throws -> Tensor {
    guard let t = tensors[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
    let raw = try bytes(name)
    var out = [Float](repeating: 0, count: t.elementCount)
    out.withUnsafeMutableBufferPointer { o in
      ggmlDequantize(t.type, raw.baseAddress!, o.baseAddress!, t.elementCount)
    }
    return Tensor(shape: t.dims.reversed(), data: out)
  }
}

/// Bounds-checked little-endian reads over the mapped header.
private struct GGUFReader {
  let base: UnsafeRawPointer
  let size: Int
  let path: String
  var pos = 0

  mutating func need(_ n: Int, _ what: String) throws {
    guard n >= 0, n <= size - pos else {
      throw WeightsError.gguf(file: path, message: "\(what) at byte \(pos) runs past the end of the file (truncated?)")
    }
  }
  mutating func u8() throws -> UInt8 {
    try need(1, "value")
    defer { pos += 1 }
    return base.load(fromByteOffset: pos, as: UInt8.self)
  }
  mutating func u16() throws -> UInt16 {
    try need(2, "value")
    defer { pos += 2 }
    return UInt16(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: UInt16.self))
  }
  mutating func u32() throws -> UInt32 {
    try need(4, "value")
    defer { pos += 4 }
    return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: UInt32.self))
  }
  mutating func u64() throws -> UInt64 {
    try need(8, "value")
    defer { pos += 8 }
    return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: UInt64.self))
  }
  mutating func string() throws -> String {
    let n = try u64()
    guard n <= UInt64(size - pos) else {
      throw WeightsError.gguf(file: path, message: "string length \(n) at byte \(pos - 8) is larger than the file")
    }
    let s = String(decoding: UnsafeRawBufferPointer(start: base + pos, count: Int(n)), as: UTF8.self)
    pos += Int(n)
    return s
  }
  mutating func value(type: UInt32, depth: Int, key: String) throws -> GGUFValue {
    switch type {
    case 0: return .uint(UInt64(try u8()))
    case 1: return .int(Int64(Int8(bitPattern: try u8())))
    case 2: return .uint(UInt64(try u16()))
    case 3: return .int(Int64(Int16(bitPattern: try u16())))
    case 4: return .uint(UInt64(try u32()))
    case 5: return .int(Int64(Int32(bitPattern: try u32())))
    case 6: return .float(Double(Float(bitPattern: try u32())))
    case 7:
      let b = try u8()
      guard b <= 1 else { throw WeightsError.gguf(file: path, message: "metadata '\(key)': bool value \(b)") }
      return .bool(b == 1)
    case 8: return .string(try string())
    case 9:
      guard depth < 4 else { throw WeightsError.gguf(file: path, message: "metadata '\(key)': arrays nested too deep") }
      let et = try u32()
      let n = try u64()
      // The smallest element is one byte (strings take at least 8): check before allocating.
      let minSize: UInt64 =
        et == 8 || et == 9 ? 8 : [0: 1, 1: 1, 7: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 10: 8, 11: 8, 12: 8][et] ?? 1
      guard n <= UInt64(size - pos) / minSize else {
        throw WeightsError.gguf(file: path, message: "metadata '\(key)': array of \(n) items is larger than the file")
      }
      var a: [GGUFValue] = []
      a.reserveCapacity(Int(n))
      for _ in 0..<Int(n) { a.append(try value(type: et, depth: depth + 1, key: key)) }
      return .array(a)
    case 10: return .uint(try u64())
    case 11: return .int(Int64(bitPattern: try u64()))
    case 12: return .float(Double(bitPattern: try u64()))
    default: throw WeightsError.gguf(file: path, message: "metadata '\(key)' has unknown value type \(type)")
    }
  }
}

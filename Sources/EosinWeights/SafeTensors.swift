import EosinTensor
import Foundation

/// Errors from reading or writing checkpoints. Each names the file and, where there is one, the
/// tensor, with what was expected and what was found.
public enum WeightsError: LocalizedError, Equatable {
  case io(file: String, message: String)
  case format(file: String, message: String)
  /// A GGUF file that is malformed or uses something Eosin does not support.
  case gguf(file: String, message: String)
  case tensor(file: String, tensor: String, message: String)

  public var errorDescription: String? {
    switch self {
    case .io(let f, let m): return "\(f): \(m)"
    case .format(let f, let m): return "\(f): not a valid safetensors file: \(m)"
    case .gguf(let f, let m): return "\(f): \(m)"
    case .tensor(let f, let t, let m): return "\(f): tensor '\(t)': \(m)"
    }
  }
}

/// Maps a whole file read-only. Errors name the file: missing, a symlink loop, a folder,
/// unreadable, or shorter than `minimum` bytes (`short` makes that error from the size).
func mapReadOnly(_ path: String, minimum: Int, short: (Int) -> WeightsError) throws -> (UnsafeMutableRawPointer, Int) {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else {
    let e = errno
    throw WeightsError.io(
      file: path,
      message: e == ENOENT
        ? "no such file" : e == ELOOP ? "too many levels of symbolic links" : "cannot open (\(String(cString: strerror(e))))")
  }
  defer { close(fd) }
  var st = stat()
  fstat(fd, &st)
  if (st.st_mode & S_IFMT) == S_IFDIR { throw WeightsError.io(file: path, message: "is a directory") }
  let size = Int(st.st_size)
  guard size >= minimum else { throw short(size) }
  guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
    throw WeightsError.io(file: path, message: "cannot map file")
  }
  return (m, size)
}

/// Element types a safetensors file may hold.
public enum DType: String, Sendable {
  case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64", i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool =
    "BOOL"

  public var size: Int {
    switch self {
    case .f64, .i64: return 8
    case .f32, .i32: return 4
    case .f16, .bf16, .i16: return 2
    case .i8, .u8, .bool: return 1
    }
  }
}

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable {
  public var name: String
  public var dtype: DType
  public var shape: [Int]
  /// Byte range within the data section.
  public var begin: Int
  public var end: Int
}

/// A safetensors file, memory-mapped and validated strictly at open.
///
/// Validation: header length within the file; the header is a JSON object; every tensor has a
/// known dtype, a non-negative shape, and data offsets inside the data section whose length is
/// exactly `numel * dtype size`; no two tensors overlap. Nothing is read outside the file.
/// Thread-safe for reading after init.
public final class SafeTensorsFile: @unchecked Sendable {
  public let path: String
  public let tensors: [String: TensorInfo]
  /// The `__metadata__` string map, if any.
  public let metadata: [String: String]
  private let base: UnsafeMutableRawPointer
  private let length: Int
  /// Where the data section starts in the file (8 + the header length).
  public let dataStart: Int

  /// Opens and validates a file.
  /// - Throws: ``WeightsError`` naming the file and, for a bad entry, the tensor.
  public init(path: String) throws {
    self.path = path
    let (m, size) = try mapReadOnly(path, minimum: 8) {
      WeightsError.format(file: path, message: "file is \($0) bytes, shorter than the 8-byte header length")
    }
    base = m
    length = size
    do {
      let n = Int(m.loadUnaligned(as: UInt64.self).littleEndian & 0x7FFF_FFFF_FFFF_FFFF)
      guard n <= size - 8 else {
        throw WeightsError.format(file: path, message: "header length \(n) is beyond the file size \(size)")
      }
      dataStart = 8 + n
      let header = Data(bytes: m + 8, count: n)
      let obj: Any
      do { obj = try JSONSerialization.jsonObject(with: header) } catch {
        throw WeightsError.format(file: path, message: "header is not valid JSON")
      }
      guard let dict = obj as? [String: Any] else {
        throw WeightsError.format(file: path, message: "header is not a JSON object")
      }
      var ts: [String: TensorInfo] = [:]
      var meta: [String: String] = [:]
      let dataLen = size - dataStart
      for (name, v) in dict {
        if name == "__metadata__" {
          meta = (v as? [String: String]) ?? [:]
          continue
        }
        guard let e = v as? [String: Any] else {
          throw WeightsError.tensor(file: path, tensor: name, message: "entry is not an object")
        }
        guard let ds = e["dtype"] as? String, let dt = DType(rawValue: ds) else {
          throw WeightsError.tensor(
            file: path, tensor: name, message: "unknown dtype \(e["dtype"].map { "\($0)" } ?? "(missing)")")
        }
        guard let shp = e["shape"] as? [Int], shp.allSatisfy({ $0 >= 0 }) else {
          throw WeightsError.tensor(file: path, tensor: name, message: "shape is missing or negative")
        }
        guard let off = e["data_offsets"] as? [Int], off.count == 2 else {
          throw WeightsError.tensor(file: path, tensor: name, message: "data_offsets must be [begin, end]")
        }
        guard off[0] >= 0, off[0] <= off[1], off[1] <= dataLen else {
          throw WeightsError.tensor(
            file: path, tensor: name, message: "data offsets \(off) are outside the data section (\(dataLen) bytes)")
        }
        var numel = 1
        for d in shp {
          let (r, o) = numel.multipliedReportingOverflow(by: d)
          if o { throw WeightsError.tensor(file: path, tensor: name, message: "shape \(shp) overflows") }
          numel = r
        }
        let (bytes, o) = numel.multipliedReportingOverflow(by: dt.size)
        guard !o else { throw WeightsError.tensor(file: path, tensor: name, message: "shape \(shp) overflows") }
        guard off[1] - off[0] == bytes else {
          throw WeightsError.tensor(
            file: path, tensor: name,
            message: "byte size \(off[1] - off[0]) does not match shape \(shp) of \(dt.rawValue) (\(numel * dt.size) bytes)")
        }
        ts[name] = TensorInfo(name: name, dtype: dt, shape: shp, begin: off[0], end: off[1])
      }
      let sorted = ts.values.filter { $0.end > $0.begin }.sorted { $0.begin < $1.begin }
      for i in 1..<max(sorted.count, 1) where sorted[i].begin < sorted[i - 1].end {
        throw WeightsError.tensor(file: path, tensor: sorted[i].name, message: "data overlaps tensor '\(sorted[i - 1].name)'")
      }
      tensors = ts
      metadata = meta
    } catch {
      munmap(m, size)
      throw error
    }
  }

  deinit { munmap(base, length) }

  /// Raw bytes of a tensor, zero-copy, valid while this object lives.
  public func bytes(_ name: String) throws -> UnsafeRawBufferPointer {
    guard let t = tensors[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
    return UnsafeRawBufferPointer(start: base + dataStart + t.begin, count: t.end - t.begin)
  }

  /// A tensor converted to Float32 (F32 copied; F16, BF16 and F64 converted; integer types cast).
  /// - Parameter shape: when given, the tensor's shape must equal it.
  public func tensor(_ name: String, shape: [Int]? = nil) throws -> Tensor {
    guard let t = tensors[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
    if let s = shape, s != t.shape {
      throw WeightsError.tensor(file: path, tensor: name, message: "expected shape \(s), found \(t.shape)")
    }
    let raw = try bytes(name)
    let n = t.shape.reduce(1, *)
    var out = [Float](repeating: 0, count: n)
    out.withUnsafeMutableBufferPointer { o in
      switch t.dtype {
      case .f32: for i in 0..<n { o[i] = raw.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
      case .f64: for i in 0..<n { o[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
      case .f16: for i in 0..<n { o[i] = halfToFloat(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
      case .bf16:
        for i in 0..<n { o[i] = Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
      case .i64: for i in 0..<n { o[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
      case .i32: for i in 0..<n { o[i] = Float(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
      case .i16: for i in 0..<n { o[i] = Float(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
      case .i8: for i in 0..<n { o[i] = Float(raw.load(fromByteOffset: i, as: Int8.self)) }
      case .u8, .bool: for i in 0..<n { o[i] = Float(raw.load(fromByteOffset: i, as: UInt8.self)) }
      }
    }
    return Tensor(shape: t.shape, data: out)
  }
}

/// IEEE half to single, including subnormals, infinities and NaN.
@inline(__always)
public func halfToFloat(_ h: UInt16) -> Float {
  let s = UInt32(h >> 15) << 31
  let e = Int((h >> 10) & 0x1F)
  let m = UInt32(h & 0x3FF)
  if e == 0 {
    if m == 0 { return Float(bitPattern: s) }
    let v = Float(m) * Float(sign: .plus, exponent: -24, significand: 1)
    return s != 0 ? -v : v
  }
  if e == 31 { return Float(bitPattern: s | 0x7F80_0000 | (m << 13)) }
  return Float(bitPattern: s | UInt32(e - 15 + 127) << 23 | (m << 13))
}

/// Writes safetensors files (F32 only), with tensors in name order and an optional metadata map.
public enum SafeTensorsWriter {
  /// Writes atomically: the file appears complete or not at all.
  public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
    let names = tensors.keys.sorted()
    var header: [String: Any] = [:]
    if !metadata.isEmpty { header["__metadata__"] = metadata }
    var off = 0
    for n in names {
      let t = tensors[n]!
      header[n] = ["dtype": "F32", "shape": t.shape, "data_offsets": [off, off + 4 * t.count]]
      off += 4 * t.count
    }
    var h = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while (h.count + 8) % 8 != 0 { h.append(0x20) }  // pad with spaces to 8-byte alignment
    var out = Data(capacity: 8 + h.count + off)
    var n = UInt64(h.count).littleEndian
    withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
    out.append(h)
    for name in names { tensors[name]!.data.withUnsafeBytes { out.append(contentsOf: $0) } }
    do { try out.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
      throw WeightsError.io(file: path, message: "cannot write: \(error.localizedDescription)")
    }
  }
}

/// Writes a safetensors file of F32 tensors whose shapes are known up front, appending their
/// data in name order as it is produced (memory: what the caller holds). The caller renames the
/// file into place when ``close()`` returns.
public final class SafeTensorsStreamWriter {
  let path: String
  let handle: FileHandle
  let total: Int
  var written = 0

  /// Writes the header. `tensors` are (name, shape); data must then be appended in name order.
  public init(path: String, tensors: [(String, [Int])], metadata: [String: String] = [:]) throws {
    self.path = path
    var header: [String: Any] = [:]
    if !metadata.isEmpty { header["__metadata__"] = metadata }
    var off = 0
    for (n, shape) in tensors.sorted(by: { $0.0 < $1.0 }) {
      let bytes = 4 * shape.reduce(1, *)
      header[n] = ["dtype": "F32", "shape": shape, "data_offsets": [off, off + bytes]]
      off += bytes
    }
    total = off
    var h = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while (h.count + 8) % 8 != 0 { h.append(0x20) }
    guard FileManager.default.createFile(atPath: path, contents: nil) else {
      throw WeightsError.io(file: path, message: "cannot create")
    }
    guard let fh = FileHandle(forWritingAtPath: path) else {
      throw WeightsError.io(file: path, message: "cannot open for writing")
    }
    handle = fh
    var n = UInt64(h.count).littleEndian
    var head = Data()
    withUnsafeBytes(of: &n) { head.append(contentsOf: $0) }
    head.append(h)
    try write(head)
  }

  func write(_ d: Data) throws {
    do { try handle.write(contentsOf: d) } catch {
      throw WeightsError.io(file: path, message: "cannot write (disk full?)")
    }
  }

  /// Appends values (the next part of the tensors' data, in name order).
  public func append(_ values: [Float]) throws {
    guard written + 4 * values.count <= total else {
      throw WeightsError.io(file: path, message: "more data than the header declares")
    }
    try values.withUnsafeBytes { try write(Data($0)) }
    written += 4 * values.count
  }

  /// Checks that every declared byte was written, and closes the file.
  public func close() throws {
    try? handle.close()
    guard written == total else {
      throw WeightsError.io(file: path, message: "\(written) of \(total) data bytes written")
    }
  }
}

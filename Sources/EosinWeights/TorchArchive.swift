import EosinTensor
import Foundation

/// A PyTorch checkpoint as `torch.save` writes it (`pytorch_model.bin`,
/// `open_clip_pytorch_model.bin`): a zip archive holding `data.pkl` (the pickled state dict) and
/// one `data/KEY` entry per storage.
///
/// The pickle is read by a restricted interpreter that understands only what a tensor state dict
/// needs: containers, strings, numbers, `collections.OrderedDict`,
/// `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the storage types.
/// Any other global (`os.system`, `builtins.eval`, ...) or opcode is refused with an error
/// naming it; nothing in the file is ever executed. Like ``SafeTensorsFile``, every offset and
/// length is checked against the mapped file before it is read.
public final class TorchArchive: TensorStore, @unchecked Sendable {
  public let path: String
  public let shapes: [String: [Int]]
  let entries: [String: TorchTensorRef]
  let zip: ZipArchive

  /// Opens and validates an archive; tensor data is read on ``tensor(_:shape:)``.
  /// - Throws: ``WeightsError/format``-style ``WeightsError/io`` errors naming the file and what
  ///   is wrong (not a zip, an entry outside the archive, a compressed entry, a refused global).
  public init(path: String) throws {
    self.path = path
    zip = try ZipArchive(path: path)
    guard let pkl = zip.entries.keys.filter({ $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }).min(by: { $0.count < $1.count })
    else {
      throw WeightsError.io(file: path, message: "not a PyTorch archive: no data.pkl inside")
    }
    let prefix = String(pkl.dropLast("data.pkl".count))
    if let bo = zip.entries[prefix + "byteorder"] {
      let b = try zip.bytes(bo)
      guard Array(b) == Array("little".utf8) else {
        throw WeightsError.io(file: path, message: "big-endian PyTorch archives are not supported")
      }
    }
    var vm = Unpickler(data: try zip.bytes(zip.entries[pkl]!), file: path)
    let top = try vm.load()
    let dict = try TorchArchive.stateDict(top, path)
    var shp: [String: [Int]] = [:]
    var refs: [String: TorchTensorRef] = [:]
    for (k, v) in dict {
      guard case .tensor(var r) = v else { continue }
      guard let e = zip.entries[prefix + "data/" + r.key] else {
        throw WeightsError.tensor(file: path, tensor: k, message: "its storage data/\(r.key) is not in the archive")
      }
      r.entry = e
      try r.check(name: k, file: path)
      refs[k] = r
      shp[k] = r.shape
    }
    entries = refs
    shapes = shp
  }

  /// The dictionary of tensors: the top object, or its `state_dict` / `model` / `module` entry.
  static func stateDict(_ top: PickleValue, _ path: String) throws -> [(String, PickleValue)] {
    guard case .dict(let d) = top else {
      throw WeightsError.io(file: path, message: "the pickled object is not a state dict (a dictionary of tensors)")
    }
    let items = d.items.compactMap { k, v -> (String, PickleValue)? in
      if case .string(let s) = k { return (s, v) }
      return nil
    }
    if items.contains(where: { if case .tensor = $0.1 { return true } else { return false } }) { return items }
    for key in ["state_dict", "model", "module"] {
      if let inner = items.first(where: { $0.0 == key })?.1 { return try stateDict(inner, path) }
    }
    throw WeightsError.io(file: path, message: "the pickled object holds no tensors")
  }

  public func tensor(_ name: String, shape: [Int]?) throws -> Tensor {
    guard let r = entries[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
    if let s = shape, s != r.shape {
      throw WeightsError.tensor(file: path, tensor: name, message: "expected shape \(s), found \(r.shape)")
    }
    let raw = try zip.bytes(r.entry!)
    let n = r.shape.reduce(1, *)
    var out = [Float](repeating: 0, count: n)
    let es = r.dtype.size
    let nd = r.shape.count
    var idx = [Int](repeating: 0, count: nd)
    out.withUnsafeMutableBufferPointer { o in
      for i in 0..<n {
        var e = r.offset
        for d in 0..<nd { e += idx[d] * r.stride[d] }
        let b = e * es
        switch r.dtype {
        case .f32: o[i] = raw.loadUnaligned(fromByteOffset: b, as: Float.self)
        case .f64: o[i] = Float(raw.loadUnaligned(fromByteOffset: b, as: Double.self))
        case .f16: o[i] = halfToFloat(raw.loadUnaligned(fromByteOffset: b, as: UInt16.self))
        case .bf16: o[i] = Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: b, as: UInt16.self)) << 16)
        case .i64: o[i] = Float(raw.loadUnaligned(fromByteOffset: b, as: Int64.self))
        case .i32: o[i] = Float(raw.loadUnaligned(fromByteOffset: b, as: Int32.self))
        case .i16: o[i] = Float(raw.loadUnaligned(fromByteOffset: b, as: Int16.self))
        case .i8: o[i] = Float(raw.load(fromByteOffset: b, as: Int8.self))
        case .u8, .bool: o[i] = Float(raw.load(fromByteOffset: b, as: UInt8.self))
        }
        var d = nd - 1
        while d >= 0 {
          idx[d] += 1
          if idx[d] < r.shape[d] { break }
          idx[d] = 0
          d -= 1
        }
      }
    }
    return Tensor(shape: r.shape, data: out)
  }
}

/// A tensor in a PyTorch archive: its storage entry, element type, offset, shape and strides.
struct TorchTensorRef: Sendable {
  var key: String
  var dtype: DType
  var offset: Int
  var shape: [Int]
  var stride: [Int]
  var entry: ZipArchive.Entry?

  /// Every element the view can touch lies inside its storage.
  func check(name: String, file: String) throws {
    guard shape.count == stride.count, offset >= 0, shape.allSatisfy({ $0 >= 0 }), stride.allSatisfy({ $0 >= 0 }) else {
      throw WeightsError.tensor(file: file, tensor: name, message: "bad shape \(shape), stride \(stride) or offset \(offset)")
    }
    let elems = entry!.size / dtype.size
    if shape.contains(0) { return }
    var last = offset
    for (s, st) in zip(shape, stride) {
      let (m, o1) = (s - 1).multipliedReportingOverflow(by: st)
      let (a, o2) = last.addingReportingOverflow(m)
      guard !o1, !o2 else { throw WeightsError.tensor(file: file, tensor: name, message: "shape \(shape) overflows") }
      last = a
    }
    guard last < elems else {
      throw WeightsError.tensor(
        file: file, tensor: name,
        message: "view of shape \(shape) at offset \(offset) reaches element \(last), past its storage of \(elems)")
    }
  }
}

/// A read-only, memory-mapped zip archive of stored (uncompressed) entries, with zip64 support,
/// as PyTorch writes them. Every entry's data must lie inside the file.
final class ZipArchive: @unchecked Sendable {
  struct Entry: Sendable {
    var name: String
    var offset: Int
    var size: Int
  }

  let path: String
  let entries: [String: Entry]
  private let base: UnsafeMutableRawPointer
  private let length: Int

  init(path: String) throws {
    self.path = path
    let (m, size) = try mapReadOnly(path, minimum: 22) {
      WeightsError.io(file: path, message: "not a PyTorch archive: \($0) bytes, too short for a zip file")
    }
    base = m
    length = size
    do { entries = try ZipArchive.readDirectory(m, size, path) } catch {
      munmap(m, size)
      throw error
    }
  }

  deinit { munmap(base, length) }

  func bytes(_ e: Entry) throws -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: base + e.offset, count: e.size)
  }

  private static func readDirectory(_ m: UnsafeMutableRawPointer, _ size: Int, _ path: String) throws -> [String: Entry] {
    let p = UnsafeRawBufferPointer(start: m, count: size)
    func u16(_ o: Int) -> Int { Int(p.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian) }
    func u32(_ o: Int) -> Int { Int(p.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian) }
    func u64(_ o: Int) -> Int {
      let v = p.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian
      return v > UInt64(Int.max) ? Int.max : Int(v)
    }
    func bad(_ msg: String) -> WeightsError { WeightsError.io(file: path, message: msg) }
    // End of central directory: the last signature within the final 64 KiB + 22 bytes.
    var eocd = -1
    var o = size - 22
    while o >= max(0, size - 22 - 65535) {
      if u32(o) == 0x0605_4b50 {
        eocd = o
        break
      }
      o -= 1
    }
    guard eocd >= 0 else { throw bad("not a PyTorch archive: not a zip file (no end-of-directory record)") }
    var count = u16(eocd + 10), cdSize = u32(eocd + 12), cdOffset = u32(eocd + 16)
    if eocd >= 20 && u32(eocd - 20) == 0x0706_4b50 {
      let z = u64(eocd - 20 + 8)
      guard z <= size - 56, u32(z) == 0x0606_4b50 else { throw bad("truncated zip: bad zip64 directory record") }
      count = u64(z + 32)
      cdSize = u64(z + 40)
      cdOffset = u64(z + 48)
    }
    guard cdOffset <= size, cdSize <= size - cdOffset, count <= cdSize / 46 + 1 else {
      throw bad("truncated zip: the central directory lies outside the file")
    }
    var out: [String: Entry] = [:]
    var c = cdOffset
    for _ in 0..<count {
      guard c + 46 <= cdOffset + cdSize, u32(c) == 0x0201_4b50 else { throw bad("truncated zip: bad central directory entry") }
      let method = u16(c + 10)
      var comp = u32(c + 20), uncomp = u32(c + 24)
      let nameLen = u16(c + 28), extraLen = u16(c + 30), commentLen = u16(c + 32)
      var local = u32(c + 42)
      guard c + 46 + nameLen + extraLen + commentLen <= cdOffset + cdSize else {
        throw bad("truncated zip: a directory entry runs past the directory")
      }
      let name = String(decoding: UnsafeRawBufferPointer(rebasing: p[(c + 46)..<(c + 46 + nameLen)]), as: UTF8.self)
      // zip64 extra field: the 64-bit values of the fields that hold 0xFFFFFFFF, in order.
      var e = c + 46 + nameLen
      let eEnd = e + extraLen
      while e + 4 <= eEnd {
        let id = u16(e), len = u16(e + 2)
        guard e + 4 + len <= eEnd else { break }
        if id == 1 {
          var q = e + 4
          if uncomp == 0xFFFF_FFFF && q + 8 <= e + 4 + len { uncomp = u64(q); q += 8 }
          if comp == 0xFFFF_FFFF && q + 8 <= e + 4 + len { comp = u64(q); q += 8 }
          if local == 0xFFFF_FFFF && q + 8 <= e + 4 + len { local = u64(q); q += 8 }
        }
        e += 4 + len
      }
      guard method == 0, comp == uncomp else {
        throw bad("zip entry '\(name)' is compressed (method \(method)); PyTorch archives store entries uncompressed")
      }
      guard local <= size - 30, u32(local) == 0x0403_4b50 else {
        throw bad("zip entry '\(name)' points outside the archive (local header at \(local) of \(size) bytes)")
      }
      let data = local + 30 + u16(local + 26) + u16(local + 28)
      guard data <= size, comp <= size - data else {
        throw bad("zip entry '\(name)' points outside the archive (\(comp) bytes at \(data) of \(size))")
      }
      out[name] = Entry(name: name, offset: data, size: comp)
      c += 46 + nameLen + extraLen + commentLen
    }
    return out
  }
}

/// A value of the restricted unpickler.
indirect enum PickleValue {
  case none
  case bool(Bool)
  case int(Int)
  case float(Double)
  case string(String)
  case bytes([UInt8])
  case tuple([PickleValue])
  case list(PickleList)
  case dict(PickleDict)
  case global(String)
  case storage(key: String, dtype: DType)
  case tensor(TorchTensorRef)
  case mark
}

final class PickleList { var items: [PickleValue] = [] }
final class PickleDict { var items: [(PickleValue, PickleValue)] = [] }

/// The restricted pickle interpreter (protocols 2 to 5).
struct Unpickler {
  let p: UnsafeRawBufferPointer
  let file: String
  var pos = 0
  var stack: [PickleValue] = []
  var memo: [Int: PickleValue] = [:]

  /// Globals a state dict may name; anything else is refused.
  static let storages: [String: DType] = [
    "torch.FloatStorage": .f32, "torch.HalfStorage": .f16, "torch.BFloat16Storage": .bf16, "torch.DoubleStorage": .f64,
    "torch.LongStorage": .i64, "torch.IntStorage": .i32, "torch.ShortStorage": .i16, "torch.CharStorage": .i8,
    "torch.ByteStorage": .u8, "torch.BoolStorage": .bool,
  ]
  static let callables: Set<String> = [
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
  ]

  init(data: UnsafeRawBufferPointer, file: String) {
    p = data
    self.file = file
  }

  func fail(_ m: String) -> WeightsError { WeightsError.io(file: file, message: "data.pkl: " + m) }

  mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
    guard n >= 0, n <= p.count - pos else { throw fail("truncated (wanted \(n) bytes at \(pos) of \(p.count))") }
    defer { pos += n }
    return UnsafeRawBufferPointer(rebasing: p[pos..<(pos + n)])
  }
  mutating func uint(_ n: Int) throws -> Int {
    let b = try take(n)
    var v: UInt64 = 0
    for i in (0..<n).reversed() { v = v << 8 | UInt64(b[i]) }
    guard v <= UInt64(Int.max) else { throw fail("length out of range") }
    return Int(v)
  }
  mutating func text(_ n: Int) throws -> String { String(decoding: try take(n), as: UTF8.self) }
  mutating func line() throws -> String {
    guard let nl = p[pos...].firstIndex(of: 0x0A) else { throw fail("truncated GLOBAL") }
    let s = String(decoding: UnsafeRawBufferPointer(rebasing: p[pos..<nl]), as: UTF8.self)
    pos = nl + 1
    return s
  }
  mutating func pop() throws -> PickleValue {
    guard let v = stack.popLast() else { throw fail("stack underflow") }
    return v
  }
  mutating func popMark() throws -> [PickleValue] {
    guard let m = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else {
      throw fail("no MARK")
    }
    let items = Array(stack[(m + 1)...])
    stack.removeSubrange(m...)
    return items
  }
  mutating func push(_ v: PickleValue) throws {
    guard stack.count < 1 << 20 else { throw fail("stack too deep") }
    stack.append(v)
  }

  mutating func load() throws -> PickleValue {
    while true {
      let op = try take(1)[0]
      switch op {
      case 0x80: _ = try take(1)  // PROTO
      case 0x95: _ = try take(8)  // FRAME
      case 0x2E: return try pop()  // STOP
      case 0x28: try push(.mark)
      case 0x7D: try push(.dict(PickleDict()))
      case 0x5D: try push(.list(PickleList()))
      case 0x29: try push(.tuple([]))
      case 0x4E: try push(.none)
      case 0x88: try push(.bool(true))
      case 0x89: try push(.bool(false))
      case 0x4B: try push(.int(try uint(1)))
      case 0x4D: try push(.int(try uint(2)))
      case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))
      case 0x8A:  // LONG1
        let n = try uint(1)
        guard n <= 8 else { throw fail("integer of \(n) bytes") }
        let b = try take(n)
        var v: UInt64 = 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(b[i]) }
        if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(n)) }
        try push(.int(Int(truncatingIfNeeded: v)))
      case 0x47:  // BINFLOAT, big-endian
        let b = try take(8)
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[i]) }
        try push(.float(Double(bitPattern: v)))
      case 0x58: try push(.string(try text(try uint(4))))
      case 0x8C: try push(.string(try text(try uint(1))))
      case 0x8D: try push(.string(try text(try uint(8))))
      case 0x54: try push(.string(try text(try uint(4))))
      case 0x55: try push(.string(try text(try uint(1))))
      case 0x42: try push(.bytes(Array(try take(try uint(4)))))
      case 0x43: try push(.bytes(Array(try take(try uint(1)))))
      case 0x8E: try push(.bytes(Array(try take(try uint(8)))))
      case 0x71: memo[try uint(1)] = stack.last
      case 0x72: memo[try uint(4)] = stack.last
      case 0x94: memo[memo.count] = stack.last
      case 0x68, 0x6A:
        let k = try uint(op == 0x68 ? 1 : 4)
        guard let v = memo[k] else { throw fail("memo key \(k) not set") }
        try push(v)
      case 0x74: try push(.tuple(try popMark()))
      case 0x85: try push(.tuple([try pop()]))
      case 0x86:
        let b = try pop(), a = try pop()
        try push(.tuple([a, b]))
      case 0x87:
        let c = try pop(), b = try pop(), a = try pop()
        try push(.tuple([a, b, c]))
      case 0x63:  // GLOBAL
        let mod = try line(), name = try line()
        try push(try global(mod + "." + name))
      case 0x93:  // STACK_GLOBAL
        guard case .string(let name) = try pop(), case .string(let mod) = try pop() else {
          throw fail("STACK_GLOBAL needs two strings")
        }
        try push(try global(mod + "." + name))
      case 0x51:  // BINPERSID: ('storage', type, key, location, numel)
        guard case .tuple(let t) = try pop(), t.count >= 3, case .string("storage") = t[0], case .global(let g) = t[1],
          let dt = Unpickler.storages[g]
        else { throw fail("persistent id is not a tensor storage") }
        let key: String
        switch t[2] {
        case .string(let s): key = s
        case .int(let i): key = String(i)
        default: throw fail("storage key is not a string")
        }
        try push(.storage(key: key, dtype: dt))
      case 0x52:  // REDUCE
        let args = try pop(), f = try pop()
        try push(try reduce(f, args))
      case 0x62:  // BUILD: state on a dict (OrderedDict's _metadata) is ignored
        _ = try pop()
        guard let top = stack.last, case .dict = top else {
          if let top = stack.last, case .tensor = top { continue }
          throw fail("BUILD on an object that is not a dictionary")
        }
      case 0x73:  // SETITEM
        let v = try pop(), k = try pop()
        guard case .dict(let d) = stack.last ?? .none else { throw fail("SETITEM on a non-dictionary") }
        d.items.append((k, v))
      case 0x75:  // SETITEMS
        let kv = try popMark()
        guard case .dict(let d) = stack.last ?? .none, kv.count % 2 == 0 else { throw fail("SETITEMS on a non-dictionary") }
        for i in stride(from: 0, to: kv.count, by: 2) { d.items.append((kv[i], kv[i + 1])) }
      case 0x61:
        let v = try pop()
        guard case .list(let l) = stack.last ?? .none else { throw fail("APPEND on a non-list") }
        l.items.append(v)
      case 0x65:
        let vs = try popMark()
        guard case .list(let l) = stack.last ?? .none else { throw fail("APPENDS on a non-list") }
        l.items += vs
      default:
        throw fail(String(format: "opcode 0x%02x is not allowed in a weights file (only a state dict of tensors is read)", op))
      }
    }
  }

  func global(_ name: String) throws -> PickleValue {
    guard Unpickler.callables.contains(name) || Unpickler.storages[name] != nil else {
      throw fail("refuses the pickled global '\(name)': a weights file may hold only tensors; nothing in it is run")
    }
    return .global(name)
  }

  func reduce(_ f: PickleValue, _ args: PickleValue) throws -> PickleValue {
    guard case .global(let g) = f, case .tuple(let a) = args else { throw fail("REDUCE on something not callable") }
    switch g {
    case "collections.OrderedDict":
      return .dict(PickleDict())
    case "torch._utils._rebuild_tensor_v2":
      guard a.count >= 4, case .storage(let key, let dt) = a[0], case .int(let off) = a[1], case .tuple(let size) = a[2],
        case .tuple(let stride) = a[3]
      else { throw fail("_rebuild_tensor_v2 with unexpected arguments") }
      func ints(_ v: [PickleValue]) throws -> [Int] {
        try v.map {
          guard case .int(let i) = $0 else { throw fail("tensor size or stride is not an integer") }
          return i
        }
      }
      return .tensor(TorchTensorRef(key: key, dtype: dt, offset: off, shape: try ints(size), stride: try ints(stride)))
    case "torch._utils._rebuild_parameter":
      guard let t = a.first, case .tensor = t else { throw fail("_rebuild_parameter without a tensor") }
      return t
    default:
      throw fail("'\(g)' cannot be called")
    }
  }
}

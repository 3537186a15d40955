import Foundation

/// Writes small GGUF files byte by byte for the reader's bad-input tests: every field can be set
/// to a value no converter would write (a huge string length, an unknown type, an offset past
/// the end).
public struct GGUFBuilder {
  public var magic: UInt32 = 0x4655_4747
  public var version: UInt32 = 3
  /// Overrides the tensor count written in the header (default: the real count).
  public var tensorCountOverride: UInt64? = nil
  public var kv: [(String, Data)] = []
  public var tensors: [(name: String, dims: [UInt64], type: UInt32, offset: UInt64)] = []
  public var data = Data()
  public var alignment = 32

  public init() {}

  public static func u32(_ v: UInt32) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }
  static func u64(_ v: UInt64) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }
  static func str(_ s: String) -> Data { u64(UInt64(s.utf8.count)) + Data(s.utf8) }

  /// A string value (type 8).
  public mutating func add(_ key: String, string: String) { kv.append((key, Self.u32(8) + Self.str(string))) }
  /// A uint32 value (type 4).
  public mutating func add(_ key: String, uint32: UInt32) { kv.append((key, Self.u32(4) + Self.u32(uint32))) }
  /// A float32 value (type 6).
  public mutating func add(_ key: String, float: Float) { kv.append((key, Self.u32(6) + Self.u32(float.bitPattern))) }
  /// A bool value (type 7).
  public mutating func add(_ key: String, bool: Bool) { kv.append((key, Self.u32(7) + Data([bool ? 1 : 0]))) }
  /// An array of strings.
  public mutating func add(_ key: String, strings: [String]) {
    var d = Self.u32(9) + Self.u32(8) + Self.u64(UInt64(strings.count))
    for s in strings { d += Self.str(s) }
    kv.append((key, d))
  }
  /// An array of int32.
  public mutating func add(_ key: String, int32s: [Int32]) {
    var d = Self.u32(9) + Self.u32(5) + Self.u64(UInt64(int32s.count))
    for v in int32s { d += Self.u32(UInt32(bitPattern: v)) }
    kv.append((key, d))
  }
  /// Raw value bytes after the key (type id included), for malformed values.
  public mutating func add(_ key: String, raw: Data) { kv.append((key, raw)) }

  /// An F32 tensor with the given ggml dims, its data appended (aligned).
  public mutating func addF32(_ name: String, dims: [Int], fill: Float = 0.01) {
    while data.count % alignment != 0 { data.append(0) }
    let n = dims.reduce(1, *)
    tensors.append((name, dims.map { UInt64($0) }, 0, UInt64(data.count)))
    var v = [Float](repeating: fill, count: n)
    for i in 0..<n { v[i] = fill * Float((i % 7) - 3) }
    v.withUnsafeBytes { data.append(contentsOf: $0) }
  }

  /// The file's bytes.
  public func bytes() -> Data {
    var d = Self.u32(magic) + Self.u32(version)
    d += Self.u64(tensorCountOverride ?? UInt64(tensors.count)) + Self.u64(UInt64(kv.count))
    for (k, v) in kv { d += Self.str(k) + v }
    for t in tensors {
      d += Self.str(t.name) + Self.u32(UInt32(t.dims.count))
      for x in t.dims { d += Self.u64(x) }
      d += Self.u32(t.type) + Self.u64(t.offset)
    }
    while d.count % alignment != 0 { d.append(0) }
    return d + data
  }

  /// A complete tiny `llama` model (one block, width 32, 4 heads, vocabulary of `vocab` byte
  /// tokens) that loads; tests then break one thing.
  public static func tinyLlama(vocab: Int = 256, tokens: Int? = nil) -> GGUFBuilder {
    var b = GGUFBuilder()
    b.add("general.architecture", string: "llama")
    b.add("llama.block_count", uint32: 1)
    b.add("llama.context_length", uint32: 64)
    b.add("llama.embedding_length", uint32: 32)
    b.add("llama.feed_forward_length", uint32: 64)
    b.add("llama.attention.head_count", uint32: 4)
    b.add("llama.attention.head_count_kv", uint32: 2)
    b.add("llama.attention.layer_norm_rms_epsilon", float: 1e-5)
    b.add("tokenizer.ggml.model", string: "gpt2")
    b.add("tokenizer.ggml.pre", string: "smollm")
    b.add("tokenizer.ggml.tokens", strings: (0..<(tokens ?? vocab)).map { "t\($0)" })
    b.addF32("token_embd.weight", dims: [32, vocab])
    b.addF32("blk.0.attn_norm.weight", dims: [32], fill: 1)
    b.addF32("blk.0.attn_q.weight", dims: [32, 32])
    b.addF32("blk.0.attn_k.weight", dims: [32, 16])
    b.addF32("blk.0.attn_v.weight", dims: [32, 16])
    b.addF32("blk.0.attn_output.weight", dims: [32, 32])
    b.addF32("blk.0.ffn_norm.weight", dims: [32], fill: 1)
    b.addF32("blk.0.ffn_gate.weight", dims: [32, 64])
    b.addF32("blk.0.ffn_up.weight", dims: [32, 64])
    b.addF32("blk.0.ffn_down.weight", dims: [64, 32])
    b.addF32("output_norm.weight", dims: [32], fill: 1)
    return b
  }
}

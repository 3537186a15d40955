import CCrypto
import Foundation

/// SHA-256 through OpenSSL's libcrypto (a vetted implementation, with the CPU's SHA extensions
/// where it has them), streaming. Used to verify weights against their manifest, for cache keys
/// and for download checks. Not thread-safe per instance.
public struct SHA256 {
  private final class Context {
    let ctx: OpaquePointer
    init() {
      ctx = EVP_MD_CTX_new()!
      EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    }
    deinit { EVP_MD_CTX_free(ctx) }
  }
  private let context = Context()

  public init() {}

  /// Feeds bytes.
  public mutating func update<C: Collection>(_ data: C) where C.Element == UInt8 {
    let ctx = context.ctx
    if let done = data.withContiguousStorageIfAvailable({ EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }) {
      _ = done
    } else {
      let a = Array(data)
      a.withUnsafeBufferPointer { _ = EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }
    }
  }

  /// The 32-byte digest. The hasher is finished afterwards.
  public mutating func finalize() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var n: UInt32 = 0
    EVP_DigestFinal_ex(context.ctx, &out, &n)
    return out
  }

  /// Hex digest of bytes.
  public static func hex<C: Collection>(_ data: C) -> String where C.Element == UInt8 {
    var s = SHA256()
    s.update(data)
    return s.finalize().map { String(format: "%02x", $0) }.joined()
  }

  /// Hex digest of a file, streamed in 4 MiB chunks.
  /// - Throws: when the file cannot be opened or read.
  public static func hex(fileAt path: String) throws -> String {
    guard let fh = FileHandle(forReadingAtPath: path) else {
      throw CocoaError(.fileReadNoPermission, userInfo: [NSFilePathErrorKey: path])
    }
    defer { try? fh.close() }
    var s = SHA256()
    while let chunk = try fh.read(upToCount: 4 << 20), !chunk.isEmpty { s.update(chunk) }
    return s.finalize().map { String(format: "%02x", $0) }.joined()
  }
}

import EosinTokenizer
import Foundation
import FuzzDriver

/// One fuzz input: a tokenizer folder packed as `vocab.json` NUL `merges.txt` NUL
/// `special_tokens.json` NUL text, or (first byte 'T') a `tokenizer.json` NUL text. Load it, then
/// encode and decode the text.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let all = UnsafeBufferPointer(start: data, count: size)
  let parts = all.split(separator: 0, maxSplits: 3, omittingEmptySubsequences: false).map { Array($0) }
  func file(_ name: String, _ b: [UInt8]) -> String { b.withUnsafeBytes { scratchFile(name, $0) } }
  let tok: Tokenizer?
  let text: [UInt8]
  if size > 0 && data[0] == UInt8(ascii: "T") {
    let p = file("tokenizer.json", Array((parts.first ?? []).dropFirst()))
    tok = try? Tokenizer.huggingFace(tokenizerJSON: p)
    text = parts.count > 1 ? parts[1] : []
  } else {
    let dir = fuzzScratch + "/tok"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for (i, name) in ["vocab.json", "merges.txt", "special_tokens.json"].enumerated() {
      let b = i < parts.count ? parts[i] : []
      FileManager.default.createFile(atPath: "\(dir)/\(name)", contents: Data(b))
    }
    tok = try? Tokenizer.load(dir)
    text = parts.count > 3 ? parts[3] : Array("Hello, lung adenocarcinoma! 123".utf8)
  }
  if let t = tok {
    let s = String(decoding: text.prefix(4096), as: UTF8.self)
    let ids = t.encode(s)
    _ = t.decode(ids)
  }
  return 0
}

@_cdecl("FuzzTokenizer_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runFuzzer(argc, argv, fuzzTokenizer)
}

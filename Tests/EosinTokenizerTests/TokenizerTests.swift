import CZlib
import EosinTokenizer
import Foundation
import TestSupport
import XCTest

final class TokenizerTests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinTokenizerTests/Fixtures"

  struct Case: Decodable {
    var text: String
    var clip: [Int32]
    var gpt2: [Int32]
  }

  static let golden: [Case] = {
    struct F: Decodable { var cases: [Case] }
    let d = FileManager.default.contents(atPath: fixtures + "/golden.json")!
    return try! JSONDecoder().decode(F.self, from: d).cases
  }()

  static let small: Tokenizer = try! Tokenizer.load(fixtures + "/small-bpe")

  /// Guards exact GPT-2 byte-level tokenization: ids from transformers' GPT2Tokenizer on a
  /// vocabulary trained by `eosin train bpe`, on 686 strings. Exact match required.
  func testGoldenGPT2() {
    XCTAssertGreaterThanOrEqual(Self.golden.count, 500)
    var bad = 0
    for c in Self.golden where Self.small.encode(c.text) != c.gpt2 {
      bad += 1
      if bad <= 5 { XCTFail("gpt2 mismatch for \(c.text.debugDescription): got \(Self.small.encode(c.text)), want \(c.gpt2)") }
    }
    XCTAssertEqual(bad, 0)
  }

  /// Guards exact CLIP tokenization against transformers' CLIPTokenizer on the same strings,
  /// with OpenAI's merges from ../shared/data (MIT; not committed here).
  func testGoldenCLIP() throws {
    guard let data = TestSupport.sharedData else { throw XCTSkip("../shared/data absent: CLIP merges not available") }
    let clip = try Tokenizer.clip(mergesFile: data + "/vocab/openai-clip-bpe-merges.txt.gz")
    XCTAssertEqual(clip.vocabSize, 49408)
    var bad = 0
    for c in Self.golden {
      let got = [clip.bos!] + clip.encode(c.text) + [clip.eos!]
      if got != c.clip {
        bad += 1
        if bad <= 5 { XCTFail("clip mismatch for \(c.text.debugDescription): got \(got), want \(c.clip)") }
      }
    }
    XCTAssertEqual(bad, 0)
  }

  /// Guards the byte-level round trip: decode(encode(s)) == s for every golden string.
  func testByteLevelRoundTrip() {
    for c in Self.golden { XCTAssertEqual(Self.small.decode(Self.small.encode(c.text)), c.text) }
  }

  /// Guards CLIP model input: start/end tokens, truncation keeping the end token, padding.
  func testEncodeForModel() throws {
    guard let data = TestSupport.sharedData else { throw XCTSkip("../shared/data absent") }
    let clip = try Tokenizer.clip(mergesFile: data + "/vocab/openai-clip-bpe-merges.txt.gz")
    let ids = clip.encodeForModel(String(repeating: "tumour ", count: 200), contextLength: 77)
    XCTAssertEqual(ids.count, 77)
    XCTAssertEqual(ids.first, 49406)
    XCTAssertEqual(ids.last, 49407)
    let short = clip.encodeForModel("lung", contextLength: 8)
    XCTAssertEqual(short, [49406, 16271, 49407, 49407, 49407, 49407, 49407, 49407])
    XCTAssertEqual(clip.decode(clip.encode("Lung  Adenocarcinoma!")), "lung adenocarcinoma !")
  }

  /// Guards bad input: invalid UTF-8 is replaced (U+FFFD), never a crash; the empty string is
  /// empty.
  func testInvalidUTF8AndEmpty() {
    let ids = Self.small.encode(bytes: [0x61, 0xFF, 0xFE, 0x62, 0xC3])
    XCTAssertEqual(Self.small.decode(ids), "a\u{FFFD}\u{FFFD}b\u{FFFD}")
    XCTAssertEqual(Self.small.encode(""), [])
    XCTAssertEqual(Self.small.decode([]), "")
  }

  /// Guards against quadratic blow-up: a 1 MB single "word" encodes in linear-ish time (a few
  /// seconds at most in a debug build) and round-trips.
  func testOneMegabyteWord() {
    let word = String(repeating: "adenocarcinoma", count: 1_000_000 / 14)
    let t0 = Date()
    let ids = Self.small.encode(word)
    let dt = Date().timeIntervalSince(t0)
    XCTAssertLessThan(dt, 20, "1 MB word took \(dt) s")
    XCTAssertEqual(Self.small.decode(ids), word)
    XCTAssertLessThan(ids.count, word.utf8.count / 2)
  }

  /// Guards bad input: missing and malformed vocabulary files give a clear error with the file
  /// and line.
  /// Vocabulary files with the same contents give one shared tokenizer (Eosin's CLIP and its
  /// decoder ship the same files, and chat loads both at once); other contents give another,
  /// and a file that fails is not remembered: each load reports its own error.
  func testIdenticalVocabularyFilesShareOneTokenizer() throws {
    let src = Self.fixtures + "/small-bpe"
    var dirs: [String] = []
    for _ in 0..<3 {
      let d = TestSupport.tempDir()
      for f in ["vocab.json", "merges.txt", "special_tokens.json"] {
        try FileManager.default.copyItem(atPath: src + "/" + f, toPath: d + "/" + f)
      }
      dirs.append(d)
    }
    let a = try Tokenizer.load(dirs[0]), b = try Tokenizer.load(dirs[1])
    XCTAssertTrue(a === b)
    XCTAssertEqual(a.encode("The lung shows adenocarcinoma"), Self.small.encode("The lung shows adenocarcinoma"))
    let merges = try String(contentsOfFile: src + "/merges.txt", encoding: .utf8)
    try (merges.split(separator: "\n", omittingEmptySubsequences: false).dropLast(2).joined(separator: "\n") + "\n")
      .write(toFile: dirs[2] + "/merges.txt", atomically: true, encoding: .utf8)
    XCTAssertFalse(try Tokenizer.load(dirs[2]) === a)
    try "#version: 0.2\nzz qq\n".write(toFile: dirs[2] + "/merges.txt", atomically: true, encoding: .utf8)
    for _ in 0..<2 {
      XCTAssertThrowsError(try Tokenizer.load(dirs[2])) {
        XCTAssertTrue(
          $0.localizedDescription.contains("merges.txt:2: merge 'zz qq' uses a token missing"), $0.localizedDescription)
      }
    }
  }

  func testBadVocabFiles() throws {
    let d = TestSupport.tempDir()
    XCTAssertThrowsError(try Tokenizer.load(d + "/nope")) {
      XCTAssertEqual($0.localizedDescription, "\(d)/nope: no such file or directory")
    }
    try "{\"a\": 0,\n \"b\": }".write(toFile: d + "/vocab.json", atomically: true, encoding: .utf8)
    try "#version: 0.2\n".write(toFile: d + "/merges.txt", atomically: true, encoding: .utf8)
    XCTAssertThrowsError(try Tokenizer.load(d)) {
      XCTAssertTrue($0.localizedDescription.hasPrefix("\(d)/vocab.json:2: malformed JSON"), $0.localizedDescription)
    }
    // A merges file with a bad third line.
    let v = try String(contentsOfFile: Self.fixtures + "/small-bpe/vocab.json", encoding: .utf8)
    try v.write(toFile: d + "/vocab.json", atomically: true, encoding: .utf8)
    try "#version: 0.2\nĠ t\nonly-one-symbol\n".write(toFile: d + "/merges.txt", atomically: true, encoding: .utf8)
    XCTAssertThrowsError(try Tokenizer.load(d)) {
      XCTAssertEqual($0.localizedDescription, "\(d)/merges.txt:3: expected two space-separated symbols, found 'only-one-symbol'")
    }
    try "#version: 0.2\nzz qq\n".write(toFile: d + "/merges.txt", atomically: true, encoding: .utf8)
    XCTAssertThrowsError(try Tokenizer.load(d)) {
      XCTAssertTrue($0.localizedDescription.contains("merges.txt:2: merge 'zz qq' uses a token missing"))
    }
    FileManager.default.createFile(atPath: d + "/clip.txt.gz", contents: Data([0x1F, 0x8B, 0x08, 0, 1, 2, 3]))
    XCTAssertThrowsError(try Tokenizer.clip(mergesFile: d + "/clip.txt.gz")) {
      XCTAssertTrue($0.localizedDescription.contains("gzip"))
    }
    // Ids out of range, ids far beyond the vocabulary, negative ids: refused, never a trap or a
    // giant allocation.
    try "#version: 0.2\n".write(toFile: d + "/merges.txt", atomically: true, encoding: .utf8)
    for (vocab, needle) in [
      ("{\"a\": 3000000000}", "outside 0...16777215"), ("{\"a\": -1}", "outside 0...16777215"),
      ("{\"a\": 0, \"b\": 9000000}", "far beyond the vocabulary"),
    ] {
      try vocab.write(toFile: d + "/vocab.json", atomically: true, encoding: .utf8)
      XCTAssertThrowsError(try Tokenizer.load(d), vocab) {
        XCTAssertTrue($0.localizedDescription.contains(needle), $0.localizedDescription)
      }
    }
    // A gzip bomb (256 MiB of zeros compress to about 260 KB) is refused at the limit.
    let zeros = [UInt8](repeating: 0x61, count: 300 << 20)
    var strm = z_stream()
    deflateInit2_(&strm, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    var gz = [UInt8](repeating: 0, count: 2 << 20)
    zeros.withUnsafeBufferPointer { i in
      gz.withUnsafeMutableBufferPointer { o in
        strm.next_in = UnsafeMutablePointer(mutating: i.baseAddress)
        strm.avail_in = uInt(i.count)
        strm.next_out = o.baseAddress
        strm.avail_out = uInt(o.count)
        _ = deflate(&strm, Z_FINISH)
      }
    }
    let n = Int(strm.total_out)
    deflateEnd(&strm)
    FileManager.default.createFile(atPath: d + "/bomb.txt.gz", contents: Data(gz[0..<n]))
    XCTAssertThrowsError(try Tokenizer.clip(mergesFile: d + "/bomb.txt.gz")) {
      XCTAssertTrue($0.localizedDescription.contains("inflates to more than 256 MiB"), $0.localizedDescription)
    }
  }

  /// Guards the trainer: deterministic, documented tie-break, ids in GPT-2 order, and a vocab
  /// that loads and round-trips.
  func testTrainerDeterministicAndTieBreak() throws {
    let texts = ["ab ab ab cd cd cd", "ab cd"]
    let t = BPETrainer(vocabSize: 256 + 3 + 1, specialTokens: ["<|endoftext|>"])
    let r1 = try t.train(texts), r2 = try t.train(texts)
    XCTAssertEqual(r1.vocab, r2.vocab)
    XCTAssertEqual(r1.merges.map { $0.0 + " " + $0.1 }, r2.merges.map { $0.0 + " " + $0.1 })
    // "Ġa Ġb"... pairs: (Ġ,a) 4, (a,b) 4, (Ġ,c) 4, (c,d) 4 (the first word has no space).
    // Equal counts: the smaller left token by bytes wins; "a" (0x61) < "c" < "Ġ" (0xC4 0xA0).
    XCTAssertEqual(r1.merges[0].0, "a")
    XCTAssertEqual(r1.merges[0].1, "b")
    XCTAssertEqual(r1.vocab["!"], 0)
    XCTAssertEqual(r1.vocab["<|endoftext|>"], 259)
    let d = TestSupport.tempDir()
    try BPETrainer.write(r1, specialTokens: ["<|endoftext|>"], to: d)
    let tok = try Tokenizer.load(d)
    XCTAssertEqual(tok.decode(tok.encode("ab cd<|endoftext|>")), "ab cd<|endoftext|>")
    XCTAssertEqual(tok.encode("<|endoftext|>"), [259])
  }

  /// Guards the CSV reader used for corpora and manifests: quotes, doubled quotes, newlines in
  /// quotes, and an unterminated quote reported with its line.
  func testCSV() throws {
    let rows = try CSV.parse("id,text\n1,\"a, \"\"b\"\"\nc\"\n2,plain\n", path: "x.csv")
    XCTAssertEqual(rows, [["id", "text"], ["1", "a, \"b\"\nc"], ["2", "plain"]])
    XCTAssertThrowsError(try CSV.parse("a,b\n1,\"open\n2,3\n", path: "m.csv")) {
      XCTAssertEqual($0.localizedDescription, "m.csv:2: unterminated quoted field")
    }
  }
}

final class TokenizerJSONTests: XCTestCase {
  /// Guards HF tokenizer.json loading (BPE model, merges as "a b" strings or pairs, added
  /// tokens): the same ids as the vocab.json + merges.txt it was built from.
  func testTokenizerJSONMatchesVocabFiles() throws {
    let dir = TokenizerTests.fixtures + "/small-bpe"
    let vocab =
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/vocab.json"))) as! [String: Int]
    let merges = try String(contentsOfFile: dir + "/merges.txt", encoding: .utf8).split(separator: "\n").dropFirst().map(
      String.init)
    for style in ["strings", "pairs"] {
      let m: [Any] = style == "strings" ? merges : merges.map { $0.split(separator: " ").map(String.init) }
      let tj: [String: Any] = [
        "model": ["type": "BPE", "vocab": vocab, "merges": m, "end_of_word_suffix": NSNull()],
        "added_tokens": [["id": vocab["<|endoftext|>"]!, "content": "<|endoftext|>", "special": true]],
      ]
      let p = TestSupport.tempDir() + "/tokenizer.json"
      try JSONSerialization.data(withJSONObject: tj).write(to: URL(fileURLWithPath: p))
      let a = try Tokenizer.load(p)
      XCTAssertEqual(a.style, .byteLevel)
      for c in TokenizerTests.golden.prefix(200) { XCTAssertEqual(a.encode(c.text), c.gpt2, c.text) }
    }
  }
}

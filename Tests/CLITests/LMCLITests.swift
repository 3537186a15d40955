import EosinSlide
import Foundation
import TestSupport
import XCTest

/// `eosin lm`, `eosin tokenize --vocab FILE.gguf` and their handling of bad GGUF files.
final class LMCLITests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf"

  /// Guards: each malformed GGUF is one line on stderr naming the file, exit status 2, nothing
  /// on stdout, for `lm info`, `lm generate` and `tokenize`.
  func testBadGGUFFilesExitTwoWithOneLine() throws {
    let dir = TestSupport.tempDir("lm-bad")
    var cases: [(String, Data)] = []
    let good = GGUFBuilder.tinyLlama().bytes()
    cases.append(("truncated", good.prefix(good.count / 2)))
    var magic = GGUFBuilder.tinyLlama()
    magic.magic = 0
    cases.append(("magic", magic.bytes()))
    var v1 = GGUFBuilder.tinyLlama()
    v1.version = 1
    cases.append(("version1", v1.bytes()))
    var off = GGUFBuilder.tinyLlama()
    off.tensors[2].offset = UInt64(good.count * 4)
    cases.append(("offset", off.bytes()))
    var str = GGUFBuilder()
    str.add("general.architecture", raw: Data([8, 0, 0, 0]) + withUnsafeBytes(of: UInt64(1) << 63) { Data($0) })
    cases.append(("string-2e63", str.bytes() + Data(count: 64)))
    var arr = GGUFBuilder()
    arr.add("tokenizer.ggml.tokens", raw: Data([9, 0, 0, 0, 8, 0, 0, 0]) + withUnsafeBytes(of: UInt64(1) << 62) { Data($0) })
    cases.append(("array-count", arr.bytes() + Data(count: 64)))
    var type = GGUFBuilder.tinyLlama()
    type.tensors[1].type = 99
    cases.append(("unknown-type", type.bytes()))
    var arch = GGUFBuilder.tinyLlama()
    arch.kv[0] = ("general.architecture", Data([8, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]) + Data("rwkv".utf8))
    cases.append(("unknown-arch", arch.bytes()))
    cases.append(("vocab-mismatch", GGUFBuilder.tinyLlama(vocab: 256, tokens: 100).bytes()))
    cases.append(("empty", Data()))
    for (name, bytes) in cases {
      let p = dir + "/\(name).gguf"
      try bytes.write(to: URL(fileURLWithPath: p))
      for args in [["lm", "info", p], ["lm", "generate", "--gguf", p, "hello"], ["tokenize", "--vocab", p, "hello"]] {
        if args[0] == "tokenize" && ["unknown-type", "unknown-arch", "vocab-mismatch", "offset"].contains(name) { continue }
        let r = try CLITests.run(args)
        XCTAssertEqual(r.status, 2, "\(name) \(args[0]): \(r.stderr)")
        XCTAssertEqual(r.stdout, "", name)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "\(name): \(r.stderr)")
        XCTAssertTrue(r.stderr.contains(p), "\(name): \(r.stderr)")
      }
    }
  }

  /// Guards: `lm info` prints the facts, `lm generate` streams a reply through the chat template,
  /// and `tokenize --vocab FILE.gguf` uses the file's own tokenizer.
  func testInfoGenerateTokenize() throws {
    let f = Self.fixtures + "/tiny-qwen2-Q4_K.gguf"
    let info = try CLITests.run(["lm", "info", f])
    XCTAssertEqual(info.status, 0, info.stderr)
    for s in ["qwen2", "Q4_K", "chatml", "separate"] { XCTAssertTrue(info.stdout.contains(s), s) }
    let g = try CLITests.run(["lm", "generate", "--gguf", f, "hello there", "--max-tokens", "6", "--timings"])
    XCTAssertEqual(g.status, 0, g.stderr)
    XCTAssertTrue(g.stderr.contains("tok/s"), g.stderr)
    let raw = try CLITests.run(["lm", "generate", "--gguf", f, "the cat", "--raw", "--max-tokens", "4", "--precision", "q8"])
    XCTAssertEqual(raw.status, 0, raw.stderr)
    let t = try CLITests.run(["tokenize", "--vocab", f, "the 123"])
    XCTAssertEqual(t.status, 0, t.stderr)
    XCTAssertTrue(t.stdout.contains("pre-tokenizer qwen2"), t.stdout)
    // qwen2 splits digits one by one: "1", "2", "3" are separate tokens.
    XCTAssertEqual(
      t.stdout.split(separator: "\n").filter { $0.hasSuffix(" 1") || $0.hasSuffix(" 2") || $0.hasSuffix(" 3") }.count, 3, t.stdout
    )
    let bad = try CLITests.run(["lm", "generate", "--gguf", f, "x", "--template", "alpaca"])
    XCTAssertNotEqual(bad.status, 0)
    XCTAssertTrue(bad.stderr.contains("unknown template"), bad.stderr)
  }
}

/// `eosin chat --lm FILE.gguf`: the grounded chat path end to end, offline, on a tiny random GGUF.
final class GroundedChatCLITests: XCTestCase {
  /// `eosin chat` on the tiny bundle's slide with the tiny random GGUF, `stdin` as the script.
  func tinyChat(_ stdin: String) throws -> CLITests.Run {
    try CLITests.run(
      [
        "chat", "--weights", ChatCLITests.bundle, "--cache", ChatCLITests.dir + "/cache", "--lm",
        LMCLITests.fixtures + "/tiny-llama-Q4_0.gguf", ChatCLITests.slide,
      ], stdin: stdin, env: ["XDG_STATE_HOME": ChatCLITests.dir + "/state"])
  }

  /// Guards: the model is named once on stderr; each question gets an answer and one confidence
  /// or REVIEW line; an off-topic question is flagged as not from Eosin's notes.
  func testChatWithGGUF() throws {
    let r = try tinyChat("What is the diagnosis?\nWhat is the capital of France?\n")
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stderr.contains("chat model: tiny-llama-Q4_0.gguf"), r.stderr)
    let verdicts = r.stdout.split(separator: "\n").filter { $0.hasPrefix("confidence ") || $0.hasPrefix("⚠ REVIEW:") }
    XCTAssertEqual(verdicts.count, 2, r.stdout)
    XCTAssertTrue(r.stdout.contains("not from Eosin's notes"), r.stdout)
  }

  /// Guards: a yes/no question about one polarity is answered yes or no by the classifier's
  /// verdict (the model goes on from there), so the gate never finds that opening against it.
  func testYesNoPolarityOpensWithTheVerdict() throws {
    let r = try tinyChat("What is the diagnosis in this lung tissue?\nIs this benign?\nIs it cancer?\n")
    XCTAssertEqual(r.status, 0, r.stderr)
    let lines = r.stdout.split(separator: "\n").map(String.init)
    let openings = lines.filter { $0.hasPrefix("Yes.") || $0.hasPrefix("No.") }
    XCTAssertEqual(openings.count, 2, r.stdout)
    XCTAssertNotEqual(openings[0].prefix(3), openings[1].prefix(3), r.stdout)
    XCTAssertFalse(r.stdout.contains("to \"Is this benign?\" calls it"), r.stdout)
  }
}

extension GroundedChatCLITests {
  /// Guards: a question only imported reference text covers is answered from it, cites the
  /// collection, and is flagged for review as lecture text Eosin has not curated.
  func testImportedNotesAnswerIsCitedAndFlagged() throws {
    let lm = LMCLITests.fixtures + "/tiny-llama-Q4_0.gguf"
    let dir = TestSupport.tempDir("chat-imported-notes")
    try FileManager.default.createDirectory(atPath: dir + "/cache/eosin/notes", withIntermediateDirectories: true)
    let notes: [String: Any] = [
      "collection": "test atlas (CC BY 4.0)",
      "notes": [
        ["id": "amyloid-1", "title": "Amyloidosis", "text": "Amyloid: Congo red stain gives apple-green birefringence."]
      ]
        + ["atelectasis", "emphysema", "asthma", "silicosis", "pneumonia", "bronchitis"].map {
          ["id": $0, "title": $0, "text": "\($0): a lung disease."]
        },
    ]
    try JSONSerialization.data(withJSONObject: notes).write(to: URL(fileURLWithPath: dir + "/cache/eosin/notes/atlas.json"))
    let r = try CLITests.run(
      ["chat", "--weights", ChatCLITests.bundle, "--cache", dir + "/index", "--lm", lm, ChatCLITests.slide],
      stdin: "Which stain shows amyloid?\n", env: ["XDG_STATE_HOME": dir + "/state", "XDG_CACHE_HOME": dir + "/cache"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stderr.contains("then test atlas (CC BY 4.0) (7 passages)"), r.stderr)
    XCTAssertTrue(r.stdout.contains("(Source: test atlas (CC BY 4.0), atlas.json#amyloid-1"), r.stdout)
    XCTAssertTrue(r.stdout.contains("⚠ REVIEW:") && r.stdout.contains("lecture text Eosin has not curated"), r.stdout)
  }

  /// Guards, with the real SmolLM2 file (skipped without it): ten different questions about one
  /// tile get ten different answers, and "What is the capital of France?" gets no diagnosis.
  func testTenQuestionsTenAnswersWithSmolLM2() throws {
    guard let lm = TestSupport.smolLM2 else { throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not in the cache; run `make lm`") }
    let dir = TestSupport.tempDir("chat-smollm2")
    let tile = dir + "/tile.png"
    try ImageCodec.write(TestSupport.syntheticHE(width: 224, height: 224), to: tile)
    let questions = [
      "What is the diagnosis?", "Is this malignant?", "What stain is this?", "Write a poem about the sea.",
      "How many tiles are there?", "What is a granuloma?", "What is the Gleason score?", "Describe the features.",
      "florp zibble quantum banana?", "What is the capital of France?",
    ]
    let r = try CLITests.run(
      ["chat", "--cache", dir + "/cache", "--lm", lm, tile], stdin: questions.joined(separator: "\n") + "\n",
      env: ["XDG_STATE_HOME": dir + "/state"])
    XCTAssertEqual(r.status, 0, r.stderr)
    // Each answer is the text before its confidence or REVIEW line.
    var answers: [String] = []
    var cur: [String] = []
    for line in r.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropFirst() {
      if line.hasPrefix("confidence ") || line.hasPrefix("⚠ REVIEW:") {
        answers.append(cur.joined(separator: "\n") + "\n" + line)
        cur = []
      } else {
        cur.append(String(line))
      }
    }
    XCTAssertEqual(answers.count, 10, r.stdout)
    XCTAssertEqual(Set(answers.map { $0.split(separator: "\n").first ?? "" }).count, 10, r.stdout)
    let france = answers.last ?? ""
    XCTAssertFalse(ClaimGateWords.namesDiagnosis(france), france)
  }
}

/// Diagnosis words for the check above (kept here: the test reads the binary's output only).
enum ClaimGateWords {
  static func namesDiagnosis(_ s: String) -> Bool {
    let t = s.lowercased()
    return ["carcinoma", "adenoma", "neoplasia", "malignant", "benign", "tumour", "tumor", "melanoma", "lymphoma"].contains {
      t.contains($0)
    }
  }
}

extension GroundedChatCLITests {
  /// Guards: a missing or non-GGUF language model, named by --lm or EOSIN_LM, is one line on
  /// stderr naming the file and exit status 2, for chat and report.
  func testBadLanguageModelIsOneLineExitTwo() throws {
    let dir = TestSupport.tempDir("bad-lm")
    let notGGUF = dir + "/model.gguf"
    try Data("not a model".utf8).write(to: URL(fileURLWithPath: notGGUF))
    let runs: [([String], [String: String], String)] = [
      (["chat", "--lm", dir + "/missing.gguf"], [:], dir + "/missing.gguf"),
      (["chat"], ["EOSIN_LM": notGGUF], notGGUF),
      (
        [
          "report", "--weights", ChatCLITests.bundle, "--template", "lung-biopsy", "--lm", notGGUF, "--out", dir + "/r",
          ChatCLITests.slide,
        ],
        [:], notGGUF
      ),
    ]
    for (args, env, file) in runs {
      let r = try CLITests.run(args, stdin: "", env: env)
      XCTAssertEqual(r.status, 2, "\(args): \(r.stderr)")
      XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
      XCTAssertTrue(r.stderr.contains(file), r.stderr)
    }
  }
}

extension GroundedChatCLITests {
  /// Guards: a feature question opens with the verdict and "Its typical features are", and the
  /// model goes on from there (the tiny random model's words follow); the diagnosis question
  /// before it gets no such opening; a yes/no question about a diagnosis outside the set opens
  /// with "Eosin cannot tell" and is flagged.
  func testFeatureQuestionOpensWithTheVerdict() throws {
    let r = try tinyChat("What is the diagnosis in this lung tissue?\nDescribe the features.\nIs this a lymphoma?\n")
    XCTAssertEqual(r.status, 0, r.stderr)
    let openings = r.stdout.split(separator: "\n").filter { $0.hasPrefix("The classifier calls it ") }
    XCTAssertEqual(openings.count, 1, r.stdout)
    XCTAssertTrue(openings.first?.contains("). Its typical features are") == true, r.stdout)
    // A diagnosis none of the set's classes is: Eosin says it cannot tell, and the answer is flagged.
    XCTAssertTrue(r.stdout.contains("Eosin cannot tell: its classifier only tells the lung set's classes apart"), r.stdout)
    XCTAssertTrue(r.stdout.contains("the question asks about \"lymphoma\""), r.stdout)
  }
}

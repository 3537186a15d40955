import Foundation
import TestSupport
import XCTest

/// `eosin notes import` and `eosin notes search`: imported lecture notes land in the cache's
/// notes folder and chat's retrieval finds them; bad input is one line, exit 2, nothing written.
final class NotesCLITests: XCTestCase {
  func testImportThenSearch() throws {
    let dir = TestSupport.tempDir("eosin-notes-cli")
    let cache = dir + "/cache"
    let body =
      ["Amyloid is an extracellular fibrillar protein", "Congo red stain gives apple-green birefringence"]
      + (1...20).map { "Deposits in organ \($0) compromise its function" }
    // Other lectures beside it, as in a real collection (term weights need a corpus).
    let others = ["asthma", "atelectasis", "emphysema", "silicosis", "bronchiectasis", "pneumonia"].map { t in
      [
        "file": "\(t).qmd", "title": t,
        "text": (1...14).map { "\(t) changes the airways and alveoli in stage \($0)" }.joined(separator: "\n"),
      ]
    }
    let lines = try ([["file": "amyloidosis.qmd", "title": "Amyloidosis", "text": body.joined(separator: "\n")]] + others).map {
      String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self)
    }
    try lines.joined(separator: "\n").write(toFile: dir + "/atlas.jsonl", atomically: true, encoding: .utf8)
    let env = ["XDG_CACHE_HOME": cache]
    let imp = try CLITests.run(["notes", "import", dir + "/atlas.jsonl"], env: env)
    XCTAssertEqual(imp.status, 0, imp.stderr)
    XCTAssertTrue(imp.stdout.contains("imported: 14 passages"), imp.stdout)
    XCTAssertTrue(FileManager.default.fileExists(atPath: cache + "/eosin/notes/atlas.json"))
    let hit = try CLITests.run(["notes", "search", "Which stain shows amyloid?"], env: env)
    XCTAssertEqual(hit.status, 0, hit.stderr)
    XCTAssertTrue(hit.stdout.contains("atlas lecture notes (CC BY 4.0), atlas.json#amyloidosis-1"), hit.stdout)
    let none = try CLITests.run(["notes", "search", "What is the capital of France?"], env: env)
    XCTAssertTrue(none.stdout.hasPrefix("nothing relevant"), none.stdout)
    // A damaged file: one line naming it, exit 2, nothing written.
    try "not json\n".write(toFile: dir + "/bad.jsonl", atomically: true, encoding: .utf8)
    let bad = try CLITests.run(["notes", "import", dir + "/bad.jsonl"], env: env)
    XCTAssertEqual(bad.status, 2)
    XCTAssertTrue(bad.stderr.contains("bad.jsonl") && bad.stderr.contains("line 1"), bad.stderr)
    XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1)
    XCTAssertFalse(FileManager.default.fileExists(atPath: cache + "/eosin/notes/bad.json"))
    try "".write(toFile: dir + "/empty.jsonl", atomically: true, encoding: .utf8)
    let empty = try CLITests.run(["notes", "import", dir + "/empty.jsonl"], env: env)
    XCTAssertEqual(empty.status, 2)
    XCTAssertTrue(empty.stderr.contains("empty.jsonl: no passages to import"), empty.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: cache + "/eosin/notes/empty.json"))
    let ro = try CLITests.run(["notes", "import", dir + "/atlas.jsonl", "--out", "/proc/eosin-notes"], env: env)
    XCTAssertEqual(ro.status, 2)
    XCTAssertTrue(ro.stderr.contains("/proc/eosin-notes"), ro.stderr)
  }

  /// The hybrid ranking and its measurement: without a language model, one line and exit 2;
  /// with the tiny fixture model, `--questions` prints BM25 beside the fusion for each file.
  func testHybridRetrievalAndItsScore() throws {
    let dir = TestSupport.tempDir("eosin-notes-hybrid")
    let env = ["XDG_CACHE_HOME": dir + "/cache", "EOSIN_LM": ""]
    let none = try CLITests.run(["notes", "search", "--retrieval", "hybrid", "What is a granuloma?"], env: env)
    XCTAssertEqual(none.status, 2)
    XCTAssertEqual(none.stderr.split(separator: "\n").count, 1, none.stderr)
    XCTAssertTrue(none.stderr.contains("needs a language model"), none.stderr)
    let q = [
      "questions": [
        ["q": "What is a granuloma?", "note": "general.json#granuloma", "facts": [["macrophage"]], "contradictions": []],
        ["q": "Which germ causes stomach ulcers?", "facts": [["helicobacter"]], "contradictions": []],
      ],
      "off_topic": [],
    ]
    try JSONSerialization.data(withJSONObject: q).write(to: URL(fileURLWithPath: dir + "/q.json"))
    let lm = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-llama-Q4_0.gguf"
    let r = try CLITests.run(["notes", "search", "--lm", lm, "--questions", dir + "/q.json"], env: env)
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("| q.json | 2 | 2/2 | "), r.stdout)
    XCTAssertTrue(r.stdout.contains("| 1/1 | "), r.stdout)
    // A missing or damaged question file: one line naming it, exit 2, nothing printed.
    try "not json".write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
    for (f, why) in [(dir + "/missing.json", "cannot read"), (dir + "/bad.json", "not a question set")] {
      let b = try CLITests.run(["notes", "search", "--lm", lm, "--questions", dir + "/q.json", f], env: env)
      XCTAssertEqual(b.status, 2, b.stderr)
      XCTAssertEqual(b.stdout, "")
      XCTAssertEqual(b.stderr.split(separator: "\n").count, 1, b.stderr)
      XCTAssertTrue(b.stderr.contains(f) && b.stderr.contains(why), b.stderr)
    }
    // The passages' embeddings are cached for the next run.
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/cache/eosin/notes-index").count, 1)
  }
}

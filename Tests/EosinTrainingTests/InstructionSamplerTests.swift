import EosinTokenizer
import EosinTraining
import Foundation
import TestSupport
import XCTest

/// Guards the instruction examples the decoder is tuned on: prefix shape, pseudo-slide sizes and
/// membership, the global mean token, non-tissue answers, and determinism.
final class InstructionSamplerTests: XCTestCase {
  func makeSampler() throws -> (InstructionSampler, [Float], [String]) {
    let tok = try Tokenizer.load(TestSupport.projectRoot + "/Tests/EosinTokenizerTests/Fixtures/small-bpe")
    let classes = try Knowledge.load(TestSupport.projectRoot + "/Prompts/knowledge")
    let nt = classes.firstIndex { $0.id == "non_tissue" }!
    let D = 8
    // Three groups: 20 tiles, 6 tiles and a single tile. Tile i's embedding is all i, so rows
    // can be read back from the prefix.
    var groups: [String] = []
    for i in 0..<27 { groups.append(i < 20 ? "a" : (i < 26 ? "b" : "c")) }
    let labels = groups.map { $0 == "a" ? 0 : ($0 == "b" ? 1 : 2) }
    let emb = (0..<27).flatMap { i in [Float](repeating: Float(i), count: D) }
    let ntEmb = (0..<5).flatMap { i in [Float](repeating: Float(-1 - i), count: D) }
    var s = try InstructionSampler(
      embeddings: emb, labels: labels, groups: groups, nonTissue: ntEmb, nonTissueClass: nt, classes: classes, dim: D,
      tokenizer: tok)
    s.length = 64
    return (s, emb, groups)
  }

  func testPseudoSlidesAndPrefix() throws {
    let (s, _, groups) = try makeSampler()
    let D = s.dim
    var sizes = Set<Int>(), pseudo = 0, single = 0, nonTissue = 0
    for step in 0..<60 {
      for slot in 0..<32 {
        let (cls, nt, rows) = s.draw(step: step, slot: slot)
        let ex = s.example(step: step, slot: slot)
        XCTAssertEqual(ex.prefix.count, (s.tileTokens + 1) * D)
        XCTAssertEqual(ex.ids.count, 64)
        // The last token is the mean of every row of the example.
        let tableValue = { (j: Int) -> Float in nt ? Float(-1 - j) : Float(j) }
        let mean = rows.map(tableValue).reduce(0, +) / Float(rows.count)
        XCTAssertEqual(ex.prefix[s.tileTokens * D], mean, accuracy: 1e-4)
        // Tile tokens are rows of the example, in order, repeated when there are fewer.
        for k in 0..<s.tileTokens { XCTAssertEqual(ex.prefix[k * D], tableValue(rows[k % rows.count])) }
        if nt {
          nonTissue += 1
          continue
        }
        XCTAssertEqual(Set(rows).count, rows.count, "pseudo-slide tiles are distinct")
        XCTAssertTrue(rows.allSatisfy { groups[$0] == groups[rows[0]] }, "one group per pseudo-slide")
        XCTAssertTrue(rows.allSatisfy { [0, 1, 2][groups[$0] == "a" ? 0 : (groups[$0] == "b" ? 1 : 2)] == cls })
        if rows.count == 1 { single += 1 } else { pseudo += 1 }
        if groups[rows[0]] == "a" && rows.count > 1 { sizes.insert(rows.count) }
        if groups[rows[0]] == "b" { XCTAssertLessThanOrEqual(rows.count, 6) }
      }
    }
    XCTAssertEqual(sizes, Set(4...16), "pseudo-slides of every size from 4 to 16 tiles")
    XCTAssertGreaterThan(pseudo, 500)
    XCTAssertGreaterThan(single, 500)
    XCTAssertGreaterThan(nonTissue, 100)
    // Deterministic for (seed, step, slot).
    XCTAssertEqual(s.example(step: 7, slot: 3).prefix, s.example(step: 7, slot: 3).prefix)
  }

  func testNonTissueAnswersSayNoTissue() throws {
    let (s, _, _) = try makeSampler()
    let tok = try Tokenizer.load(TestSupport.projectRoot + "/Tests/EosinTokenizerTests/Fixtures/small-bpe")
    var checked = 0
    for step in 0..<40 {
      for slot in 0..<32 where s.draw(step: step, slot: slot).nonTissue {
        let ex = s.example(step: step, slot: slot)
        let answer = tok.decode(zip(ex.ids, ex.targets).compactMap { $0.1 >= 0 ? $0.1 : nil })
        XCTAssertTrue(
          answer.lowercased().contains("no tissue") || answer.lowercased().contains("no interpretable tissue"), answer)
        checked += 1
      }
    }
    XCTAssertGreaterThan(checked, 50)
  }

  func testEmptyInputsAreClearErrors() throws {
    let tok = try Tokenizer.load(TestSupport.projectRoot + "/Tests/EosinTokenizerTests/Fixtures/small-bpe")
    XCTAssertThrowsError(
      try InstructionSampler(
        embeddings: [], labels: [], groups: [], nonTissue: [1, 2], nonTissueClass: 0, classes: [], dim: 2, tokenizer: tok))
    XCTAssertThrowsError(
      try InstructionSampler(
        embeddings: [1, 2], labels: [0], groups: ["g"], nonTissue: [], nonTissueClass: 0, classes: [], dim: 2, tokenizer: tok))
  }
}

import EosinPipelines
import Foundation
import TestSupport
import XCTest

final class SetThresholdTests: XCTestCase {
  /// A prompt set's own probability threshold applies to its verdicts only while its content is
  /// the one it was fitted for; an edited set, or another set, gets the pooled threshold. The
  /// manifest keeps it under `min_probability_by_set`.
  func testSetThresholdFollowsTheSetsContent() throws {
    let dirs = [TestSupport.projectRoot + "/Prompts/zero-shot"]
    let lung = try PromptSet.load("lung", searchDirs: dirs), prostate = try PromptSet.load("prostate", searchDirs: dirs)
    var t = ReviewThresholds()
    t.minProbability = 0.5
    t.minProbabilityBySet = [ReviewThresholds.key(for: lung): 0.8]
    XCTAssertEqual(t.minProbability(for: lung), 0.8)
    XCTAssertEqual(t.minProbability(for: prostate), 0.5)
    XCTAssertEqual(t.minProbability(for: nil), 0.5)
    var classes = lung.classes
    classes[0] = PromptClass(name: classes[0].name, synonyms: ["an edited synonym"])
    let edited = try PromptSet(name: "lung", classes: classes, templates: lung.templates, background: lung.background)
    XCTAssertEqual(t.minProbability(for: edited), 0.5)
    // The policy flags a 0.7 verdict of the lung set, not of the prostate set.
    let c = Confidence(probability: 0.7, margin: 0.5, promptSpread: 0, domain: 1)
    let p = ReviewPolicy(thresholds: t)
    XCTAssertTrue(
      p.flags(c, verdict: "x", runnerUp: nil, facts: InputFacts(), set: lung).contains { $0.code == "low-probability" })
    XCTAssertFalse(
      p.flags(c, verdict: "x", runnerUp: nil, facts: InputFacts(), set: prostate).contains { $0.code == "low-probability" })
    let json = String(decoding: try JSONEncoder().encode(t), as: UTF8.self)
    XCTAssertTrue(json.contains("\"min_probability_by_set\""), json)
    XCTAssertEqual(try JSONDecoder().decode(ReviewThresholds.self, from: Data(json.utf8)), t)
  }
}

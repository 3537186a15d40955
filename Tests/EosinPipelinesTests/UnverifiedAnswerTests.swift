import EosinSlide
import Foundation
import TestSupport
import XCTest

@testable import EosinPipelines

/// The review of hand-written answers through a real chat session (tiny random bundle): an
/// answer to a diagnostic question must name a class the classifier can check, or be flagged.
final class UnverifiedAnswerTests: XCTestCase {
  func testDiagnosticQuestions() {
    for q in ["What is the diagnosis?", "What does this show", "Diagnose this slide.", "What type of tumour is it?"] {
      XCTAssertTrue(ClaimGate.asksForDiagnosis(q), q)
    }
    for q in ["Is this malignant?", "Describe the features.", "What stain is this?", "What is a granuloma?"] {
      XCTAssertFalse(ClaimGate.asksForDiagnosis(q), q)
    }
  }

  /// "What is the diagnosis?" answered without naming a class is flagged `unverified-answer`,
  /// with the classifier's verdict in the reason; naming the verdict's class is not; a feature
  /// question answered without a class is not.
  func testAnswerWithoutACheckableDiagnosisIsFlagged() throws {
    let dir = try TestSupport.writeTinyBundle(at: TestSupport.tempDir("unverified"))
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let bundle = try ModelBundle(path: dir)
    let chat = try ChatModel(directory: dir + "/decoder", imageDim: bundle.clip.embedDim)
    let lung = try PromptSet.load("lung", searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"])
    let malignancy = try PromptSet.load("malignancy", searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"])
    let s = ChatSession(bundle: bundle, chat: chat, promptSets: [lung, malignancy], cacheDir: nil)
    s.load(AnalyzedSlide.images([TestSupport.syntheticHE(width: 64, height: 64)], names: ["tile"], bundle: bundle))
    let (clf, r) = try s.verdict(lung)
    let verdict = clf.classNames[r.verdict]
    func review(_ q: String, _ a: String) -> ChatAnswer {
      s.review(
        question: q, answer: a, set: lung, judgedBy: "test", classifier: clf, result: r, picks: [0], generator: 0.9,
        cancelled: false, general: false, extraFlags: [])
    }
    let vague = review("What is the diagnosis?", "The tissue shows some cells and a few glands.")
    let flag = try XCTUnwrap(vague.flags.first { $0.code == "unverified-answer" }, "\(vague.flags)")
    XCTAssertTrue(flag.reason.contains(verdict), flag.reason)
    let named = review("What is the diagnosis?", "The diagnosis is \(verdict).")
    XCTAssertFalse(named.flags.contains { $0.code == "unverified-answer" }, "\(named.flags)")
    // A claim the gate already checked (a malignancy-set class against the verdict, as in "The
    // diagnosis is colorectal cancer") is flagged as such, not as unverified.
    let claim = ClaimGate.polarity(ofClass: verdict) == true ? "This is benign tissue." : "This is a malignant tumour."
    let checked = review("What is the diagnosis?", claim)
    XCTAssertTrue(checked.flags.contains { $0.code == "inconsistent" }, "\(checked.flags)")
    XCTAssertFalse(checked.flags.contains { $0.code == "unverified-answer" }, "\(checked.flags)")
    let features = review("Describe the features.", "The tissue shows some cells and a few glands.")
    XCTAssertFalse(features.flags.contains { $0.code == "unverified-answer" }, "\(features.flags)")
  }
}

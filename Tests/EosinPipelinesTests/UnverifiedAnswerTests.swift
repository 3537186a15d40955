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

  /// The grounding checks on hand-written answers to general questions, with the passage the
  /// question retrieves: a faithful answer passes; one that does not mention the question's
  /// subject, one with a number the notes do not hold, and one in other words are flagged. A
  /// slide question's answer is not asked to repeat its subject words.
  func testGroundingOfGeneralAnswers() throws {
    let notes = try KnowledgeNotes(directories: [TestSupport.projectRoot + "/Prompts/notes"])
    let q = "What is a granuloma?"
    let p = try XCTUnwrap(notes.search(q, k: 1).first?.0)
    func codes(_ a: String, _ question: String = q, slide: String? = nil) -> [String] {
      ChatSession.groundingFlags(answer: a, question: question, passages: [p], slideFacts: slide).map(\.code)
    }
    XCTAssertEqual(
      codes("A granuloma is an organised collection of activated macrophages (epithelioid histiocytes)."), [])
    XCTAssertEqual(codes("Eosin, a careful assistant for pathologists."), ["off-question", "unsupported-by-notes"])
    XCTAssertEqual(codes("A granuloma is a collection of 102 activated macrophages."), ["unsupported-number"])
    XCTAssertEqual(codes("A granuloma is a rare bone cancer of children treated by surgery."), ["unsupported-by-notes"])
    XCTAssertEqual(codes("", q), [])
    // One sentence that adds an unsupported claim to a faithful answer is quoted.
    let spread = ChatSession.groundingFlags(
      answer:
        "A granuloma is a compact, organised collection of activated macrophages (epithelioid histiocytes), often with multinucleated giant cells and a rim of lymphocytes. It then spreads quickly to distant parts of the whole body.",
      question: q, passages: [p], slideFacts: nil)
    XCTAssertEqual(spread.map(\.code), ["unsupported-sentence"])
    XCTAssertTrue(spread[0].reason.hasPrefix("\"It then spreads quickly to distant parts of the whole body\""), spread[0].reason)
    // For a slide question the slide's facts count as context, and its subject words need not recur.
    XCTAssertEqual(
      codes("The tiles show macrophages in 50 tiles.", "What does this slide show?", slide: "The open slide: 50 tiles."), [])
    // An answer that only restates a general question; a slide answer may be short.
    let scar = "What is scarring inside an organ called?"
    XCTAssertTrue(codes("Scarring inside an organ is called scarring.", scar).contains("restates-question"))
    XCTAssertFalse(
      codes("Scarring inside an organ is called fibrosis, collagen-rich scar tissue.", scar).contains("restates-question"))
    XCTAssertFalse(codes("Yes, it is malignant.", "Is this malignant?", slide: "malignant").contains("restates-question"))
  }

  /// How well a passage matches a general question, weighted by how rare each word is: a
  /// passage found for the question's common words only ("tissue" in the biopsy note for a
  /// question about dead tissue in the womb) is a weak match, flagged with the words it leaves
  /// out, rarest first, and the answer's confidence falls with it.
  func testWeakMatchOfNotes() throws {
    let notes = try KnowledgeNotes(directories: [
      TestSupport.projectRoot + "/Prompts/knowledge", TestSupport.projectRoot + "/Prompts/notes",
    ])
    let byId = Dictionary(uniqueKeysWithValues: notes.passages.map { ($0.source, $0) })
    let granuloma = try XCTUnwrap(byId["general.json#granuloma"]), biopsy = try XCTUnwrap(byId["general.json#biopsy"])
    XCTAssertEqual(notes.match(of: "What is a granuloma?", by: granuloma).share, 1, accuracy: 1e-9)
    let dead = "What does dead tissue in the womb look like?"
    let weak = notes.match(of: dead, by: biopsy)
    XCTAssertLessThan(weak.share, 0.5)
    XCTAssertEqual(weak.missing, ["dead", "womb"])
    XCTAssertNil(ChatSession.matchFlag("What is a granuloma?", granuloma, notes).flag)
    let (share, flag) = ChatSession.matchFlag(dead, biopsy, notes)
    XCTAssertEqual(Double(share), weak.share, accuracy: 1e-6)
    let f = try XCTUnwrap(flag)
    XCTAssertEqual(f.code, "weak-match")
    XCTAssertTrue(f.reason.contains("general.json#biopsy") && f.reason.contains("\"dead\""), f.reason)
    // A question the answer opens by repeating counts for nothing.
    XCTAssertEqual(
      ChatSession.withoutEcho("Why is my biopsy purple?\nThe answer lies in a biopsy.", "Why is my biopsy purple?"),
      "The answer lies in a biopsy.")
    XCTAssertEqual(ChatSession.withoutEcho("A biopsy is a sample.", "What is a biopsy?"), "A biopsy is a sample.")
    // An answer must mention the question's most specific word, or an inflection of it.
    let caseating = "What causes caseating granulomas?"
    XCTAssertEqual(notes.mostSpecificWord(of: caseating), "caseating")
    let partial = ChatSession.partialAnswerFlag(
      answer: "A granuloma is a compact collection of activated macrophages.", question: caseating, notes: notes)
    XCTAssertEqual(partial?.code, "partial-answer")
    XCTAssertTrue(partial?.reason.contains("\"caseating\"") == true, partial?.reason ?? "")
    XCTAssertNil(
      ChatSession.partialAnswerFlag(
        answer: "Caseating granulomas suggest tuberculosis.", question: caseating, notes: notes))
    XCTAssertTrue(KnowledgeNotes.mentions(["graded", "breast"], "grade"))
    XCTAssertFalse(KnowledgeNotes.mentions(["caseous"], "caseating"))
    // Without any subject word there is nothing to match.
    XCTAssertEqual(notes.match(of: "What is it?", by: granuloma).share, 0)
  }

  /// Word tokens for retrieval and the gate: lower-cased letters and digits, ASCII or not, stop
  /// words out, a plural "s" dropped.
  func testWordTokens() {
    XCTAssertEqual(
      KnowledgeNotes.words("What are the Aβ plaques in Hücre-3 (ÉTOILE) cells?"),
      ["aβ", "plaque", "hücre", "étoile", "cell"])
    XCTAssertEqual(KnowledgeNotes.words("Gleason 3+4=7, glass; analysis"), ["gleason", "glass", "analysis"])
    XCTAssertEqual(KnowledgeNotes.words("Tumor cells, tumors and edema"), ["tumour", "cell", "tumour", "oedema"])
  }

  /// A diagnosis judged against a set Eosin guessed is flagged `organ-unconfirmed`; once a
  /// question names the organ, that set judges (and is remembered for the slide's later
  /// questions), so the flag goes; opening another slide forgets it.
  func testGuessedOrganIsFlaggedUntilTheOrganIsNamed() throws {
    let dir = try TestSupport.writeTinyBundle(at: TestSupport.tempDir("organ-unconfirmed"))
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let bundle = try ModelBundle(path: dir)
    let chat = try ChatModel(directory: dir + "/decoder", imageDim: bundle.clip.embedDim)
    let sets = try ["lung", "prostate"].map {
      try PromptSet.load($0, searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"])
    }
    let s = ChatSession(bundle: bundle, chat: chat, promptSets: sets, cacheDir: nil)
    let tile = AnalyzedSlide.images([TestSupport.syntheticHE(width: 64, height: 64)], names: ["tile"], bundle: bundle)
    s.load(tile)
    let guessed = try s.choosePromptSet(for: "What is the diagnosis?")
    XCTAssertTrue(guessed.guessed)
    func review(_ q: String, _ set: PromptSet, guessed: Bool) throws -> ChatAnswer {
      let (clf, r) = try s.verdict(set)
      return s.review(
        question: q, answer: "The diagnosis is \(clf.classNames[r.verdict]).", set: set, judgedBy: "test", organGuessed: guessed,
        classifier: clf, result: r, picks: [0], generator: 0.9, cancelled: false, general: false, extraFlags: [])
    }
    let a = try review("What is the diagnosis?", guessed.set, guessed: true)
    let flag = try XCTUnwrap(a.flags.first { $0.code == "organ-unconfirmed" }, "\(a.flags)")
    XCTAssertTrue(flag.reason.contains(guessed.set.name), flag.reason)
    let named = try s.choosePromptSet(for: "What is the diagnosis in this prostate biopsy?")
    XCTAssertEqual(named.set.name, "prostate")
    XCTAssertFalse(named.guessed)
    let b = try review("What is the diagnosis in this prostate biopsy?", named.set, guessed: named.guessed)
    XCTAssertFalse(b.flags.contains { $0.code == "organ-unconfirmed" }, "\(b.flags)")
    // Choosing a set is no question: only asking one remembers the organ.
    XCTAssertTrue(try s.choosePromptSet(for: "What is the grade?").guessed)
    _ = try s.ask("What is the diagnosis in this prostate biopsy?")
    let later = try s.choosePromptSet(for: "What is the grade?")
    XCTAssertEqual(later.set.name, "prostate")
    XCTAssertFalse(later.guessed)
    s.load(tile)
    XCTAssertTrue(try s.choosePromptSet(for: "What is the grade?").guessed)
  }
}

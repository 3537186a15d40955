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

  /// Guards which questions get the feature opening: questions about what the tissue looks
  /// like, not yes/no questions about features nor diagnosis questions.
  func testFeatureQuestions() {
    for q in [
      "Describe the features.", "What features do these tiles show?", "Which findings support the diagnosis here?",
      "What does the morphology look like?",
    ] {
      XCTAssertTrue(ClaimGate.asksForFeatures(q), q)
    }
    for q in ["Are there worrying features?", "What is the diagnosis?", "Is this malignant?", "What stain is this?"] {
      XCTAssertFalse(ClaimGate.asksForFeatures(q), q)
    }
  }

  /// Guards yes/no questions about a diagnosis that is none of the set's classes: found (not
  /// for a class, a term a class holds, or a question that is not yes/no), and flagged
  /// `unchecked-diagnosis` whatever the answer says; "sarcoma" once got Eosin's own "Yes."
  /// because it is a malignant word.
  func testOtherDiagnosisQuestions() throws {
    let sets = try ["lung", "prostate"].map {
      try PromptSet.load($0, searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"])
    }
    let (lung, prostate) = (sets[0], sets[1])
    let cases: [(String, PromptSet, String?)] = [
      ("Is there any sarcoma here?", lung, "sarcoma"), ("Could this be a melanoma?", lung, "melanoma"),
      ("Is this a lymphoma?", lung, "lymphoma"), ("Is this Gleason pattern 4?", lung, "gleason"),
      ("Is this Gleason pattern 4?", prostate, nil), ("Is this a carcinoma?", lung, nil),
      ("Is this an adenocarcinoma?", lung, nil), ("Is this malignant?", lung, nil), ("What is a lymphoma?", lung, nil),
      ("Is there necrosis here?", lung, nil),
    ]
    for (q, set, want) in cases { XCTAssertEqual(ClaimGate.askedOtherDiagnosis(q, set), want, "\(q) (\(set.name))") }
    let (s, dir) = try tileSession("other-diagnosis", sets: ["lung"])
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (clf, r) = try s.verdict(lung)
    for answer in ["Yes.", "No.", "Eosin cannot tell."] {
      let a = s.review(
        question: "Is there any sarcoma here?", answer: answer, set: lung, judgedBy: "test", classifier: clf, result: r,
        picks: [0], generator: 0.9, cancelled: false, general: false, extraFlags: [])
      let flag = try XCTUnwrap(a.flags.first { $0.code == "unchecked-diagnosis" }, "\(answer): \(a.flags)")
      XCTAssertTrue(flag.reason.contains("\"sarcoma\""), flag.reason)
    }
  }

  /// A chat session on the tiny random bundle (written to a new folder, returned for removal)
  /// with one synthetic H&E tile open, judged by the named prompt sets.
  func tileSession(_ name: String, sets: [String]) throws -> (ChatSession, String) {
    let dir = try TestSupport.writeTinyBundle(at: TestSupport.tempDir(name))
    let bundle = try ModelBundle(path: dir)
    let chat = try ChatModel(directory: dir + "/decoder", imageDim: bundle.clip.embedDim)
    let promptSets = try sets.map { try PromptSet.load($0, searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"]) }
    let s = ChatSession(bundle: bundle, chat: chat, promptSets: promptSets, cacheDir: nil)
    s.load(AnalyzedSlide.images([TestSupport.syntheticHE(width: 64, height: 64)], names: ["tile"], bundle: bundle))
    return (s, dir)
  }

  /// "What is the diagnosis?" answered without naming a class is flagged `unverified-answer`,
  /// with the classifier's verdict in the reason; naming the verdict's class is not; a feature
  /// question answered without a class is not.
  func testAnswerWithoutACheckableDiagnosisIsFlagged() throws {
    let (s, dir) = try tileSession("unverified", sets: ["lung", "malignancy"])
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let lung = s.promptSets[0]
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

  /// Guards the questions the open input's facts answer: each kind is recognised, questions
  /// that do not point at the slide or ask something else are not, and the answers (a slide
  /// written here, and a set of images) state the facts, carry confidence 1 and no flag, and
  /// name no diagnosis. Before, "How many tiles are there?" and "What stain is this?" got the
  /// classifier's verdict.
  func testSlideFactQuestions() throws {
    let kinds: [(String, SlideFactQuestion?)] = [
      ("How many tiles are there?", .tiles), ("How many images are in this case?", .tiles),
      ("What magnification is this?", .resolution), ("What is the resolution of this slide?", .resolution),
      ("What is the magnification?", .resolution), ("How big is this slide?", .size),
      ("How much tissue is on this slide?", .tissue), ("What stain is this?", .stain), ("Is this stained with H&E?", .stain),
      ("Which scanner made this slide?", .file),
      ("What is the diagnosis?", nil), ("Is this malignant?", nil), ("Describe the features.", nil),
      ("What stain shows amyloid?", nil), ("What magnification is used to count mitoses?", nil),
      ("What is the capital of France?", nil), ("How many mitoses are there per 10 high-power fields?", nil),
    ]
    for (q, want) in kinds { XCTAssertEqual(SlideFactQuestion.of(q), want, q) }

    let dir = try TestSupport.writeTinyBundle(at: TestSupport.tempDir("facts"))
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let bundle = try ModelBundle(path: dir)
    let chat = try ChatModel(directory: dir + "/decoder", imageDim: bundle.clip.embedDim)
    let lung = try PromptSet.load("lung", searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"])
    let s = ChatSession(bundle: bundle, chat: chat, promptSets: [lung], cacheDir: nil)
    let slide = try TestSupport.writeSyntheticSlide(at: dir + "/facts.tiff", width: 2048, height: 1536, levels: 2, mpp: 0.25)
    try s.open([slide])
    let n = try XCTUnwrap(s.embeddings).tiles.count
    XCTAssertGreaterThan(n, 0)
    var streamed = ""
    let tiles = try s.ask("How many tiles are there?") {
      streamed += $0; return true
    }
    XCTAssertTrue(tiles.text.hasPrefix("The slide gives \(n) tiles"), tiles.text)
    XCTAssertTrue(
      streamed.hasPrefix(tiles.text) && streamed.contains("(Source: the slide's facts, as Eosin recorded them)"), streamed)
    XCTAssertEqual(tiles.flags.map(\.code), [])
    XCTAssertEqual(tiles.shownConfidence, 1)
    XCTAssertEqual(tiles.source, "the slide's facts, as Eosin recorded them")
    XCTAssertEqual(tiles.verdict, "-")
    let res = try s.ask("What magnification is this?")
    XCTAssertTrue(res.text.contains("0.250 µm per pixel") && res.text.contains("about 40x"), res.text)
    XCTAssertTrue(try s.ask("How big is this slide?").text.contains("2048 x 1536 px at full resolution, 0.5 x 0.4 mm"))
    let stain = try s.ask("What stain is this?")
    XCTAssertTrue(stain.text.hasPrefix("Eosin does not identify stains."), stain.text)
    for a in [tiles, res, stain] { XCTAssertFalse(ClaimGate.namesDiagnosis(a.text), a.text) }

    // "Where is ...?" is answered from the classifier's tile probabilities, its tiles the evidence.
    for q in ["Where is the tumour?", "Which tiles show the carcinoma?", "Where on this slide is the adenocarcinoma?"] {
      XCTAssertTrue(SlideLocationQuestion.asks(q), q)
    }
    for q in [
      "Where does this tumour come from?", "Where do lung adenocarcinomas arise?", "What is the diagnosis?",
      "How do antibodies help find out where a cancer came from?",
    ] {
      XCTAssertFalse(SlideLocationQuestion.asks(q), q)
    }
    XCTAssertEqual(ClaimGate.namedClass("Which tiles look most like squamous carcinoma?", lung), "lung squamous cell carcinoma")
    // A where-question that names an organ without pointing at the slide is general.
    XCTAssertFalse(ClaimGate.isAboutSlide("Where does prostate cancer spread?"))
    XCTAssertTrue(ClaimGate.isAboutSlide("Where is the tumour in this prostate biopsy?"))
    let whereA = try s.ask("Where is the lung adenocarcinoma?")
    XCTAssertTrue(whereA.text.contains("The tiles most like lung adenocarcinoma (classifier probability): ("), whereA.text)
    XCTAssertTrue(whereA.text.hasSuffix("of \(n) tiles reach 0.5."), whereA.text)
    XCTAssertEqual(whereA.evidence.count, min(5, n))
    XCTAssertEqual(whereA.promptSet, "lung")
    XCTAssertEqual(whereA.source, "the classifier's tile probabilities, lung set")
    // Listing the tiles of a class the verdict is not says the verdict first, and claims nothing
    // against it.
    if whereA.verdict != "lung adenocarcinoma" {
      XCTAssertTrue(whereA.text.hasPrefix("The classifier calls the slide \(whereA.verdict) (probability "), whereA.text)
    }
    XCTAssertFalse(whereA.flags.contains { ["inconsistent", "self-contradiction"].contains($0.code) }, "\(whereA.flags)")
    // "How sure are you?" reports the last answer's confidence and review, and leaves it the last.
    let sure = try s.ask("How sure are you?")
    XCTAssertTrue(sure.text.hasPrefix("The last answer (to \"Where is the lung adenocarcinoma?\") had confidence"), sure.text)
    XCTAssertEqual(s.lastAnswer?.question, "Where is the lung adenocarcinoma?")
    XCTAssertTrue(ChatSession.asksHowSure("Can I trust that?"))
    XCTAssertFalse(ChatSession.asksHowSure("Is this surely cancer?"))
    // "What should be done next?" gets the next steps of Eosin's note on the verdict's class.
    XCTAssertTrue(NextStepsQuestion.asks("What should be done next for this patient?"))
    XCTAssertTrue(NextStepsQuestion.asks("What are the next steps?"))
    XCTAssertTrue(NextStepsQuestion.asks("What should be done next?"))
    XCTAssertFalse(NextStepsQuestion.asks("What is the next step when a screening test is positive?"))
    XCTAssertFalse(NextStepsQuestion.asks("What is the diagnosis?"))
    s.notes = try KnowledgeNotes(directories: [TestSupport.projectRoot + "/Prompts/knowledge"])
    let next = try s.ask("What should be done next for this patient?")
    XCTAssertTrue(next.text.hasPrefix("The classifier calls it \(next.verdict) (probability "), next.text)
    XCTAssertTrue(next.text.contains(". For that, Eosin's note gives these next steps: "), next.text)
    XCTAssertTrue(next.source?.hasPrefix("Eosin's notes, ") ?? false, "\(String(describing: next.source))")
    XCTAssertFalse(
      next.flags.contains { ["inconsistent", "unsupported-claim", "off-question"].contains($0.code) }, "\(next.flags)")
    s.load(AnalyzedSlide.images([TestSupport.syntheticHE(width: 64, height: 64)], names: ["tile.png"], bundle: bundle))
    XCTAssertEqual(try s.ask("How many tiles are there?").text, "1 image is open (tile.png); Eosin takes each image as one tile.")
    XCTAssertTrue(try s.ask("What magnification is this?").text.hasPrefix("Image files carry no resolution"))
  }

  /// Guards yes/no questions the classifier cannot settle ("Is there necrosis here?", once
  /// answered "Yes." unflagged at the verdict's confidence): recognised with their subject, and
  /// any answer to one is flagged `unchecked-finding`; questions about a class, a polarity, a
  /// grade or an organ are not such questions.
  func testUncheckedFindingsAreFlagged() throws {
    let lung = try PromptSet.load("lung", searchDirs: [TestSupport.projectRoot + "/Prompts/zero-shot"])
    XCTAssertEqual(ClaimGate.uncheckedFinding("Is there necrosis here?", lung), "necrosis")
    XCTAssertEqual(ClaimGate.uncheckedFinding("Are there mitoses in these tiles?", lung), "mitoses")
    XCTAssertEqual(ClaimGate.uncheckedFinding("Does this show vascular invasion?", lung), "vascular invasion")
    for q in [
      "Is this malignant?", "Is this an adenocarcinoma?", "Is this benign?", "Is it squamous?", "Is this high grade?",
      "Is this lung tissue?", "Is there tissue here?", "Is this melanoma?", "Are you sure?", "What is the diagnosis?",
      "Is there a tumour here?", "Isn't there necrosis here?",
    ] {
      XCTAssertNil(ClaimGate.uncheckedFinding(q, lung), q)
    }
    for answer in ["Yes. The classifier calls it lung squamous cell carcinoma.", "No.", "Eosin cannot tell."] {
      let (flags, _) = ClaimGate.check(
        answer: answer, question: "Is there necrosis here?", verdict: "lung squamous cell carcinoma", verdictSet: lung,
        otherSets: [lung])
      let f = try XCTUnwrap(flags.first { $0.code == "unchecked-finding" }, answer)
      XCTAssertTrue(f.reason.contains("\"necrosis\""), f.reason)
    }
    let (flags, _) = ClaimGate.check(
      answer: "Yes. The classifier calls it lung squamous cell carcinoma.", question: "Is this malignant?",
      verdict: "lung squamous cell carcinoma", verdictSet: lung, otherSets: [lung])
    XCTAssertEqual(flags.map(\.code), [])
  }

  /// Guards answers that ignore a slide question that is not diagnostic: flagged `off-question`
  /// naming the question's subject; an answer that takes it up, or a request any account of the
  /// slide answers, is not.
  func testAnswerThatIgnoresASlideQuestion() throws {
    let verdict = "The classifier calls it lung squamous cell carcinoma (probability 0.96)."
    let ignored = try XCTUnwrap(
      ChatSession.offSlideQuestionFlag(
        answer: verdict + " It is a malignant tumor that has characteristics of epithelial and cellular.",
        question: "What should be done next for this patient?"))
    XCTAssertEqual(ignored.code, "off-question")
    XCTAssertTrue(ignored.reason.hasSuffix("(done, next, patient)"), ignored.reason)
    XCTAssertNotNil(ChatSession.offSlideQuestionFlag(answer: verdict, question: "Write a poem about this slide."))
    XCTAssertNil(
      ChatSession.offSlideQuestionFlag(
        answer: verdict + " Its typical features are sheets and nests of polygonal tumour cells.",
        question: "Describe the features of this tissue."))
    XCTAssertNil(ChatSession.offSlideQuestionFlag(answer: verdict, question: "Summarise this slide."))
    // A Gleason pattern answers a question about the grade; a verdict without one does not.
    XCTAssertNil(
      ChatSession.offSlideQuestionFlag(
        answer: "The classifier calls it prostate adenocarcinoma Gleason pattern 3 (probability 0.81).",
        question: "What grade is this?"))
    XCTAssertNotNil(ChatSession.offSlideQuestionFlag(answer: verdict, question: "What grade is this?"))
    XCTAssertNil(ChatSession.offSlideQuestionFlag(answer: verdict, question: "What is going on here?"))
    XCTAssertNil(
      ChatSession.offSlideQuestionFlag(
        answer: "Keratinisation with keratin pearls marks it as squamous.", question: "Is there keratinization here?"))
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

extension UnverifiedAnswerTests {
  /// Guards the grounded turn's layout: with slide tokens the verdict class's note leads the user
  /// turn (the cached `lead`, the same for every question on the slide), then the question's
  /// passage, the slide marker and the question; without slide tokens there is no lead and the
  /// verdict's note is last, next to the question; a general question has neither.
  func testGroundedTurnLeadsWithTheVerdictNoteOnlyWithSlideTokens() throws {
    let (s, dir) = try tileSession("turn-layout", sets: ["lung"])
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let notes = try KnowledgeNotes(directories: [
      TestSupport.projectRoot + "/Prompts/knowledge", TestSupport.projectRoot + "/Prompts/notes",
    ])
    let q = "What is a granuloma, and what does this lung tissue show?"
    let with = try s.groundedTurn(q, notes: notes, slideTokens: true)
    let verdict = try XCTUnwrap(with.verdictName)
    let note = try XCTUnwrap(notes.passage(forClass: verdict)?.0)
    XCTAssertEqual(with.classNote, note)
    XCTAssertEqual(with.lead, "Notes:\n- \(note.text)\n")
    XCTAssertTrue(with.user.hasPrefix(with.lead), with.user)
    XCTAssertNotNil(with.slideInputs)
    let marker = try XCTUnwrap(with.user.range(of: ChatSession.slideMarker))
    XCTAssertTrue(with.user[marker.upperBound...].hasSuffix("Using the notes, answer: " + q), with.user)
    XCTAssertEqual(
      try s.groundedTurn("Describe the features of this lung tissue.", notes: notes, slideTokens: true).lead, with.lead)
    let without = try s.groundedTurn(q, notes: notes, slideTokens: false)
    XCTAssertEqual(without.lead, "")
    XCTAssertNil(without.slideInputs)
    XCTAssertTrue(without.user.hasSuffix("- \(note.text)\n\nUsing the notes, answer: " + q), without.user)
    let general = try s.groundedTurn("What is a granuloma?", notes: notes, slideTokens: true)
    XCTAssertFalse(general.about)
    XCTAssertEqual(general.lead, "")
    XCTAssertFalse(general.user.contains(ChatSession.slideMarker))
  }
}

import EosinPipelines
import Foundation
import TestSupport
import XCTest

/// The grounded chat's pieces: retrieval over Eosin's notes and the claim gate, on hand-written
/// answers (the language model's own text is not needed to decide a flag).
final class GroundedChatTests: XCTestCase {
  static let root = TestSupport.projectRoot

  func lungSet() throws -> PromptSet { try PromptSet.load("lung", searchDirs: [Self.root + "/Prompts/zero-shot"]) }
  func otherSets() throws -> [PromptSet] {
    try ["lung", "colorectal", "malignancy"].map { try PromptSet.load($0, searchDirs: [Self.root + "/Prompts/zero-shot"]) }
  }

  /// Guards retrieval: general questions find the right note; an unrelated one finds nothing.
  func testNotesRetrieval() throws {
    let notes = try KnowledgeNotes(directories: [Self.root + "/Prompts/knowledge", Self.root + "/Prompts/notes"])
    XCTAssertGreaterThanOrEqual(notes.passages.count, 30)
    XCTAssertEqual(notes.search("What is a granuloma?").first?.0.source, "general.json#granuloma")
    XCTAssertEqual(notes.search("How is the Gleason score calculated?").first?.0.source, "general.json#gleason")
    XCTAssertEqual(notes.search("What does squamous cell carcinoma of the lung look like?").first?.0.source, "lung.json#lung_scc")
    XCTAssertTrue(notes.search("What is the capital of France?").isEmpty)
    XCTAssertTrue(notes.search("florp zibble quantum banana?").isEmpty)
  }

  /// Guards the verdict's citation: every class of every prompt set that has a knowledge passage
  /// cites its own passage, never a sibling sharing most of its words (a Gleason pattern 3
  /// verdict once cited the pattern 4 note, which BM25 ranked first on "3").
  func testVerdictCitesItsOwnClassNote() throws {
    let notes = try KnowledgeNotes(directories: [Self.root + "/Prompts/knowledge", Self.root + "/Prompts/notes"])
    XCTAssertEqual(notes.passage(forClass: "prostate adenocarcinoma Gleason pattern 3")?.0.source, "prostate.json#prostate_g3")
    XCTAssertEqual(notes.passage(forClass: "Prostate Adenocarcinoma Gleason Pattern 4")?.0.source, "prostate.json#prostate_g4")
    let classes = notes.passages.filter { $0.source.contains("#") && !$0.source.hasPrefix("general.json") }
    var checked = 0
    let dir = Self.root + "/Prompts/zero-shot"
    for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".json") {
      for c in try PromptSet.load(dir + "/" + name).classes {
        guard let own = classes.first(where: { $0.title.lowercased() == c.name.lowercased() }) else { continue }
        XCTAssertEqual(notes.passage(forClass: c.name)?.0, own, "\(name): \(c.name)")
        checked += 1
      }
    }
    XCTAssertGreaterThanOrEqual(checked, 10)
    // A name no class carries still finds the nearest passage, from Eosin's notes only.
    XCTAssertNotNil(notes.passage(forClass: "squamous cell carcinoma of the lung"))
  }

  /// Lecture notes cut into passages: English lectures in passages of about the asked length,
  /// each titled (from the file name where the title is a placeholder), figure credits,
  /// citations and markup left out; a Turkish lecture skipped; a damaged line named.
  func testLectureNotesImport() throws {
    let dir = TestSupport.tempDir("eosin-lectures")
    let body = (1...30).map { "Line \($0) about amyloid deposits in tissue" }.joined(separator: "\n")
    let lines = [
      [
        "file": "amyloidosis.qmd", "title": "Title",
        "text":
          "Amyloidosis\n<span style=\"x\">Congo red</span> shows apple-green birefringence\nSmith, et al. J Path 2012\nAtlas of Autopsy Pathology, Figure 3\n"
          + body,
      ],
      [
        "file": "hucre-patolojisi.qmd", "title": "Hücre",
        "text": "Hücre hasarı ve ölüm; ışık mikroskobu; değişiklikler ğ ş ı " + body,
      ],
    ].map { String(decoding: try! JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
    try lines.joined(separator: "\n").write(toFile: dir + "/notes.jsonl", atomically: true, encoding: .utf8)
    let out = try KnowledgeNotes.lectureNotes(jsonl: dir + "/notes.jsonl", collection: "test atlas (CC BY 4.0)", words: 60)
    let notes = try XCTUnwrap(out["notes"] as? [[String: String]])
    XCTAssertEqual(notes.map { $0["id"] }, ["amyloidosis-1", "amyloidosis-2", "amyloidosis-3", "amyloidosis-4"])
    XCTAssertTrue(notes.allSatisfy { $0["title"] == "Amyloidosis" })
    let first = try XCTUnwrap(notes.first?["text"])
    XCTAssertTrue(first.hasPrefix("Amyloidosis: Congo red shows apple-green birefringence; Line 1 about"), first)
    for junk in ["<span", "et al", "Figure", "Hücre"] { XCTAssertFalse(notes.contains { $0["text"]!.contains(junk) }, junk) }
    try "{\"file\": \"a.qmd\"}\nnot json\n".write(toFile: dir + "/bad.jsonl", atomically: true, encoding: .utf8)
    XCTAssertThrowsError(try KnowledgeNotes.lectureNotes(jsonl: dir + "/bad.jsonl", collection: "x")) { e in
      XCTAssertTrue(
        e.localizedDescription.contains("bad.jsonl") && e.localizedDescription.contains("line 1"), e.localizedDescription)
    }
  }

  /// Imported reference text backs Eosin's notes up: it answers what they do not cover, or
  /// cover only in part, when one of its passages holds every word of the question; it never
  /// outranks a note that covers the question; off-topic questions that share one word with it
  /// find nothing. Citations name the collection.
  func testImportedNotesAreAFallback() throws {
    let dir = TestSupport.tempDir("eosin-imported")
    let imported: [String: Any] = [
      "collection": "test atlas (CC BY 4.0)",
      "notes": [
        [
          "id": "amyloid-1", "title": "Amyloidosis",
          "text":
            "Amyloidosis: amyloid is an extracellular fibrillar protein; Congo red stain gives apple-green birefringence under polarised light.",
        ],
        [
          "id": "pericarditis-1", "title": "Pericarditis",
          "text": "Pericarditis: fibrinous bread-and-butter pericarditis after infarction.",
        ],
        ["id": "granuloma-1", "title": "Granuloma", "text": "Granuloma: a granuloma in tuberculosis with caseous necrosis."],
      ]
        + ["atelectasis", "bronchiectasis", "emphysema", "asthma", "silicosis"].map {
          ["id": $0, "title": $0, "text": "\($0): a lung disease."]
        },
    ]
    try JSONSerialization.data(withJSONObject: imported).write(to: URL(fileURLWithPath: dir + "/atlas.json"))
    let notes = try KnowledgeNotes(
      directories: [Self.root + "/Prompts/knowledge", Self.root + "/Prompts/notes"], fallback: [dir])
    XCTAssertEqual(notes.allPassages.count, notes.passages.count + 8)
    let amyloid = try XCTUnwrap(notes.search("Which stain shows amyloid?").first?.0)
    XCTAssertEqual(amyloid.source, "atlas.json#amyloid-1")
    XCTAssertEqual(amyloid.collection, "test atlas (CC BY 4.0)")
    XCTAssertEqual(notes.search("What is a granuloma?").first?.0.source, "general.json#granuloma")
    XCTAssertEqual(notes.search("What is a granuloma?").first?.0.collection, "Eosin's notes")
    for offTopic in ["How do I bake bread?", "What is the speed of light?", "What is the capital of France?"] {
      XCTAssertTrue(notes.search(offTopic).isEmpty, offTopic)
    }
  }

  /// Guards the gate's decisions on a benign lung verdict: a contradicting diagnosis, an
  /// unsupported one, wrong polarity and another organ's class are flagged with the claim
  /// quoted; an agreeing answer and a negated claim are not.
  func testClaimGateOnSlideQuestions() throws {
    let set = try lungSet(), others = try otherSets()
    func check(_ a: String) -> ([ReviewFlag], Bool?) {
      let r = ClaimGate.check(
        answer: a, question: "What is this?", verdict: "benign lung tissue", verdictSet: set, otherSets: others)
      return (r.flags, r.consistent)
    }
    var (f, c) = check("The tiles show lung adenocarcinoma with acinar glands.")
    XCTAssertEqual(f.first?.code, "inconsistent")
    XCTAssertTrue(f.first!.reason.contains("The tiles show lung adenocarcinoma with acinar glands"), f.first!.reason)
    XCTAssertEqual(c, false)
    (f, c) = check("Benign alveoli. The nests are melanoma.")
    XCTAssertTrue(f.contains { $0.code == "unsupported-claim" && $0.reason.contains("The nests are melanoma") }, "\(f)")
    (f, c) = check("This is a malignant process.")
    XCTAssertTrue(f.contains { $0.code == "wrong-polarity" }, "\(f)")
    (f, c) = check("The findings are consistent with colorectal adenocarcinoma.")
    XCTAssertTrue(f.contains { $0.code == "inconsistent" || $0.code == "unsupported-claim" }, "\(f)")
    XCTAssertEqual(c, false)
    (f, c) = check("This is benign lung tissue with thin alveolar walls.")
    XCTAssertEqual(f, [])
    XCTAssertEqual(c, true)
    (f, c) = check("There is no malignancy and no carcinoma.")
    XCTAssertEqual(f, [])
  }

  /// A bare yes or no to a question about one polarity is a claim: "Yes" to "Is this benign?"
  /// on a carcinoma verdict is flagged with the question quoted, "Yes" to "Is it cancer?" on a
  /// benign one too; agreeing answers and negated questions are not, and a yes to a question
  /// about neither is no polarity claim (it is an unchecked finding).
  func testClaimGateYesNoPolarity() throws {
    let set = try lungSet(), others = try otherSets()
    func codes(_ a: String, _ q: String, _ v: String) -> [String] {
      ClaimGate.check(answer: a, question: q, verdict: v, verdictSet: set, otherSets: others).flags.map(\.code)
    }
    let scc = "lung squamous cell carcinoma", benign = "benign lung tissue"
    let yes = "Yes. The classifier calls it lung squamous cell carcinoma (probability 0.86)."
    XCTAssertEqual(codes(yes, "Is this benign?", scc), ["wrong-polarity"])
    let r = ClaimGate.check(answer: yes, question: "Is this benign?", verdict: scc, verdictSet: set, otherSets: others)
    XCTAssertEqual(r.consistent, false)
    XCTAssertTrue(r.flags[0].reason.hasPrefix("\"Yes\" to \"Is this benign?\" calls it benign"), r.flags[0].reason)
    XCTAssertEqual(codes("Yes, it is.", "Is it cancer?", benign), ["wrong-polarity"])
    XCTAssertEqual(codes("No, it is lung tissue.", "Is it cancer?", benign), [])
    XCTAssertEqual(codes("Yes.", "Is this cancer?", scc), [])
    XCTAssertEqual(codes("No.", "Is this malignant?", benign), [])
    XCTAssertEqual(codes("Yes.", "Is this normal tissue?", benign), [])
    XCTAssertEqual(codes("Yes.", "Isn't this benign?", scc), [])
    // Not about a polarity, and nothing the classifier checks (chat answers it from the slide's
    // facts instead).
    XCTAssertEqual(codes("Yes.", "Is this an H&E stain?", scc), ["unchecked-finding"])
    XCTAssertNil(ClaimGate.answeredPolarity(question: "Is it benign or malignant?", answer: "Yes"))
    XCTAssertEqual(ClaimGate.answeredPolarity(question: "Is it healthy?", answer: "no")?.malignant, true)
  }

  /// A yes/no question that names one class is answered by the class, not by its polarity:
  /// "Yes" to "Is this an adenocarcinoma?" on a squamous cell carcinoma (both malignant) is
  /// flagged, "No" to it on an adenocarcinoma too; the right yes or no, and questions that name
  /// only a polarity or several classes, are left to the polarity check.
  func testClaimGateYesNoClass() throws {
    let set = try lungSet(), others = try otherSets()
    let prostate = try PromptSet.load("prostate", searchDirs: [Self.root + "/Prompts/zero-shot"])
    XCTAssertEqual(ClaimGate.askedClass("Is this an adenocarcinoma?", set), "lung adenocarcinoma")
    XCTAssertEqual(ClaimGate.askedClass("Is it squamous?", set), "lung squamous cell carcinoma")
    XCTAssertEqual(ClaimGate.askedClass("Is this a pulmonary adenocarcinoma?", set), "lung adenocarcinoma")
    XCTAssertNil(ClaimGate.askedClass("Is this a carcinoma?", set))
    XCTAssertNil(ClaimGate.askedClass("Is this lung tissue?", set))
    XCTAssertNil(ClaimGate.askedClass("Is this adenocarcinoma or squamous cell carcinoma?", set))
    XCTAssertNil(ClaimGate.askedClass("Isn't this an adenocarcinoma?", set))
    XCTAssertNil(ClaimGate.askedClass("What is an adenocarcinoma?", set))
    XCTAssertEqual(ClaimGate.askedClass("Is this Gleason pattern 4?", prostate), "prostate adenocarcinoma Gleason pattern 4")
    func check(_ a: String, _ q: String, _ v: String) -> (flags: [ReviewFlag], consistent: Bool?) {
      ClaimGate.check(answer: a, question: q, verdict: v, verdictSet: set, otherSets: others)
    }
    let scc = "lung squamous cell carcinoma", aca = "lung adenocarcinoma"
    let wrong = check(
      "Yes. The classifier calls it lung squamous cell carcinoma (probability 0.96).", "Is this an adenocarcinoma?", scc)
    XCTAssertEqual(wrong.flags.map(\.code), ["inconsistent"])
    XCTAssertEqual(wrong.consistent, false)
    XCTAssertTrue(wrong.flags[0].reason.hasPrefix("\"Yes\" to \"Is this an adenocarcinoma?\" calls it lung adenocarcinoma"))
    XCTAssertEqual(check("No.", "Is this an adenocarcinoma?", aca).flags.map(\.code), ["inconsistent"])
    XCTAssertEqual(
      check("No. The classifier calls it lung squamous cell carcinoma.", "Is this an adenocarcinoma?", scc).flags, [])
    XCTAssertEqual(check("Yes.", "Is this an adenocarcinoma?", aca).consistent, true)
    XCTAssertEqual(check("Yes.", "Is this a carcinoma?", scc).flags, [])
  }

  /// Abbreviations of specific diagnoses are claims too: "Lung SCLC" on a squamous cell
  /// carcinoma verdict is flagged with the claim quoted; NSCLC, which covers it, is not matched.
  func testClaimGateAbbreviations() throws {
    let set = try lungSet(), others = try otherSets()
    func flags(_ a: String) -> [ReviewFlag] {
      ClaimGate.check(
        answer: a, question: "What is the diagnosis?", verdict: "lung squamous cell carcinoma", verdictSet: set,
        otherSets: others
      ).flags
    }
    let f = flags("The diagnosis is lung squamous cell carcinoma with probability 0.86, also called Lung SCLC.")
    XCTAssertTrue(
      f.contains {
        $0.code == "unsupported-claim"
          && $0.reason.contains("\"The diagnosis is lung squamous cell carcinoma with probability 0.86, also called Lung SCLC\"")
      }, "\(f)")
    XCTAssertEqual(flags("The diagnosis is lung squamous cell carcinoma, a form of NSCLC."), [])
  }

  /// Guards a malignant verdict: generic words for a tumour agree with it; "not malignant" is a
  /// benign claim and is flagged.
  func testClaimGateOnMalignantVerdict() throws {
    let set = try lungSet(), others = try otherSets()
    func flags(_ a: String) -> [ReviewFlag] {
      ClaimGate.check(
        answer: a, question: "Is this malignant?", verdict: "lung squamous cell carcinoma", verdictSet: set, otherSets: others
      )
      .flags
    }
    XCTAssertEqual(flags("Yes, this malignant tumour shows keratin pearls."), [])
    XCTAssertEqual(flags("No, this is not malignant.").first?.code, "wrong-polarity")
    XCTAssertEqual(flags("The tumour cells form glands of lung adenocarcinoma.").first?.code, "inconsistent")
  }

  /// Guards grade claims: "high grade" against a low-grade verdict is flagged, the same grade is not.
  func testClaimGateGrade() throws {
    let crc = try PromptSet.load("colorectal", searchDirs: [Self.root + "/Prompts/zero-shot"])
    let v = "low-grade intraepithelial neoplasia"
    let bad = ClaimGate.check(
      answer: "These crypts show high grade dysplasia.", question: "What grade?", verdict: v, verdictSet: crc, otherSets: [])
    XCTAssertTrue(bad.flags.contains { $0.code == "wrong-grade" }, "\(bad.flags)")
    let ok = ClaimGate.check(
      answer: "This is low-grade intraepithelial neoplasia.", question: "What grade?", verdict: v, verdictSet: crc, otherSets: [])
    XCTAssertEqual(ok.flags, [])
  }

  /// Guards questions that are not about the slide: no diagnosis may appear unless the
  /// question is a general pathology one that Eosin's notes answer.
  /// Gleason patterns are grades: "pattern 4" on a pattern-3 verdict is flagged with the claim
  /// quoted; the verdict's own pattern, and a score such as 3+4=7, are not.
  func testClaimGateGleasonPattern() throws {
    let set = try PromptSet.load("prostate", searchDirs: [Self.root + "/Prompts/zero-shot"]), others = try otherSets()
    func flags(_ a: String) -> [ReviewFlag] {
      ClaimGate.check(
        answer: a, question: "What is the diagnosis?", verdict: "prostate adenocarcinoma Gleason pattern 3", verdictSet: set,
        otherSets: others
      ).flags
    }
    let f = flags("Prostate adenocarcinoma. The glands are fused, Gleason pattern 4.")
    XCTAssertTrue(
      f.contains { $0.code == "wrong-grade" && $0.reason.contains("The glands are fused, Gleason pattern 4") }, "\(f)")
    XCTAssertTrue(flags("This is Gleason 4 carcinoma.").contains { $0.code == "wrong-grade" })
    XCTAssertFalse(flags("This is prostate adenocarcinoma Gleason pattern 3.").contains { $0.code == "wrong-grade" })
    XCTAssertFalse(
      flags("Small discrete glands, pattern 3; a Gleason score of 3+4=7 needs the whole core.").contains {
        $0.code == "wrong-grade"
      })
  }

  func testClaimGateOffTopic() throws {
    let others = try otherSets()
    XCTAssertFalse(ClaimGate.isAboutSlide("What is the capital of France?"))
    XCTAssertTrue(ClaimGate.isAboutSlide("Is this malignant?"))
    XCTAssertTrue(ClaimGate.isAboutSlide("Describe the features."))
    // Slide words in a general-knowledge question do not make it a question about this slide.
    for general in [
      "What is a granuloma?", "What colour does haematoxylin stain nuclei?", "Which cells give rise to melanoma?",
      "What does normal lung tissue look like?", "What is the difference between grade and stage?",
      "How do benign prostate glands differ from prostate cancer?", "What features show that a tumour is malignant?",
      "What does microns per pixel mean for a slide?", "What is a whole-slide image?",
      // Naming questions, conditions, populations and frequencies ask about a kind of thing; so
      // does a what/how question that names an organ without pointing at the slide.
      "What is it called when one kind of lining cell is swapped for another?",
      "What does it mean when cells lining an organ look abnormal but have not invaded?",
      "What kind of necrosis is typical of tuberculosis?", "Why are cell nuclei purple on a routine slide?",
      "What is a digital scan of a glass slide?", "What is the most frequent type of breast cancer?",
      "What kind of cancer grows from the inner lining of the bladder?",
    ] {
      XCTAssertFalse(ClaimGate.isAboutSlide(general), general)
    }
    for slide in [
      "What is the diagnosis?", "What grade is it?", "What stain is this?", "How many tiles are there?",
      "Does the tissue show a tumour?", "Which diagnosis fits?", "What do you see in these tiles?", "Is there cancer here?",
      "Which tiles look malignant?", "How many slides are open?", "Is there lung cancer?",
      "Which tumour is it, lung adenocarcinoma or squamous cell carcinoma?", "What grade is the prostate cancer?",
      "What is the most likely diagnosis here?", "What is the diagnosis in the lung?",
    ] {
      XCTAssertTrue(ClaimGate.isAboutSlide(slide), slide)
    }
    var r = ClaimGate.check(
      answer: "Paris.", question: "What is the capital of France?", verdict: nil, verdictSet: nil, otherSets: others)
    XCTAssertEqual(r.flags, [])
    r = ClaimGate.check(
      answer: "It is probably a carcinoma.", question: "Write a poem", verdict: nil, verdictSet: nil, otherSets: others)
    XCTAssertEqual(r.flags.first?.code, "off-topic-diagnosis")
    r = ClaimGate.check(
      answer: "A granuloma is a collection of macrophages.", question: "What is a granuloma?", verdict: nil, verdictSet: nil,
      otherSets: others, general: true)
    XCTAssertEqual(r.flags, [])
  }

  /// Questions written after the routing rules of ``ClaimGate/isAboutSlide(_:)`` and never used
  /// to write them: when they were written, the rules routed 21 of the 25 slide questions and 22
  /// of the 25 general ones right (the rules before gave 21 and 21).
  static let routingSlide = [
    "What's going on in this biopsy?",
    "Is it cancer?",
    "Are these glands malignant?",
    "Can you tell me what the tissue shows?",
    "Should I worry about this?",
    "Which area looks the most suspicious?",
    "What grade would you give it?",
    "Is there any necrosis?",
    "Do you see mitoses?",
    "How confident are you?",
    "What's the diagnosis here?",
    "Is the tumour invasive?",
    "Does it look like adenocarcinoma or squamous cell carcinoma?",
    "What kind of tissue is on the slide?",
    "Where is the tumour on the slide?",
    "Is the lung tissue normal?",
    "What Gleason pattern do you see?",
    "Is there lymphovascular invasion?",
    "How much of the tissue is tumour?",
    "What are the evidence tiles?",
    "Why do you think it is benign?",
    "Is the margin involved?",
    "What would you call this lesion?",
    "Which organ does this come from?",
    "Are the nuclei atypical?",
  ]
  static let routingGeneral = [
    "What causes squamous metaplasia?",
    "How is adenocarcinoma different from squamous cell carcinoma?",
    "What are the risk factors for lung cancer?",
    "What is Barrett oesophagus?",
    "Why does tuberculosis form granulomas?",
    "What is a Gleason score of 7?",
    "Where do most colorectal cancers start?",
    "What is dysplasia?",
    "How do tumours spread to lymph nodes?",
    "What is the role of p40 staining?",
    "What does TTF-1 positivity suggest?",
    "Explain what hyperplasia is.",
    "What is the difference between an adenoma and a carcinoma?",
    "How long does it take for a polyp to become cancer?",
    "Which stain highlights mucin?",
    "What is atypical endometrial hyperplasia?",
    "Why do pathologists use H&E?",
    "What does a high mitotic count mean?",
    "Is smoking linked to squamous cell carcinoma of the lung?",
    "How are prostate biopsies taken?",
    "What is necrosis?",
    "Name the layers of the colon wall.",
    "What does lepidic growth mean in lung adenocarcinoma?",
    "What is a serrated adenoma?",
    "Can benign tumours become malignant?",
  ]

  /// Guards the routing on those questions: it must not get worse.
  func testRoutingOnQuestionsNotUsedToWriteTheRules() {
    XCTAssertGreaterThanOrEqual(Self.routingSlide.filter { ClaimGate.isAboutSlide($0) }.count, 21)
    XCTAssertGreaterThanOrEqual(Self.routingGeneral.filter { !ClaimGate.isAboutSlide($0) }.count, 22)
  }
}

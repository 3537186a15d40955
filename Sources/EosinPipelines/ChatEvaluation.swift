import Foundation

/// Evaluates chat answers the way a reviewer would read them: closed diagnosis questions on
/// labelled test tiles, how the gate treats answers that contradict the classifier, questions
/// that are not about the slide, and general pathology questions with key facts. Used by
/// `eosin train finalize` for EVALUATION.md; runs whichever model the session answers with.
public enum ChatEvaluation {
  /// One labelled input: image paths opened together, the prompt set that judges it and the
  /// true class's index in that set.
  public struct Case: Sendable {
    public var paths: [String]
    public var set: PromptSet
    public var truth: Int
    public init(paths: [String], set: PromptSet, truth: Int) {
      self.paths = paths
      self.set = set
      self.truth = truth
    }
  }

  /// A general question with its key facts (every group must appear; any word of a group will
  /// do, matched at a word start) and claims that contradict them.
  public struct GeneralQuestion: Codable, Sendable {
    public var q: String
    public var facts: [[String]]
    public var contradictions: [String]
    /// The note that answers it (`FILE#id`), where the question set names one.
    public var note: String?
  }

  /// The question sets of `Prompts/eval/general-questions.json`.
  public struct QuestionSet: Codable, Sendable {
    public var questions: [GeneralQuestion]
    public var off_topic: [String]

    public init(questions: [GeneralQuestion], off_topic: [String]) {
      self.questions = questions
      self.off_topic = off_topic
    }
  }

  public struct Result: Sendable {
    public var closed = 0, closedCorrect = 0, closedNamed = 0
    public var contradicting = 0, contradictingFlagged = 0
    public var unflagged = 0, unflaggedWrong = 0
    public var offTopic = 0, offTopicWithoutDiagnosis = 0
    public var general = 0, generalFacts = 0, generalContradicting = 0
    /// General answers without a review flag, and those of them that miss a key fact or
    /// contradict one: what a user would take as checked.
    public var generalUnflagged = 0, generalUnflaggedWrong = 0
    /// Yes/no questions about polarity after each closed question ("Is this malignant?" and
    /// "Is this benign?" by turns): asked, answered with a yes or no, answered against the
    /// tile's label, and of those the flagged ones.
    public var yesNo = 0, yesNoAnswered = 0, yesNoWrong = 0, yesNoWrongFlagged = 0
    public var seconds = 0.0

    func share(_ a: Int, _ b: Int) -> String { b == 0 ? "-" : String(format: "%.3f", Double(a) / Double(b)) }
    /// One Markdown table row: closed accuracy, flagged share of contradictions, unflagged
    /// wrong share, off-topic without diagnosis, general facts and contradictions, and the
    /// unflagged general answers that miss a key fact.
    /// The yes/no row: answered, wrong against the label, and the wrong ones flagged.
    public func yesNoRow(_ name: String) -> String {
      "| \(name) | \(yesNoAnswered) of \(yesNo) | \(share(yesNoWrong, yesNoAnswered)) (\(yesNoWrong)) | \(share(yesNoWrongFlagged, yesNoWrong)) | \(yesNoWrong - yesNoWrongFlagged) |"
    }

    public func row(_ name: String) -> String {
      "| \(name) | \(share(closedCorrect, closed)) (\(closed)) | \(share(contradictingFlagged, contradicting)) (\(contradicting)) | \(share(unflaggedWrong, unflagged)) (\(unflagged) unflagged) | \(share(offTopicWithoutDiagnosis, offTopic)) (\(offTopic)) | \(share(generalFacts, general)) | \(share(generalContradicting, general)) (\(general)) | \(share(generalUnflaggedWrong, generalUnflagged)) (\(generalUnflagged) unflagged) |"
    }
  }

  static func hasFact(_ text: String, _ any: [String]) -> Bool {
    let t = " " + text.lowercased()
    return any.contains { w in
      var from = t.startIndex
      while let r = t.range(of: w.lowercased(), range: from..<t.endIndex) {
        if r.lowerBound > t.startIndex, !t[t.index(before: r.lowerBound)].isLetter { return true }
        from = r.upperBound
      }
      return false
    }
  }

  /// The closed question for a case: "What is the diagnosis?", naming the organ of the case's set
  /// as a pathologist who knows the specimen would ("... in this lung tissue?"). Without the
  /// organ, chat judges against a set it guessed and flags every diagnosis as unconfirmed.
  public static func closedQuestion(_ set: PromptSet) -> String {
    guard let w = set.organWords?.first else { return "What is the diagnosis?" }
    return "What is the diagnosis in this \(w) tissue?"
  }

  /// Runs every part on `session` (whose model answers). `offTopicInput` is opened for the
  /// off-topic questions; `onClosed` sees each closed-question case, its answer and whether the
  /// answer named the right class.
  public static func run(
    session: ChatSession, cases: [Case], questions: QuestionSet, offTopicInput: [String], askYesNo: Bool = false,
    progress: (String) -> Void = { _ in }, onClosed: (Case, ChatAnswer, _ correct: Bool) -> Void = { _, _, _ in },
    onGeneral: (GeneralQuestion, ChatAnswer, _ statesFacts: Bool, _ contradicts: Bool) -> Void = { _, _, _, _ in }
  ) throws -> Result {
    var r = Result()
    let t0 = Date()
    for (i, c) in cases.enumerated() {
      try session.open(c.paths)
      let a = try session.ask(closedQuestion(c.set))
      let t = a.text.lowercased()
      let named = ClaimGate.assertedClass(t, a.text, c.set).flatMap { n in c.set.allClasses.firstIndex { $0.name == n.0 } }
      r.closed += 1
      if named != nil { r.closedNamed += 1 }
      let right = named == c.truth
      if right { r.closedCorrect += 1 }
      if let n = named, c.set.allClasses[n].name != a.verdict, a.verdict != "-" {
        r.contradicting += 1
        if !a.flags.isEmpty { r.contradictingFlagged += 1 }
      }
      if a.flags.isEmpty {
        r.unflagged += 1
        if !right { r.unflaggedWrong += 1 }
      }
      onClosed(c, a, right)
      // A yes/no question about polarity on the same tile: its yes or no against the label.
      if askYesNo, let truth = ClaimGate.polarity(ofClass: c.set.allClasses[c.truth].name) {
        let q = i % 2 == 0 ? "Is this malignant?" : "Is this benign?"
        let y = try session.ask(q)
        r.yesNo += 1
        if let (m, _) = ClaimGate.answeredPolarity(question: q, answer: y.text) {
          r.yesNoAnswered += 1
          if m != truth {
            r.yesNoWrong += 1
            if !y.flags.isEmpty { r.yesNoWrongFlagged += 1 }
          }
        }
      }
      if i % 20 == 19 { progress("closed questions: \(i + 1)/\(cases.count)") }
    }
    try session.open(offTopicInput)
    for q in questions.off_topic {
      let a = try session.ask(q)
      r.offTopic += 1
      let t = a.text.lowercased()
      let dx = (ClaimGate.diagnosisTerms + ["malignant", "benign"]).contains {
        ClaimGate.asserted($0, in: t, original: a.text) != nil
      }
      if !dx { r.offTopicWithoutDiagnosis += 1 }
    }
    for g in questions.questions {
      let a = try session.ask(g.q)
      r.general += 1
      let facts = g.facts.allSatisfy({ hasFact(a.text, $0) })
      if facts { r.generalFacts += 1 }
      let t = a.text.lowercased()
      let contradicts = g.contradictions.contains(where: {
        ClaimGate.asserted($0.lowercased(), in: t, original: a.text) != nil
      })
      if contradicts { r.generalContradicting += 1 }
      if a.flags.isEmpty {
        r.generalUnflagged += 1
        if !facts || contradicts { r.generalUnflaggedWrong += 1 }
      }
      onGeneral(g, a, facts, contradicts)
    }
    r.seconds = Date().timeIntervalSince(t0)
    return r
  }
}

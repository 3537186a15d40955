import Foundation

/// A question about the open input that its recorded facts answer exactly, with no model: how
/// many tiles, the resolution, the size, the tissue share, the stain, the file.
public enum SlideFactQuestion: String, Sendable, CaseIterable {
  case tiles, resolution, size, tissue, stain, file

  /// The kind of fact a question about the open slide asks for; nil when it asks for anything
  /// else (a diagnosis, a finding, a general question). Only questions that point at the slide
  /// count (``ClaimGate/isAboutSlide(_:)``): "What magnification is this?" does, "What
  /// magnification is used to count mitoses?" does not.
  public static func of(_ question: String) -> SlideFactQuestion? {
    let q = " " + question.lowercased().map { $0.isLetter || $0.isNumber || $0 == "&" || $0 == "µ" ? $0 : " " } + " "
    func has(_ xs: [String]) -> Bool { xs.contains { q.contains($0) } }
    // "What is the magnification?" asks about the open slide too.
    let definite = has([" the magnification", " the resolution", " the tiles", " the mpp", " the scanner", " the stain"])
    guard ClaimGate.isAboutSlide(question) || definite else { return nil }
    if has([" how many tile", " how many image", " how many patch", " number of tile", " number of image", " count of tile"]) {
      return .tiles
    }
    if has([
      " magnification", " magnified", " resolution", " mpp ", " microns per pixel", " micrometres per pixel",
      " micrometers per pixel", " µm per pixel", " um per pixel", " objective", " zoom", " what power",
    ]) {
      return .resolution
    }
    if has([" dimensions", " how big is", " how large is", " size of the slide", " size of this slide", " size of the image"])
      && has([" slide", " image", " this", " it "])
    {
      return .size
    }
    if has([" how much tissue", " tissue fraction", " percentage of tissue", " share of tissue", " how much of the slide"]) {
      return .tissue
    }
    // A stain question must point at the slide: "What stain shows amyloid?" is general.
    if has([" stain ", " stains ", " staining", " stained", " h&e", " h e ", " ihc ", " immunohistochem"]),
      definite || has(ClaimGate.strongDeicticWords + [" it ", " its "])
    {
      return .stain
    }
    if has([" scanner", " vendor", " file format", " what format", " which format"]) { return .file }
    return nil
  }
}

extension AnalyzedSlide {
  /// What every answer about the stain says first.
  static let stainNote =
    "Eosin does not identify stains. Its models were trained on H&E (haematoxylin and eosin) tiles and assume H&E; on another stain their verdicts do not hold."

  /// The answer to a ``SlideFactQuestion``, in plain sentences, from what Eosin read and
  /// measured (never from a model).
  public func answer(_ kind: SlideFactQuestion, encoderMPP: Double) -> String {
    let e = embeddings
    let n = e.tiles.count
    guard let s = slide else {
      let imgs = n == 1 ? "1 image is open (\(name))" : "\(n) images are open, taken as one case"
      switch kind {
      case .tiles:
        return "\(imgs); Eosin takes each image as one tile."
      case .resolution, .size:
        return
          "Image files carry no resolution, so Eosin cannot tell their magnification; it takes each image whole as one tile and scales it to \(e.tileSize) px. \(imgs)."
      case .tissue:
        return "Eosin measures the tissue share on whole slides only; \(imgs.lowercased()), each taken whole."
      case .stain:
        return Self.stainNote
      case .file:
        return "\(imgs); image files are read directly, not through OpenSlide."
      }
    }
    let (W, H) = s.dimensions
    switch kind {
    case .tiles:
      return String(
        format:
          "The slide gives %d tiles of %d px at %.3f µm/px, each covering %.0f µm of tissue; tiles with too little tissue are left out.",
        n, e.tileSize, e.mpp, Double(e.tileSize) * e.mpp)
    case .resolution:
      guard let m = mpp else {
        return
          "The slide does not record its resolution (no µm per pixel), so its magnification is unknown; give it with --mpp to tile it at a known scale."
      }
      let given = s.mppX == nil ? " (given with --mpp, not recorded in the file)" : ""
      return String(
        format:
          "Full resolution is %.3f µm per pixel%@, about %.0fx by the usual convention (0.25 µm/px is 40x, 0.5 µm/px is 20x). Eosin reads its tiles at %.3f µm/px, as its image encoder was trained (%.3f µm/px).",
        m, given, 10 / m, e.mpp, encoderMPP)
    case .size:
      let mm = mpp.map { String(format: ", %.1f x %.1f mm", Double(W) * $0 / 1000, Double(H) * $0 / 1000) } ?? ""
      return "The slide is \(W) x \(H) px at full resolution\(mm), in \(s.levels.count) level\(s.levels.count == 1 ? "" : "s")."
    case .tissue:
      guard let t = tissue else { return "Eosin has not measured this slide's tissue." }
      return String(
        format: "Tissue covers %.1f%% of the slide (Otsu's threshold on the thumbnail's saturation); Eosin tiles only there.",
        t.tissueFraction * 100)
    case .stain:
      var s = Self.stainNote
      if let t = tissue {
        s +=
          t.modality == .brightfield
          ? " This slide looks like a brightfield stain (bright background, coloured tissue), as H&E is."
          : " This slide does not look like a brightfield stain: \(t.modalityReason ?? t.modality.rawValue)."
      }
      return s
    case .file:
      return "OpenSlide reads it as a \(s.vendor) slide: \(W) x \(H) px in \(s.levels.count) levels (\(name))."
    }
  }
}

extension ChatSession {
  /// Answers a question that the open input's facts settle (``SlideFactQuestion``) with those
  /// facts, streamed as one piece and cited as the slide's facts, and "How sure are you?" with
  /// the last answer's confidence and review; nil for any other question.
  /// A language model asked "How many tiles are there?" or "What stain is this?" answered with
  /// the diagnosis; these answers are exact, so they carry confidence 1 and no flag.
  func answerFromFacts(_ question: String, onToken: (String) -> Bool) -> ChatAnswer? {
    guard let input else { return nil }
    let text: String
    let sure = Self.asksHowSure(question)
    if sure {
      text = Self.howSure(of: lastAnswer)
    } else if let kind = SlideFactQuestion.of(question) {
      text = input.answer(kind, encoderMPP: bundle.mpp)
    } else {
      return nil
    }
    let source = sure ? "this chat's review of the last answer" : "the slide's facts, as Eosin recorded them"
    let cancelled = !onToken(text)
    if !cancelled { _ = onToken("\n(Source: \(source))") }
    var a = review(
      question: question, answer: text, set: nil, judgedBy: "", classifier: nil, result: nil, picks: [], generator: 1,
      cancelled: cancelled, general: true, extraFlags: [])
    a.source = source
    a.judgedBy = source
    // `:evidence` and a later "How sure are you?" still refer to the answer before.
    if !sure { lastAnswer = a }
    return a
  }

  /// Whether a question asks how sure the last answer was ("How sure are you?", "Can I trust
  /// that?").
  static func asksHowSure(_ question: String) -> Bool {
    let q = " " + question.lowercased().map { $0.isLetter ? $0 : " " } + " "
    return [
      " how sure ", " how confident ", " how certain ", " how reliable ", " are you sure ", " are you certain ",
      " can i trust ", " should i trust ", " how much can i trust ",
    ].contains { q.contains($0) }
  }

  /// The last answer's confidence and review, in words.
  static func howSure(of last: ChatAnswer?) -> String {
    guard let a = last else { return "Nothing has been answered yet in this chat, so there is no confidence to report." }
    let q = a.question.trimmingCharacters(in: .whitespacesAndNewlines)
    var s = String(format: "The last answer (to \"%@\") had confidence %.2f", q, a.shownConfidence)
    if a.verdict != "-" {
      s += String(format: ": the classifier's calibrated probability of %@ (%.2f)", a.verdict, a.verdictProbability)
      if let g = a.confidence.generator, g < a.verdictProbability {
        s += String(format: ", capped by the language model's probability of the answer's key claim (%.2f)", g)
      }
    }
    s += "."
    s +=
      a.flags.isEmpty
      ? " Nothing flagged it for review."
      : " It is flagged for review: " + a.flags.map(\.reason).joined(separator: "; ") + "."
    return s
  }
}

/// Whether a question asks where on the open slide something is ("Where is the tumour?",
/// "Which tiles show the carcinoma?"), which the classifier's tile probabilities answer; not a
/// question of origin or spread ("Where does this tumour come from?").
public enum SlideLocationQuestion {
  public static func asks(_ question: String) -> Bool {
    let q = " " + question.lowercased().map { $0.isLetter || $0.isNumber ? $0 : " " } + " "
    func has(_ xs: [String]) -> Bool { xs.contains { q.contains($0) } }
    if has([" come from", " arise", " arising", " originat", " spread", " metasta", " go ", " found in the body"]) {
      return false
    }
    let opening = q.trimmingCharacters(in: .whitespaces)
    // "Where is the adenocarcinoma?" names a lesion, not an organ's place in the body.
    let lesion = (ClaimGate.diagnosisTerms + ClaimGate.malignantWords).contains { q.contains(" \($0)") }
    guard ClaimGate.isAboutSlide(question) || has([" tile", " tiles "]) || (opening.hasPrefix("where ") && lesion) else {
      return false
    }
    return opening.hasPrefix("where ")
      || has([
        " which tile", " which tiles", " which area", " which areas", " which region", " which regions", " which part",
        " which parts", " show me where", " point to", " locate ", " where on ",
      ])
  }
}

extension ChatSession {
  /// Answers a ``SlideLocationQuestion`` from the classifier's tile probabilities: the tiles
  /// most like the class the question names (else the slide's verdict), with their places and
  /// probabilities, and how many tiles reach 0.5, after the verdict when the class is another;
  /// nil for any other question. Its claim about the slide is the verdict, judged like any slide
  /// answer (the verdict's flags, the organ's source), and its tiles are the evidence
  /// `:evidence` shows. A language model asked "Where is the
  /// tumour?" answered "The tumour is located in the lungs."
  func answerWhere(_ question: String, onToken: (String) -> Bool) throws -> ChatAnswer? {
    guard let input, SlideLocationQuestion.asks(question) else { return nil }
    let (s, why, guessed) = try choosePromptSet(for: question)
    let (clf, r) = try verdict(s)
    let lower = question.lowercased()
    let named = ClaimGate.assertedClass(lower, question, s)?.0 ?? ClaimGate.namedClass(question, s)
    let target = named.flatMap { n in r.classNames.firstIndex(of: n) } ?? r.verdict
    let tiles = r.tiles.indices.sorted { r.tiles[$0].probs[target] > r.tiles[$1].probs[target] }
    let top = Array(tiles.prefix(5))
    let reach = r.tiles.filter { $0.probs[target] >= 0.5 }.count
    var text = ""
    let vName = r.classNames[r.verdict], tName = r.classNames[target]
    let asksLesion = (ClaimGate.malignantWords + Array(ClaimGate.genericTerms)).contains { lower.contains($0) }
    let notLesion = named == nil && asksLesion && ClaimGate.polarity(ofClass: vName) != true
    if target != r.verdict || notLesion {
      text += String(
        format: "The classifier calls the slide %@ (probability %.2f)%@. ", vName, r.probs[r.verdict],
        notLesion ? ", not a tumour" : "")
    }
    if top.isEmpty {
      text += "The slide has no tiles to point to."
    } else {
      let places = top.map { String(format: "%@ %.2f", input.tileLabel($0), r.tiles[$0].probs[target]) }
      text += "The tiles most like \(tName) (classifier probability): " + places.joined(separator: ", ") + "; "
      text += "\(reach) of \(r.tiles.count) tiles reach 0.5."
    }
    let cancelled = !onToken(text)
    let source = "the classifier's tile probabilities, \(s.name) set"
    if !cancelled { _ = onToken("\n(Source: \(source))") }
    // The text is the classifier's own numbers: what it claims about the slide is the verdict
    // (the gate judges that, with the verdict's flags and the organ's source), not the class
    // whose tiles it lists.
    var a = review(
      question: question, answer: "The classifier calls it \(vName).", set: s, judgedBy: why, organGuessed: guessed,
      classifier: clf, result: r, picks: top, generator: 1, cancelled: cancelled, general: false, extraFlags: [])
    a.text = text
    a.source = source
    lastAnswer = a
    return a
  }
}

/// Whether a question asks what to do next about the open slide ("What should be done next for
/// this patient?", "What are the next steps?", "Which tests would you recommend here?"), which
/// Eosin's note on the verdict's class answers.
public enum NextStepsQuestion {
  public static func asks(_ question: String) -> Bool {
    let q = " " + question.lowercased().map { $0.isLetter || $0.isNumber ? $0 : " " } + " "
    func has(_ xs: [String]) -> Bool { xs.contains { q.contains($0) } }
    guard
      has([
        " next step", " what should be done", " what should i do", " what to do", " what next", " what now", " work up",
        " workup", " further test", " which test", " what test", " recommend", " management", " follow up",
        " done next", " do next",
      ])
    else { return false }
    if ClaimGate.generalMarkers.contains(where: { q.contains($0) }) { return false }
    return ClaimGate.isAboutSlide(question)
      || has([" patient", " next step", " what next", " what now", " do next", " done next", " should be done"])
  }
}

extension ChatSession {
  /// Answers a ``NextStepsQuestion`` with the next steps Eosin's note gives for the verdict's
  /// class, after the verdict; nil for any other question, or when no note of the class has
  /// next steps. Its claim about the slide is the verdict, judged like any slide answer (the
  /// verdict's flags, the organ's source). A language model asked "What should be done next for
  /// this patient?" restated the verdict with a garbled sentence.
  func answerNextSteps(_ question: String, onToken: (String) -> Bool) throws -> ChatAnswer? {
    guard input != nil, NextStepsQuestion.asks(question), let notes = grounded?.notes ?? notes else { return nil }
    let (s, why, guessed) = try choosePromptSet(for: question)
    let (clf, r) = try verdict(s)
    let v = r.classNames[r.verdict]
    guard let p = notes.passage(forClass: v)?.0, p.title.lowercased() == v.lowercased(), let steps = p.nextSteps else {
      return nil
    }
    let text = String(
      format: "The classifier calls it %@ (probability %.2f). For that, Eosin's note gives these next steps: %@.", v,
      r.probs[r.verdict], steps)
    let cancelled = !onToken(text)
    let source = "Eosin's notes, \(p.source)"
    if !cancelled { _ = onToken("\n(Source: \(source))") }
    var a = review(
      question: question, answer: "The classifier calls it \(v).", set: s, judgedBy: why, organGuessed: guessed,
      classifier: clf, result: r, picks: try selectTiles(for: question), generator: 1, cancelled: cancelled, general: false,
      extraFlags: [])
    a.text = text
    a.source = source
    lastAnswer = a
    return a
  }
}

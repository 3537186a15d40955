import EosinModels
import EosinSlide
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// The decoder side of a bundle: GPT-2 decoder, slide-token projector and tokenizer.
public final class ChatModel: @unchecked Sendable {
  public let decoder: GPT2Model
  public let projector: Projector
  public let tokenizer: Tokenizer
  public let decoderSHA256: String
  /// The slide-token projector's file.
  public let projectorPath: String

  /// - Parameters:
  ///   - imageDim: the image embedding width the projector must take; nil takes the projector
  ///     file's own, to be checked with ``checkFits(_:)`` once the CLIP model is loaded.
  ///   - manifest: the bundle's manifest; a file whose sha256 differs from the one it records
  ///     is refused.
  public init(directory: String, imageDim: Int?, manifest: WeightsManifest? = nil) throws {
    let ck = try Checkpoint(path: directory)
    decoder = try GPT2Model(checkpoint: ck)
    tokenizer = try Tokenizer.load(directory)
    projectorPath = directory + "/projector.safetensors"
    let pf = try SafeTensorsFile(path: projectorPath)
    guard let shape = pf.tensors["mm_projector.0.weight"]?.shape, shape.count == 2 else {
      throw PipelineError.file(path: pf.path, message: "no mm_projector.0.weight")
    }
    projector = try Projector(file: pf, inDim: imageDim ?? shape[1], hidden: shape[0], outDim: decoder.channels)
    decoderSHA256 = try ModelBundle.verifiedSHA(manifest, "decoder/model.safetensors", ck.weights.path)
    _ = try ModelBundle.verifiedSHA(manifest, "decoder/projector.safetensors", projectorPath)
  }

  /// The image embedding width the slide-token projector takes.
  public var imageDim: Int { projector.fc1.inFeatures }

  /// Checks that the slide-token projector takes the embeddings `bundle`'s CLIP model gives
  /// (a decoder loaded with `imageDim: nil`, beside the weights rather than after them).
  /// - Throws: ``PipelineError/file(path:message:)`` naming the projector file when it does not.
  public func checkFits(_ bundle: ModelBundle) throws {
    guard imageDim == bundle.clip.embedDim else {
      throw PipelineError.file(
        path: projectorPath,
        message: "takes \(imageDim)-wide image embeddings, but the CLIP model gives \(bundle.clip.embedDim)")
    }
  }
}

/// One answer with everything needed to trust or check it.
public struct ChatAnswer: Sendable {
  public var question: String
  public var text: String
  public var cancelled: Bool
  public var confidence: Confidence
  public var flags: [ReviewFlag]
  /// The tiles used as slide tokens (level-0 coordinates).
  public var evidence: [EvidenceTile]
  public var promptSet: String
  public var verdict: String
  public var verdictProbability: Float
  /// The prompt-set class the answer names, if any.
  public var answerClass: String?
  /// The collection and passage the answer drew on ("Eosin's notes, FILE#id"), when a language
  /// model answered.
  public var source: String? = nil
  /// Why ``promptSet`` judged this answer ("the question says \"colon\"", "you chose it with
  /// :classify", "its classes best match the slide").
  public var judgedBy: String = ""
  /// Where each evidence tile is, in words: level-0 `(x, y)`, or the image file's name.
  public var evidenceLabels: [String] = []
  /// The calibration temperature of the judging classifier and its source.
  public var temperature: String = ""

  /// The one confidence shown for this answer, on screen and in every saved record: the
  /// answer's own confidence (its key claim's probability, capped by the classifier's), or 0
  /// when it contradicts the classifier.
  public var shownConfidence: Float {
    if confidence.consistent == false { return 0 }
    return min(confidence.probability, confidence.generator ?? 1)
  }

  /// The line shown after the answer, and saved with it word for word: the confidence and the
  /// evidence when nothing is flagged, else `⚠ REVIEW:` and every reason.
  public var reviewLine: String {
    let judged = promptSet == "-" ? "" : " · judged against the \(promptSet) set (\(judgedBy))"
    if flags.isEmpty {
      return String(format: "confidence %.2f · evidence %d tiles", shownConfidence, evidence.count) + judged
    }
    return "⚠ REVIEW: " + flags.map { $0.reason }.joined(separator: "; ")
      + String(format: " · confidence %.2f · evidence %d tiles", shownConfidence, evidence.count) + judged
  }
}

/// A chat about one slide (or a set of images): selects slide tokens for each question, streams
/// a greedy (or sampled) answer, and checks it against the zero-shot classifier.
///
/// Memory is bounded by the slide index (N x D floats) whatever the slide size; no tile is
/// re-encoded when the same slide is opened again (the index is cached). No terminal I/O.
public final class ChatSession {
  public let bundle: ModelBundle
  public let chat: ChatModel
  public let cacheDir: String?
  public private(set) var promptSets: [PromptSet]
  public var sampler = Sampler()
  public var maxTokens = 40
  /// Slide tokens per question (plus one global token).
  public let tilesPerQuestion = 4

  /// The open input (a slide, or images taken as one case).
  public private(set) var input: AnalyzedSlide?
  public var source: String? { input?.paths.first }
  public var embeddings: SlideEmbeddings? { input?.embeddings }
  public var facts: InputFacts { input?.facts ?? InputFacts() }
  public var slideInfo: [String: String] { input?.info ?? [:] }
  public internal(set) var lastAnswer: ChatAnswer?
  /// When set, answers come from this pretrained language model, grounded on the classifier and
  /// Eosin's notes (``GroundedLM``), instead of the embedded small decoder.
  public var grounded: GroundedLM?
  /// Eosin's notes for the embedded decoder's turns (a language model brings its own): a
  /// question that is not about the slide is answered with the best passage itself.
  public var notes: KnowledgeNotes?
  /// The prompt set chosen by the user (`:classify SET`) or by a report template; it judges
  /// answers whose question names no organ. nil: the organ set whose classes best match the input.
  public var preferredSet: String?
  /// Why ``preferredSet`` was chosen, for the answer's record ("you chose it with :classify").
  public var preferredReason = "chosen"
  /// The organ set a question on the open slide named ("... in this prostate biopsy"): it judges
  /// the later answers on that slide whose question names no organ.
  public private(set) var statedSet: PromptSet?
  /// The joint classifier's prompt set over the organ sets, built once.
  var jointSet: PromptSet?
  /// The first diagnosis an answer named on the open slide (class name), for the cross-turn
  /// consistency check.
  public private(set) var firstDiagnosis: String?
  var classifiers: [String: ZeroShotClassifier] = [:]
  var verdicts: [String: SlideResult] = [:]
  let policy: ReviewPolicy
  /// The organ check over the loaded organ sets (built on first use).
  var organCheck: OrganCheck?

  public init(bundle: ModelBundle, chat: ChatModel, promptSets: [PromptSet], cacheDir: String?) {
    self.bundle = bundle
    self.chat = chat
    self.promptSets = promptSets
    self.cacheDir = cacheDir
    policy = ReviewPolicy(thresholds: bundle.thresholds)
  }

  /// Opens a slide, or one or more images treated as the tiles of one case.
  /// - Throws: the slide or image error, naming the file; the session keeps what it had.
  public func open(_ paths: [String], overrideMPP: Double? = nil, progress: (Int, Int) -> Void = { _, _ in }) throws {
    load(try AnalyzedSlide.analyze(paths, bundle: bundle, overrideMPP: overrideMPP, cacheDir: cacheDir, progress: progress))
  }

  /// The user's choice of prompt set (`:classify SET`): it judges the answers that follow, unless
  /// a question names an organ. A set not loaded yet (a file, an inline class list) is added.
  public func choose(_ set: PromptSet) {
    if let i = promptSets.firstIndex(where: { $0.name == set.name }) {
      promptSets[i] = set
    } else {
      promptSets.append(set)
    }
    preferredSet = set.name
    preferredReason = "you chose it with :classify"
  }

  /// Takes an input that is already analysed (by `eosin report`, say) without re-embedding it.
  public func load(_ a: AnalyzedSlide) {
    input = a
    verdicts = [:]
    lastAnswer = nil
    firstDiagnosis = nil
    statedSet = nil
  }

  /// The classifier and slide verdict for a prompt set (computed once per slide).
  public func verdict(_ set: PromptSet) throws -> (ZeroShotClassifier, SlideResult) {
    guard let a = input else { throw PipelineError.input("no slide is open; use :open PATH") }
    let key = set.name + "|" + set.sha256
    let clf = try classifiers[key] ?? ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cacheDir)
    classifiers[key] = clf
    if let v = verdicts[key] { return (clf, v) }
    if organCheck == nil { organCheck = try OrganCheck(organSets: promptSets, bundle: bundle, cacheDir: cacheDir) }
    let r = a.classify(clf, policy: policy, organs: organCheck)
    verdicts[key] = r
    return (clf, r)
  }

  /// The organ prompt sets (those whose file lists `organ_words`).
  public var organSets: [PromptSet] { promptSets.filter { !($0.organWords ?? []).isEmpty } }

  /// The organ sets of organs the model was trained on: the candidates when the best-matching
  /// set is chosen (the model has no notion of the others).
  var trainedOrganSets: [PromptSet] {
    guard let t = bundle.thresholds.trainedOrgans else { return organSets }
    return organSets.filter { s in s.organName.map { t.contains($0) } ?? false }
  }

  /// The prompt set that judges an answer to `question`, with the reason, in this order:
  /// 1. the organ set whose organ words the question uses ("... in this colon biopsy"); ``ask``
  ///    remembers it for the slide's later questions;
  /// 2. the set the user chose with `:classify SET`, or the report template's set
  ///    (``preferredSet``);
  /// 3. the organ set an earlier question on this slide named (``statedSet``);
  /// 4. a guess: the organ set whose classes best match the open input (one joint classifier over
  ///    every organ set's classes, whose similarities are comparable, unlike probabilities
  ///    normalised within each set), and the set that owns its verdict. Measured on test tiles:
  ///    EBHI 60/60 colorectal, LC25000 58/59 lung. A guess is only among the organs the model
  ///    was trained on, so `guessed` is true and the answer's review says so.
  /// Never a silent default: the reason goes into the answer's record.
  public func choosePromptSet(for question: String) throws -> (set: PromptSet, reason: String, guessed: Bool) {
    if let (s, w) = namedOrganSet(in: question) { return (s, "the question says \"\(w)\"", false) }
    if let p = preferredSet, let s = promptSets.first(where: { $0.name == p }) { return (s, preferredReason, false) }
    if let s = statedSet { return (s, "an earlier question named the organ", false) }
    let organ = trainedOrganSets
    let cands = organ.isEmpty ? promptSets : organ
    guard let first = cands.first else { throw PipelineError.input("no prompt sets loaded") }
    if cands.count == 1 { return (first, "the only organ set", true) }
    let name = "organ-choice(" + cands.map(\.name).joined(separator: "+") + ")"
    let joint =
      try jointSet.flatMap { $0.name == name ? $0 : nil }
      ?? PromptSet(name: name, classes: cands.flatMap { $0.classes }, templates: first.templates, background: first.background)
    jointSet = joint
    let (clf, r) = try verdict(joint)
    let best = clf.classNames[r.verdict]
    if let s = cands.first(where: { $0.classes.contains { $0.name == best } }) {
      return (s, "its classes best match the slide (\(best))", true)
    }
    // The joint verdict is the background: keep the most confident organ set's verdict.
    let s = try cands.max { try verdict($0).1.confidence.probability < verdict($1).1.confidence.probability }!
    return (s, "no organ set's classes match well; its verdict is the most confident", true)
  }

  /// The organ set whose organ words `text` uses, with the word.
  func namedOrganSet(in text: String) -> (PromptSet, String)? {
    let q = text.lowercased()
    for s in organSets {
      if let w = s.organWords?.first(where: { q.contains($0.lowercased()) }) { return (s, w) }
    }
    return nil
  }

  /// The prompt set that judges an answer to `question` (see ``choosePromptSet(for:)``).
  public func promptSet(for question: String) throws -> PromptSet { try choosePromptSet(for: question).set }

  /// Picks slide tokens: the tiles most similar to the question's text embedding, kept diverse
  /// (maximal marginal relevance, lambda 0.7), then the mean of all tiles as a global token.
  public func selectTiles(for question: String) throws -> [Int] {
    guard let e = embeddings else { throw PipelineError.input("no slide is open; use :open PATH") }
    let D = e.dim, N = e.tiles.count
    if N == 0 { return [] }
    let q = try bundle.embedTexts([question])
    func dot(_ i: Int, _ v: [Float], _ o: Int) -> Float {
      var s: Float = 0
      for d in 0..<D { s += e.embeddings[i * D + d] * v[o + d] }
      return s
    }
    let sim = (0..<N).map { dot($0, q, 0) }
    var chosen: [Int] = []
    while chosen.count < min(tilesPerQuestion, N) {
      var best = -1
      var bestScore = -Float.infinity
      for i in 0..<N where !chosen.contains(i) {
        let red = chosen.map { dot(i, e.embeddings, $0 * D) }.max() ?? 0
        let s = 0.7 * sim[i] - 0.3 * red
        if s > bestScore {
          bestScore = s
          best = i
        }
      }
      chosen.append(best)
    }
    return chosen
  }

  /// Answers a question about the open slide. `onToken` receives each decoded piece as it is
  /// generated and returns false to cancel (Ctrl-C); a cancelled answer is returned as such.
  public func ask(_ question: String, onToken: (String) -> Bool = { _ in true }) throws -> ChatAnswer {
    // An organ the question names holds for the slide's later questions.
    if input != nil, let (s, _) = namedOrganSet(in: question) { statedSet = s }
    if let a = answerFromFacts(question, onToken: onToken) { return a }
    if let a = try answerWhere(question, onToken: onToken) { return a }
    if let a = try answerNextSteps(question, onToken: onToken) { return a }
    if let g = grounded { return try askGrounded(question, g, onToken: onToken) }
    if let n = notes, !ClaimGate.isAboutSlide(question) {
      return answerFromNotes(question, n, onToken: onToken)
    }
    guard let e = embeddings else {
      throw PipelineError.input("no slide is open; open one with :open PATH, or start with `eosin chat SLIDE`")
    }
    let D = e.dim
    let picks = try selectTiles(for: question)
    // Prefix: the chosen tiles (repeated to 4 when the slide has fewer), then the global mean.
    var prefix: [Float] = []
    let K = tilesPerQuestion
    for k in 0..<K {
      let i = picks.isEmpty ? 0 : picks[k % picks.count];
      prefix += e.tiles.isEmpty ? [Float](repeating: 0, count: D) : Array(e.embeddings[(i * D)..<((i + 1) * D)])
    }
    var mean = [Float](repeating: 0, count: D)
    for i in 0..<e.tiles.count { for d in 0..<D { mean[d] += e.embeddings[i * D + d] / Float(e.tiles.count) } }
    prefix += mean
    let slideTokens = chat.projector.forward(prefix, K + 1)
    let prompt = chat.tokenizer.encode(ChatFormat.prompt(question))
    var text = ""
    var pending: [Int32] = []
    var cancelled = false
    let eos = chat.tokenizer.eos.map { Set([$0]) } ?? []
    let gen = try chat.decoder.generate(
      prompt: prompt, prefix: slideTokens, maxNewTokens: maxTokens, sampler: &sampler, stop: eos
    ) { tok, _ in
      if eos.contains(tok) { return false }
      pending.append(tok)
      let piece = chat.tokenizer.decode(pending)
      // Emit only complete UTF-8 (a multi-byte character may span tokens).
      if !piece.contains("\u{FFFD}") {
        text += piece
        pending.removeAll()
        if !onToken(piece) {
          cancelled = true
          return false
        }
      }
      return true
    }
    let answer = text.trimmingCharacters(in: .whitespaces)
    let genConf = Self.wordingConfidence(gen.tokens, gen.probs) { eos.contains($0) ? "" : chat.tokenizer.decode([$0]) }
    let (set, why, guessed) = try choosePromptSet(for: question)
    let (clf, r) = try verdict(set)
    let a = review(
      question: question, answer: answer, set: set, judgedBy: why, organGuessed: guessed, classifier: clf, result: r,
      picks: picks, generator: genConf, cancelled: cancelled, general: false, extraFlags: [])
    lastAnswer = a
    return a
  }

  /// Without a language model, a question that is not about the slide gets the best passage of
  /// the notes itself, cited: the embedded decoder was trained on slide answers only, and would
  /// answer "What is a granuloma?" with the slide's diagnosis. The confidence is the share of
  /// the question's subject words the passage contains. With no relevant passage the answer
  /// says so and is flagged.
  func answerFromNotes(_ question: String, _ notes: KnowledgeNotes, onToken: (String) -> Bool) -> ChatAnswer {
    let hit = notes.search(question, k: 1).first?.0
    var flags: [ReviewFlag] = []
    let text: String
    if let p = hit {
      text = p.text
      if let f = Self.referenceFlag(p) { flags.append(f) }
    } else {
      text =
        "Without the language model, Eosin answers questions about the open slide and questions its notes cover; nothing in its notes matches this one."
      flags.append(
        ReviewFlag(
          code: "not-from-notes",
          reason: "not about the slide and nothing relevant in Eosin's notes; the embedded decoder answers only about the slide"))
    }
    _ = onToken(text)
    if let p = hit { _ = onToken("\n(Source: \(p.collection), \(p.source); a general answer, not about this slide)") }
    // The passage is quoted, not generated: its confidence is how well it matches the question.
    let m = hit.map { Self.matchFlag(question, $0, notes) }
    if let f = m?.flag { flags.append(f) }
    var a = review(
      question: question, answer: text, set: nil, judgedBy: "", classifier: nil, result: nil, picks: [],
      generator: hit == nil ? 0 : 1, cancelled: false, general: hit != nil, extraFlags: flags, match: m?.share)
    a.source = hit.map { "\($0.collection), \($0.source)" }
    lastAnswer = a
    return a
  }

  /// How well the passage an answer to a general question draws on matches the question
  /// (``KnowledgeNotes/match(of:by:)``), and below half the `weak-match` flag naming the
  /// question's words the passage leaves out. The weights are those of Eosin's own notes, which
  /// is where a passage found for one common word comes from (an imported passage must hold
  /// every word of the question).
  static func matchFlag(_ question: String, _ p: NotePassage, _ notes: KnowledgeNotes) -> (share: Float, flag: ReviewFlag?) {
    let (share, missing) = notes.match(of: question, by: p)
    guard share < 0.5 else { return (Float(share), nil) }
    let words = missing.prefix(3).map { "\"\($0)\"" }.joined(separator: ", ")
    return (
      Float(share),
      ReviewFlag(
        code: "weak-match",
        reason: String(
          format: "the note it draws on (%@) leaves out %@ of the question (match %.2f): it may answer another question",
          p.source, words, share))
    )
  }

  /// The confidence of an answer's wording, for either model: the mean probability of the
  /// tokens that carry words (letters), not punctuation or spaces; 0 when there are none.
  static func wordingConfidence(_ tokens: [Int32], _ probs: [Float], text: (Int32) -> String) -> Float {
    var ps: [Float] = []
    for (t, p) in zip(tokens, probs) where text(t).unicodeScalars.contains(where: { CharacterSet.letters.contains($0) }) {
      ps.append(p)
    }
    return ps.isEmpty ? 0 : ps.reduce(0, +) / Float(ps.count)
  }

  /// The review of one answer, the same for the embedded decoder and a language model: the
  /// slide verdict's flags, the claim gate (asserted classes, unsupported diagnoses, grade,
  /// polarity), a diagnosis that differs from an earlier answer's on this slide, an unsure
  /// wording, cancellation, and a diagnosis judged against a set Eosin guessed (`organGuessed`).
  /// `result` is nil when the question was not about the slide.
  func review(
    question: String, answer: String, set: PromptSet?, judgedBy: String, organGuessed: Bool = false,
    classifier clf: ZeroShotClassifier?,
    result r: SlideResult?, picks: [Int], generator genConf: Float, cancelled: Bool, general: Bool, extraFlags: [ReviewFlag],
    match: Float? = nil
  ) -> ChatAnswer {
    let verdictName = r.map { $0.classNames[$0.verdict] }
    var (flags, consistent) = ClaimGate.check(
      answer: answer, question: question, verdict: verdictName, verdictSet: set, otherSets: promptSets, general: general)
    flags += extraFlags
    // Across turns: an answer naming a different diagnosis from an earlier one on this slide.
    let low = answer.lowercased()
    let named =
      set.flatMap { ClaimGate.assertedClass(low, answer, $0)?.0 }
      ?? organSets.lazy.compactMap { ClaimGate.assertedClass(low, answer, $0)?.0 }.first
    if let d = named, r != nil, !cancelled, d != set?.background?.name {
      if let first = firstDiagnosis, first != d {
        consistent = false
        flags.append(ReviewFlag(code: "self-contradiction", reason: "answer names \(d), an earlier answer named \(first)"))
      } else if firstDiagnosis == nil {
        firstDiagnosis = d
      }
    }
    // A diagnostic question whose answer names no class the classifier can check (and asserts
    // nothing the gate could check against it): unverified.
    if let r, named == nil, consistent == nil, !cancelled, ClaimGate.asksForDiagnosis(question) {
      flags.append(
        ReviewFlag(
          code: "unverified-answer",
          reason: "the answer names no diagnosis the classifier can check (it sees \(r.classNames[r.verdict]))"))
    }
    // A diagnosis judged against a set Eosin guessed: the model can only guess among the organs it
    // was trained on, so tissue of any other organ would be judged as one of them, however
    // confident the verdict. The organ must come from the user.
    if organGuessed, r != nil, let set, named != nil || ClaimGate.asksForDiagnosis(question) {
      let known = bundle.thresholds.trainedOrgans.map { " (" + $0.joined(separator: ", ") + ")" } ?? ""
      let word = set.organWords?.first ?? set.name
      flags.append(
        ReviewFlag(
          code: "organ-unconfirmed",
          reason:
            "the organ was not stated: Eosin guessed the \(set.name) set, but it can only guess among the organs it was trained on\(known); name the organ (\"in this \(word) biopsy\") or choose a set with :classify"
        ))
    }
    if genConf < 0.5 {
      flags.append(
        ReviewFlag(
          code: "unsure-generator", reason: String(format: "the answer's wording is uncertain (token probability %.2f)", genConf))
      )
    }
    if cancelled { flags.append(ReviewFlag(code: "cancelled", reason: "answer was cancelled")) }
    var conf: Confidence
    if let r {
      conf = r.confidence
      flags = r.flags.filter { $0.code != "inconsistent" } + flags
      conf.probability = consistent == false ? 0 : min(r.confidence.probability, genConf)
    } else {
      // A general answer is as sure as its wording and as the match of its note to the question.
      conf = Confidence(probability: min(genConf, match ?? 1), margin: 0, promptSpread: 0, domain: 0)
    }
    conf.generator = genConf
    conf.consistent = consistent
    if !conf.probability.isFinite || !genConf.isFinite {
      flags.append(ReviewFlag(code: "non-finite", reason: "a non-finite score (NaN or infinity) was produced"))
    }
    var evidence: [EvidenceTile] = []
    var labels: [String] = []
    if let r, let a = input {
      let e = a.embeddings
      for i in picks where i < e.tiles.count {
        evidence.append(
          EvidenceTile(x: e.tiles[i].x, y: e.tiles[i].y, size: Int(e.extent0.rounded()), probability: r.tiles[i].probs[r.verdict])
        )
        labels.append(a.tileLabel(i))
      }
    }
    var ans = ChatAnswer(
      question: question, text: answer, cancelled: cancelled, confidence: conf, flags: flags, evidence: evidence,
      promptSet: set?.name ?? "-", verdict: verdictName ?? "-", verdictProbability: r.map { $0.probs[$0.verdict] } ?? 0,
      answerClass: named)
    ans.judgedBy = r == nil ? "not about the slide" : judgedBy
    ans.evidenceLabels = labels
    if let clf { ans.temperature = String(format: "T=%.3f (%@)", clf.temperature, clf.temperatureSource.label) }
    return ans
  }
}

/// The session transcript: one JSON object per turn, appended to a JSONL file with a single
/// write of a complete line (O_APPEND), then fsync, so a crash never leaves a torn line.
public final class Transcript {
  public let path: String
  public private(set) var turns: [[String: Any]] = []

  public init(directory: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let f = DateFormatter()
    f.dateFormat = "yyyyMMdd-HHmmss"
    path = "\(directory)/\(f.string(from: Date()))-\(getpid()).jsonl"
  }

  /// Appends one turn: the question, the answer, and exactly the review line the screen showed
  /// (``ChatAnswer/reviewLine``), with the slide and the hashes of the models that answered.
  /// - Parameter languageModel: the GGUF file that answered, when not the embedded decoder.
  public func append(_ a: ChatAnswer, session: ChatSession, languageModel: String? = nil) throws {
    let e = session.embeddings
    var turn: [String: Any] = [
      "time": ISO8601DateFormatter().string(from: Date()), "slide": session.input?.paths.joined(separator: ";") ?? "",
      "slide_name": session.input?.name ?? "", "slide_hash": session.input?.contentHash ?? "", "question": a.question,
      "answer": a.text, "cancelled": a.cancelled, "clip_sha256": session.bundle.clipSHA256,
      "decoder_sha256": session.chat.decoderSHA256, "prompt_set": a.promptSet, "judged_by": a.judgedBy,
      "temperature": a.temperature, "mpp": e?.mpp ?? 0, "tile_size": e?.tileSize ?? 0, "verdict": a.verdict,
      "verdict_probability": Double(a.verdictProbability), "generator_confidence": Double(a.confidence.generator ?? 0),
      "consistent": a.confidence.consistent.map { $0 as Any } ?? NSNull(), "flagged": !a.flags.isEmpty,
      "flags": a.flags.map { ["code": $0.code, "reason": $0.reason] },
      "evidence": zip(a.evidence, a.evidenceLabels).map {
        ["x": $0.x, "y": $0.y, "size": $0.size, "label": $1] as [String: Any]
      },
      "confidence": Double(a.shownConfidence), "shown": a.reviewLine,
    ]
    if let src = a.source { turn["source"] = src }
    if let lm = languageModel { turn["language_model"] = lm }
    turns.append(turn)
    var line = try JSONSerialization.data(withJSONObject: turn, options: [.sortedKeys, .withoutEscapingSlashes])
    line.append(0x0A)
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o600)
    guard fd >= 0 else { throw PipelineError.file(path: path, message: "cannot open the session log") }
    defer { close(fd) }
    let n = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard n == line.count else { throw PipelineError.file(path: path, message: "short write to the session log") }
    fsync(fd)
  }

  /// Exports the transcript as Markdown and JSON (PATH.md and PATH.json, or PATH as given when
  /// it ends in .md or .json plus its twin).
  public func export(to path: String) throws -> [String] {
    let base = path.hasSuffix(".md") || path.hasSuffix(".json") ? (path as NSString).deletingPathExtension : path
    var md = "# Eosin chat transcript\n\nDRAFT — generated by software, requires review by a pathologist.\n\n"
    var slide = ""
    for t in turns {
      let name = t["slide_name"] as? String ?? ""
      if name != slide {
        slide = name
        md += "## \(name.isEmpty ? "(no slide)" : name)\n\n"
        md += "- file: `\(t["slide"] ?? "")`, content hash `\(t["slide_hash"] ?? "")`\n"
        md += "- models: CLIP sha256 `\(t["clip_sha256"] ?? "")`, decoder sha256 `\(t["decoder_sha256"] ?? "")`"
        if let lm = t["language_model"] { md += ", language model `\(lm)`" }
        md += "\n\n"
      }
      md += "**Q:** \(t["question"] ?? "")\n\n**A:** \(t["answer"] ?? "")\n\n\(t["shown"] ?? "")\n\n"
      if let ev = t["evidence"] as? [[String: Any]], !ev.isEmpty {
        md += "evidence: " + ev.map { "\($0["label"] ?? "")" }.joined(separator: ", ") + "\n\n"
      }
    }
    try writeAtomically(Data(md.utf8), to: base + ".md")
    try writeAtomically(
      try JSONSerialization.data(
        withJSONObject: ["turns": turns], options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
      to: base + ".json")
    return [base + ".md", base + ".json"]
  }
}

/// Splits a REPL command line into words as a shell does: whitespace separates words; single
/// quotes keep everything literally; double quotes keep spaces, with `\"` and `\\` escaped;
/// outside quotes a backslash escapes the next character (`my\ slide.svs`).
public enum ShellWords {
  /// - Throws: ``PipelineError/input`` for an unterminated quote.
  public static func split(_ line: String) throws -> [String] {
    var words: [String] = []
    var cur = ""
    var inWord = false
    let it = Array(line)
    var i = 0
    /// Reads a quoted run up to `quote`; in double quotes `\"` and `\\` are escapes.
    func quoted(_ quote: Character) throws {
      while i < it.count {
        let d = it[i]
        i += 1
        if d == quote { return }
        if quote == "\"", d == "\\", i < it.count, it[i] == "\"" || it[i] == "\\" {
          cur.append(it[i])
          i += 1
        } else {
          cur.append(d)
        }
      }
      throw PipelineError.input("unterminated \(quote) quote in: \(line)")
    }
    while i < it.count {
      let c = it[i]
      i += 1
      switch c {
      case " ", "\t", "\n":
        if inWord { words.append(cur) }
        cur = ""
        inWord = false
      case "'", "\"":
        inWord = true
        try quoted(c)
      case "\\":
        inWord = true
        if i < it.count {
          cur.append(it[i])
          i += 1
        }
      default:
        inWord = true
        cur.append(c)
      }
    }
    if inWord { words.append(cur) }
    return words
  }
}

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

  /// - Parameter manifest: the bundle's manifest, whose recorded sha256 saves hashing the weights.
  public init(directory: String, imageDim: Int, manifest: [String: Any] = [:]) throws {
    let ck = try Checkpoint(path: directory)
    decoder = try GPT2Model(checkpoint: ck)
    tokenizer = try Tokenizer.load(directory)
    let pf = try SafeTensorsFile(path: directory + "/projector.safetensors")
    guard let h = pf.tensors["mm_projector.0.weight"]?.shape.first else {
      throw PipelineError.file(path: pf.path, message: "no mm_projector.0.weight")
    }
    projector = try Projector(file: pf, inDim: imageDim, hidden: h, outDim: decoder.channels)
    decoderSHA256 = try ModelBundle.recordedSHA(manifest, "decoder/model.safetensors", ck.weights.path) ?? ck.weightsSHA256()
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
  /// The note of Eosin's that the answer drew on (`FILE#id`), when a language model answered.
  public var source: String? = nil
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
  public let promptSets: [PromptSet]
  public var sampler = Sampler()
  public var maxTokens = 40
  /// Slide tokens per question (plus one global token).
  public let tilesPerQuestion = 4

  public private(set) var source: String?
  public private(set) var embeddings: SlideEmbeddings?
  public private(set) var facts = InputFacts()
  public private(set) var slideInfo: [String: String] = [:]
  public internal(set) var lastAnswer: ChatAnswer?
  /// When set, answers come from this pretrained language model, grounded on the classifier and
  /// Eosin's notes (``GroundedLM``), instead of the embedded small decoder.
  public var grounded: GroundedLM?
  /// The prompt set that judges answers when the question names no organ (a report template's
  /// set); nil: the set whose classes best match the input.
  public var preferredSet: String?
  /// The joint classifier's prompt set over the organ sets, built once.
  var jointSet: PromptSet?
  /// The first diagnosis an answer named on the open slide (class name), for the cross-turn
  /// consistency check.
  public private(set) var firstDiagnosis: String?
  var classifiers: [String: ZeroShotClassifier] = [:]
  var verdicts: [String: SlideResult] = [:]

  public init(bundle: ModelBundle, chat: ChatModel, promptSets: [PromptSet], cacheDir: String?) {
    self.bundle = bundle
    self.chat = chat
    self.promptSets = promptSets
    self.cacheDir = cacheDir
  }

  /// Opens a slide, or one or more images treated as the tiles of one case.
  /// - Throws: the slide or image error, naming the file; the session keeps what it had.
  public func open(_ paths: [String], overrideMPP: Double? = nil, progress: (Int, Int) -> Void = { _, _ in }) throws {
    guard let first = paths.first else { throw PipelineError.input("nothing to open") }
    let items = try InputCollector.collect(paths)
    if items.count == 1 && items[0].1 == .slide {
      let s = try Slide(path: first)
      let tissue = try TissueDetector().detect(s)
      let e = try SlideIndex.embed(
        slide: s, tissue: tissue, bundle: bundle, overrideMPP: overrideMPP, cacheDir: cacheDir, progress: progress)
      embeddings = e
      facts = InputFacts(mppMissing: s.mppX == nil, notBrightfield: tissue.modalityReason, tissueFraction: tissue.tissueFraction)
      let (W, H) = s.dimensions
      slideInfo = [
        "file": (first as NSString).lastPathComponent, "vendor": s.vendor, "size": "\(W) x \(H) px",
        "levels": "\(s.levels.count)",
        "mpp": (overrideMPP ?? s.mppX).map { String(format: "%.4f", $0) } ?? "unknown",
        "tissue": String(format: "%.1f%%", tissue.tissueFraction * 100),
        "tiles": "\(e.tiles.count) at \(String(format: "%.3f", e.mpp)) µm/px, \(e.tileSize) px"
          + (e.fromCache ? " (from cache)" : ""),
        "modality": tissue.modality.rawValue,
      ]
    } else {
      let imgs = try items.map { try ImageCodec.read($0.0) }
      let emb = SlideIndex.embedImages(imgs, bundle: bundle)
      let tiles = imgs.indices.map { TileRef(index: $0, col: $0, row: 0, x: 0, y: 0, size0: imgs[$0].width, tissue: 1) }
      embeddings = SlideEmbeddings(
        tiles: tiles, embeddings: emb, dim: bundle.clip.embedDim, tileSize: bundle.tileSize, mpp: bundle.mpp,
        extent0: Double(bundle.tileSize), fromCache: false, readSeconds: 0, encodeSeconds: 0)
      facts = InputFacts()
      slideInfo = [
        "file": items.map { ($0.0 as NSString).lastPathComponent }.joined(separator: ", "), "tiles": "\(imgs.count) images",
      ]
    }
    source = first
    verdicts = [:]
    lastAnswer = nil
    firstDiagnosis = nil
  }

  /// The classifier and slide verdict for a prompt set (computed once per slide).
  public func verdict(_ set: PromptSet) throws -> (ZeroShotClassifier, SlideResult) {
    guard let e = embeddings else { throw PipelineError.input("no slide is open; use :open PATH") }
    let clf = try classifiers[set.name] ?? ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cacheDir)
    classifiers[set.name] = clf
    if let v = verdicts[set.name] { return (clf, v) }
    let r = SlidePooling.pool(
      clf.predict(e.embeddings), tiles: e.tiles, extent0: e.extent0, classifier: clf, k: nil, facts: facts,
      policy: ReviewPolicy(thresholds: bundle.thresholds))
    verdicts[set.name] = r
    return (clf, r)
  }

  /// The prompt set named by the question (organ words), else the organ set whose classes best
  /// match the open input: one joint classifier over every organ set's tissue classes (their
  /// similarities are comparable, unlike probabilities normalised within each set), and the set
  /// that owns its verdict. Measured on test tiles: EBHI 60/60 colorectal, LC25000 58/59 lung;
  /// the old rule (the most confident set's verdict) sent most EBHI tiles to the lung set.
  public func promptSet(for question: String) throws -> PromptSet {
    let q = question.lowercased()
    let organ: [(String, [String])] = [
      ("colorectal", ["colon", "colorectal", "rectum", "rectal", "bowel", "polyp"]), ("lung", ["lung", "pulmonary", "bronch"]),
    ]
    for (name, words) in organ where words.contains(where: { q.contains($0) }) {
      if let s = promptSets.first(where: { $0.name == name }) { return s }
    }
    if let p = preferredSet, let s = promptSets.first(where: { $0.name == p }) { return s }
    let organSets = promptSets.filter { $0.name == "lung" || $0.name == "colorectal" }
    let cands = organSets.isEmpty ? promptSets : organSets
    guard let first = cands.first else { throw PipelineError.input("no prompt sets loaded") }
    if cands.count == 1 { return first }
    let name = "organ-choice(" + cands.map(\.name).joined(separator: "+") + ")"
    let joint =
      try jointSet.flatMap { $0.name == name ? $0 : nil }
      ?? PromptSet(name: name, classes: cands.flatMap { $0.classes }, templates: first.templates, background: first.background)
    jointSet = joint
    let (clf, r) = try verdict(joint)
    let best = clf.classNames[r.verdict]
    if let s = cands.first(where: { $0.classes.contains { $0.name == best } }) { return s }
    // The joint verdict is the background: keep the most confident organ set's verdict.
    return try cands.max { try verdict($0).1.confidence.probability < verdict($1).1.confidence.probability }!
  }

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
    if let g = grounded { return try askGrounded(question, g, onToken: onToken) }
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
    // Generator confidence: mean probability over the content tokens (words, not punctuation).
    var ps: [Float] = []
    for (t, p) in zip(gen.tokens, gen.probs) where !eos.contains(t) {
      let s = chat.tokenizer.decode([t]).trimmingCharacters(in: .whitespaces)
      if s.unicodeScalars.contains(where: { CharacterSet.letters.contains($0) }) { ps.append(p) }
    }
    let genConf = ps.isEmpty ? 0 : ps.reduce(0, +) / Float(ps.count)
    let set = try promptSet(for: question)
    let (clf, r) = try verdict(set)
    let named = Consistency.namedClass(answer, set: set)
    // Only when this set's classes are not named: a class of another organ's set.
    let other = named == nil ? Consistency.namedClass(answer, sets: promptSets.filter { $0.name != set.name }) : nil
    let saysNoTissue = answer.lowercased().contains("no interpretable tissue")
    var consistent: Bool? = nil
    var flags: [ReviewFlag] = []
    let verdictName = clf.classNames[r.verdict]
    let isBackground = r.verdict == clf.backgroundIndex
    if let n = named {
      consistent = n == r.verdict
      if n != r.verdict {
        flags.append(
          ReviewFlag(code: "inconsistent", reason: "answer disagrees with classifier (\(clf.classNames[n]) vs \(verdictName))"))
      }
    } else if let (otherSet, otherName) = other, otherName != set.background?.name {
      // The answer names a class of another organ's prompt set: it cannot agree with this verdict.
      consistent = false
      flags.append(
        ReviewFlag(
          code: "inconsistent",
          reason: "answer names \(otherName) (\(otherSet) set) but the classifier sees \(verdictName) (\(set.name) set)"))
    } else if saysNoTissue != isBackground && (saysNoTissue || Consistency.soundsDiagnostic(answer)) {
      consistent = false
      flags.append(
        ReviewFlag(
          code: "inconsistent",
          reason: saysNoTissue
            ? "answer says no tissue but the classifier sees \(verdictName)"
            : "answer gives a diagnosis but the classifier sees no interpretable tissue"))
    }
    // Across turns: an answer naming a different diagnosis from an earlier one on this slide.
    let answerDiagnosis = named.map { clf.classNames[$0] } ?? other?.1
    if let d = answerDiagnosis, !cancelled {
      if let first = firstDiagnosis, first != d {
        consistent = false
        flags.append(ReviewFlag(code: "self-contradiction", reason: "answer names \(d), an earlier answer named \(first)"))
      } else if firstDiagnosis == nil {
        firstDiagnosis = d
      }
    }
    var conf = r.confidence
    conf.generator = genConf
    conf.consistent = consistent
    // Slide-level flags from the classifier, then the generator's own.
    flags += r.flags.filter { $0.code != "inconsistent" }
    if genConf < 0.5 {
      flags.append(
        ReviewFlag(
          code: "unsure-generator", reason: String(format: "the answer's wording is uncertain (token probability %.2f)", genConf))
      )
    }
    if cancelled { flags.append(ReviewFlag(code: "cancelled", reason: "answer was cancelled")) }
    let evidence = picks.map {
      EvidenceTile(x: e.tiles[$0].x, y: e.tiles[$0].y, size: Int(e.extent0.rounded()), probability: r.tiles[$0].probs[r.verdict])
    }
    let a = ChatAnswer(
      question: question, text: answer, cancelled: cancelled, confidence: conf, flags: flags, evidence: evidence,
      promptSet: set.name,
      verdict: verdictName, verdictProbability: r.probs[r.verdict], answerClass: named.map { clf.classNames[$0] })
    lastAnswer = a
    return a
  }
}

/// Maps diagnosis terms in generated text to prompt-set classes.
public enum Consistency {
  /// The class (by name or synonym, longest match first) that the text names, if exactly one.
  public static func namedClass(_ text: String, set: PromptSet) -> Int? {
    let t = text.lowercased()
    var hits: Set<Int> = []
    var phrases: [(String, Int)] = []
    for (k, c) in set.allClasses.enumerated() { for p in c.phrases { phrases.append((p.lowercased(), k)) } }
    phrases.sort { $0.0.count > $1.0.count }
    var rest = t
    for (p, k) in phrases where rest.contains(p) {
      hits.insert(k)
      rest = rest.replacingOccurrences(of: p, with: " ")
    }
    return hits.count == 1 ? hits.first : nil
  }

  /// The first of `sets` (in order) whose classes the text names, with that class's name.
  public static func namedClass(_ text: String, sets: [PromptSet]) -> (String, String)? {
    for s in sets { if let k = namedClass(text, set: s) { return (s.name, s.allClasses[k].name) } }
    return nil
  }

  /// Whether text reads like a diagnosis (names a lesion).
  public static func soundsDiagnostic(_ text: String) -> Bool {
    let t = text.lowercased()
    return [
      "carcinoma", "adenoma", "neoplasia", "dysplasia", "polyp", "tumour", "tumor", "malignant", "benign", "consistent with",
    ].contains { t.contains($0) }
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

  /// - Parameter languageModel: the GGUF file that answered, when not the embedded decoder.
  public func append(
    _ a: ChatAnswer, source: String?, bundle: ModelBundle, chat: ChatModel, mpp: Double?, tileSize: Int?,
    languageModel: String? = nil
  ) throws {
    var turn: [String: Any] = [
      "time": ISO8601DateFormatter().string(from: Date()), "slide": source ?? "", "question": a.question, "answer": a.text,
      "cancelled": a.cancelled,
      "clip_sha256": bundle.clipSHA256, "decoder_sha256": chat.decoderSHA256, "prompt_set": a.promptSet, "mpp": mpp ?? 0,
      "tile_size": tileSize ?? 0,
      "verdict": a.verdict, "verdict_probability": Double(a.verdictProbability),
      "generator_confidence": Double(a.confidence.generator ?? 0),
      "consistent": a.confidence.consistent.map { $0 as Any } ?? NSNull(),
      "flags": a.flags.map { ["code": $0.code, "reason": $0.reason] },
      "evidence": a.evidence.map { ["x": $0.x, "y": $0.y, "size": $0.size] },
      "confidence": Double(a.confidence.probability),
    ]
    if let src = a.source { turn["source"] = src }
    if let lm = languageModel { turn["language_model"] = lm }
    turns.append(turn)
    var line = try JSONSerialization.data(withJSONObject: turn, options: [.sortedKeys])
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
    for t in turns {
      md += "**Q:** \(t["question"] ?? "")\n\n**A:** \(t["answer"] ?? "")\n\n"
      let flags = (t["flags"] as? [[String: String]]) ?? []
      md +=
        flags.isEmpty
        ? "confidence \(String(format: "%.2f", t["confidence"] as? Double ?? t["verdict_probability"] as? Double ?? 0))\n\n"
        : "⚠ **REVIEW:** " + flags.map { $0["reason"] ?? "" }.joined(separator: "; ") + "\n\n"
    }
    try writeAtomically(Data(md.utf8), to: base + ".md")
    try writeAtomically(
      try JSONSerialization.data(withJSONObject: ["turns": turns], options: [.prettyPrinted, .sortedKeys]), to: base + ".json")
    return [base + ".md", base + ".json"]
  }
}

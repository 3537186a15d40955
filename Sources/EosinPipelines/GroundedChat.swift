import EosinModels
import EosinTokenizer
import EosinWeights
import Foundation

/// A pretrained GGUF language model answering chat questions, grounded on the open slide's facts,
/// the classifier's verdict and Eosin's notes (retrieved per question), and, when Eosin trained a
/// projector for this very model (``projector``), conditioned on slide tokens: projected CLIP
/// embeddings of the question's tiles and the slide's mean, spliced into the user turn as
/// `train lm-projector` placed them. The slide's context is prefilled once and
/// its KV cache reused across turns; the cache holds 1024 positions (about 47 MB for SmolLM2),
/// enough for the context, the notes and the answer. Not thread-safe.
public final class GroundedLM {
  public let lm: LanguageModel
  public let notes: KnowledgeNotes
  /// The slide-token projector trained for this model (its sha256 checked), or nil: then answers
  /// are grounded on the classifier and the notes alone.
  public var projector: Projector?
  /// The low-rank adapters trained with ``projector`` (`train lm-adapters`), loaded with it. They
  /// are part of the slide conditioning: a turn with slide tokens runs the model with them, any
  /// other turn (a general or off-topic question) runs the model as its file has it, because
  /// on general questions they cost more than they gave (EVALUATION.md, "Chat answers").
  public var adapters: LoRAAdapters?
  public var maxTokens = 96
  /// A small model loops without it; a mild 1.1 stops the loops without pushing it off topic.
  public var repeatPenalty: Float = 1.1
  /// Answers stop after this many sentences: a 135M model copies the notes faithfully at first
  /// and drifts after.
  public var maxSentences = 2
  /// Allocated on the first answer, then reused (grown only when a turn needs more room).
  var state: LlamaState?
  var cachedPrefix: [Int32] = []
  /// Whether the cached prefix was computed with the adapters.
  var cachedAdapted = false
  /// The last answer's generation: its prompt tokens after the cached prefix (the user turn,
  /// slide tokens included), their prefill time, and the decode.
  public private(set) var lastGeneration: Generation?
  /// How many answers the model has generated (an answer Eosin gives from its own records, such
  /// as a fact question's, leaves it unchanged).
  public private(set) var generations = 0

  /// Embeddings of Eosin's notes by this model's hidden states (``NoteEmbeddings``), fused with
  /// BM25 when a question retrieves its notes; nil: BM25 alone.
  public var noteEmbeddings: NoteEmbeddings?

  /// The model and its notes; `denseRetrieval` embeds the notes with the model (read from the
  /// cache folder after the first time), else retrieval is BM25 alone.
  /// - Throws: ``PipelineError`` when a note cannot be embedded.
  public init(lm: LanguageModel, notes: KnowledgeNotes, denseRetrieval: Bool = false) throws {
    self.lm = lm
    self.notes = notes
    if denseRetrieval { noteEmbeddings = try NoteEmbeddings(notes: notes, lm: lm) }
  }

  /// Sets ``projector`` from the weights' manifest (`language_model.projector`) when the
  /// projector was trained for this very file: its metadata records the language model's sha256,
  /// compared with the file's (``LanguageModel/Default/cachedSHA256(_:)``).
  /// - Returns: nil when slide tokens are on, else why they are off.
  /// - Throws: ``PipelineError/file`` when the projector file does not match its manifest hash.
  public func loadProjector(from b: ModelBundle) throws -> String? {
    projector = nil
    adapters = nil
    guard let rel = b.manifest.languageModel?.projector else { return "Eosin has trained no projector for it" }
    let file = b.directory + "/" + rel
    _ = try ModelBundle.verifiedSHA(b.manifest, rel, file)
    let st = try SafeTensorsFile(path: file)
    let sha = try LanguageModel.Default.cachedSHA256(lm.path)
    guard st.metadata["language_model_sha256"] == sha else {
      return "the projector in \(rel) was trained for another language model"
    }
    let hidden = st.tensors["mm_projector.0.weight"]?.shape.first ?? 0
    projector = try Projector(file: st, inDim: b.clip.embedDim, hidden: hidden, outDim: lm.model.config.channels)
    // The adapters were trained together with this projector, for this model.
    if let arel = b.manifest.languageModel?.adapters {
      let afile = b.directory + "/" + arel
      _ = try ModelBundle.verifiedSHA(b.manifest, arel, afile)
      let at = try SafeTensorsFile(path: afile)
      guard at.metadata["language_model_sha256"] == sha else {
        projector = nil
        return "the adapters in \(arel) were trained for another language model"
      }
      adapters = try LoRAAdapters(file: at, config: lm.model.config)
    }
    return nil
  }

  /// The token ids of a rendered turn on either side of ``ChatSession/slideMarker``, where the
  /// slide tokens go; training (`train lm-projector`) and chat split the same way.
  public static func encodeAroundSlide(_ text: String, _ tok: Tokenizer, addSpecial: Bool) -> (before: [Int32], after: [Int32]) {
    let parts = text.components(separatedBy: ChatSession.slideMarker)
    return (
      tok.encodeLlama(parts[0], addSpecial: addSpecial, parseSpecial: true),
      tok.encodeLlama(parts.dropFirst().joined(separator: ChatSession.slideMarker), addSpecial: false, parseSpecial: true)
    )
  }

  /// The token ids of a grounded turn (``ChatSession/GroundedTurn``), as chat runs it and
  /// `train lm-adapters` trains on it:
  /// - `prefix`: the system turn and the user turn up to the end of its `lead` (the part that
  ///   depends on the slide only), which chat keeps in the KV cache across questions;
  /// - `before`: the rest of the user turn up to ``ChatSession/slideMarker`` (all of it when
  ///   `slide` is false);
  /// - `after`: the user turn after the marker and the assistant opening (empty when `slide` is
  ///   false).
  ///
  /// The text is cut at the lead's end, which ends in a newline, a token boundary of the
  /// byte-level tokenizers, so each part is encoded on its own.
  public static func turnTokens(
    system: String, user: String, lead: String, slide: Bool, template: ChatTemplate, tokenizer tok: Tokenizer
  ) -> (prefix: [Int32], before: [Int32], after: [Int32]) {
    var prefix = tok.encodeLlama(
      template.render([(role: "system", content: system)], generationPrompt: false), addSpecial: true, parseSpecial: true)
    var rest = template.render([(role: "user", content: user)], generationPrompt: true)
    if !lead.isEmpty, user.hasPrefix(lead), let r = rest.range(of: lead) {
      prefix += tok.encodeLlama(String(rest[..<r.upperBound]), addSpecial: false, parseSpecial: true)
      rest = String(rest[r.upperBound...])
    }
    guard slide else { return (prefix, tok.encodeLlama(rest, addSpecial: false, parseSpecial: true), []) }
    let (b, a) = encodeAroundSlide(rest, tok, addSpecial: false)
    return (prefix, b, a)
  }

  /// The mean probability of the generated tokens that overlap the first occurrence of `phrase`
  /// (case-insensitive) in `text`, the streamed text those tokens spell; nil when absent.
  static func probability(of phrase: String, in text: String, tokens: [Int32], probabilities: [Float], tokenizer: Tokenizer)
    -> Float?
  {
    let bytes = Array(text.lowercased().utf8), needle = Array(phrase.lowercased().utf8)
    guard !needle.isEmpty, bytes.count >= needle.count, text.lowercased().utf8.count == text.utf8.count else { return nil }
    var start = -1
    for i in 0...(bytes.count - needle.count) where bytes[i] == needle[0] && Array(bytes[i..<(i + needle.count)]) == needle {
      start = i
      break
    }
    guard start >= 0 else { return nil }
    let end = start + needle.count
    var off = 0
    var ps: [Float] = []
    for (t, p) in zip(tokens, probabilities) {
      let n = tokenizer.bytes(of: t).count
      if off < end && off + n > start { ps.append(p) }
      off += n
      if off >= end { break }
    }
    return ps.isEmpty ? nil : ps.reduce(0, +) / Float(ps.count)
  }

  /// Generates and streams at most ``maxSentences`` sentences; returns the generation and the
  /// text streamed (the answer, cut at the sentence end).
  func generate(
    prefix: [Int32], slide: (before: [Int32], tokens: [Float])? = nil, rest: [Int32], onText: (String) -> Bool
  ) throws -> (Generation, String) {
    var text = ""
    var sentences = 0
    var stopped = false
    let limit = maxSentences
    lastGeneration = nil
    let g = try generateRaw(prefix: prefix, slide: slide, rest: rest) { piece in
      var emit = ""
      for ch in piece {
        if ch == " " || ch == "\n", let last = (text + emit).last, ".!?".contains(last) {
          sentences += 1
          if sentences >= limit {
            stopped = true
            break
          }
        }
        emit.append(ch)
      }
      text += emit
      if !emit.isEmpty && !onText(emit) { return false }
      return !stopped
    }
    lastGeneration = g
    generations += 1
    return (g, text)
  }

  /// Generates after `prefix` (reusing its cached positions when it equals the last one) and
  /// `rest`, streaming text to `onText`.
  private func generateRaw(
    prefix: [Int32], slide: (before: [Int32], tokens: [Float])?, rest: [Int32], onText: (String) -> Bool
  ) throws -> Generation {
    let C = lm.model.config.channels
    let slideCount = slide.map { $0.before.count + $0.tokens.count / C } ?? 0
    let need = prefix.count + slideCount + rest.count + maxTokens + 8
    let options = SamplingOptions(maxTokens: maxTokens, repeatPenalty: repeatPenalty)
    // The user turn up to the slide tokens, the tokens themselves and the rest of the turn go in
    // as one forward pass of embeddings after the cached prefix.
    var embeddings: [Float]? = nil
    var promptIDs = rest
    if let sl = slide {
      embeddings = lm.model.embed(sl.before) + sl.tokens + lm.model.embed(rest)
      promptIDs = sl.before + [Int32](repeating: 0, count: sl.tokens.count / C) + rest
    }
    // Adapters with slide tokens only (``adapters``); the cached prefix must match that choice.
    lm.model.adapters = slide == nil ? nil : adapters
    if let s = state, s.capacity >= need, !cachedPrefix.isEmpty, cachedPrefix == prefix, s.position >= prefix.count,
      cachedAdapted == (lm.model.adapters != nil)
    {
      s.truncate(to: prefix.count)
      return try lm.generate(prompt: promptIDs, embeddings: embeddings, state: s, options: options, onText: onText)
    }
    let s = state.flatMap { $0.capacity >= need ? $0 : nil } ?? lm.model.makeState(capacity: max(1024, need))
    s.truncate(to: 0)
    state = s
    cachedPrefix = []
    _ = try lm.model.forward(prefix, state: s)
    cachedPrefix = prefix
    cachedAdapted = lm.model.adapters != nil
    return try lm.generate(prompt: promptIDs, embeddings: embeddings, state: s, options: options, onText: onText)
  }

}

/// The claims in an answer that matter, checked against the classifier and the slide: which
/// diagnoses and organs it names, benign or malignant polarity, and whether it gives a diagnosis
/// at all when the question was not about the slide. Each failed check is a review flag that
/// quotes the claim.
public enum ClaimGate {
  /// Diagnosis terms that are not classes of Eosin's prompt sets; naming one is a claim no
  /// classifier supports. The abbreviations pathologists write for specific diagnoses count
  /// too (whole words only): a small model likes to add them ("Lung SCLC").
  public static let diagnosisTerms = [
    "melanoma", "lymphoma", "leukemia", "leukaemia", "sarcoma", "glioma", "glioblastoma", "mesothelioma", "carcinoid",
    "neuroendocrine", "small cell carcinoma", "small-cell carcinoma", "small cell lung cancer", "large cell carcinoma",
    "adenocarcinoma", "squamous cell carcinoma", "carcinoma", "adenoma", "dysplasia", "neoplasia", "metastasis", "metastatic",
    "tuberculosis", "granuloma", "sarcoidosis", "infarct", "hamartoma", "myeloma", "seminoma", "teratoma", "blastoma", "tumour",
    "tumor", "cancer", "malignancy", "lesion", "polyp", "hyperplasia", "gleason", "sclc", "gist", "dlbcl", "hcc", "rcc", "dcis",
    "lcis", "hsil", "lsil", "aml", "cll", "mds",
  ]
  static let malignantWords = ["malignant", "malignancy", "cancer", "carcinoma", "sarcoma", "metastatic", "invasive"]
  static let benignWords = ["benign", "normal tissue", "no malignancy", "non-neoplastic", "nonneoplastic", "reactive"]
  /// Claims of each polarity, including the negated forms of the other ("not malignant").
  static let benignClaims = benignWords + ["not malignant", "not cancer", "no cancer", "no carcinoma", "no tumour", "no tumor"]
  static let malignantClaims = malignantWords + ["not benign"]
  /// Words that name a lesion without saying which: compatible with a malignant verdict.
  static let genericTerms: Set<String> = ["tumour", "tumor", "cancer", "malignancy", "lesion", "neoplasia", "metastatic"]
  static let negations = ["no ", "not ", "without ", "negative for ", "free of ", "absence of ", "rule out ", "ruled out "]
  static let slideWords = [
    "slide", "tissue", "this", "these", "here", "tile", "image", "diagnos", "malignan", "benign", "tumor", "tumour", "cancer",
    "grade", "cells", "lesion", "finding", "feature", "stain", "biopsy", "specimen", "sample", "case", "organ", "see", "seen",
    "show", "look",
  ]

  /// Whether text asserts a diagnosis (a lesion term, not negated).
  public static func namesDiagnosis(_ text: String) -> Bool {
    let t = text.lowercased()
    return (diagnosisTerms + malignantWords + ["benign"]).contains { asserted($0, in: t, original: text) != nil }
  }

  /// Whether a question asks for the diagnosis itself ("What is the diagnosis?", "What does
  /// this show?"), not a yes/no or a feature question: its answer must name a class the
  /// classifier can check.
  public static func asksForDiagnosis(_ question: String) -> Bool {
    let q = " " + question.lowercased().replacingOccurrences(of: "?", with: " ") + " "
    return [
      "diagnos", "what is this ", "what is it ", "what is shown", "what does this show", "what does it show",
      "what do you see", "what tissue", "what type of", "what kind of", "which tumour", "which tumor", "what lesion",
      "classify", "what is the lesion", "what is the tumour", "what is the tumor",
    ].contains { q.contains($0) }
  }

  /// Words that point at the open slide ("this", "these tiles", "is it").
  static let deicticWords = [
    " this ", " these ", " here ", " it ", " its ", " they ", " the slide", " the tile", " the image", " the biopsy",
    " the specimen", " the sample", " the case", " the tissue", " you see", " shown",
  ]
  /// How questions of general knowledge open: they ask about a kind of thing, not this one.
  static let genericOpenings = [
    "what is a ", "what is an ", "what are ", "what causes ", "what does ", "what do ", "what colour ", "what color ",
    "which ", "how do ", "how does ", "how is ", "how are ", "why ", "what is the difference", "what is the most common ",
    "what is the commonest ", "define ", "explain ", "when ",
  ]

  /// Words that point at the open slide whatever else the question says ("Is there cancer
  /// here?", "What do you see in these tiles?").
  static let strongDeicticWords = [
    " this ", " these ", " here ", " the slide", " the tile", " the image", " the biopsy", " the specimen", " the sample",
    " the case", " you see", " shown",
  ]
  /// Phrases in which "it" points at nothing on the slide ("What does it mean when ...?", "What
  /// is it called when ...?").
  static let idioms = ["what does it mean", "what is it called", "is it called", "what do you call", "how is it called"]
  /// Marks of a question about a kind of thing, not the open slide: a naming question ("What is
  /// a quick diagnosis on chilled tissue during surgery called?"), a condition or a time ("...
  /// when it has broken through the bowel wall?"), a population or a frequency ("the deadliest
  /// brain tumour of adults", "the most frequent type of breast cancer", "typical of
  /// tuberculosis"), a comparison, or how practice goes ("How can a surgeon ...?").
  static let generalMarkers = [
    " called ", " the name for ", " when ", " while ", " typical", " typically ", " usual ", " usually ", " most ",
    " commonest ", " deadliest ", " adults ", " children ", " the same as ", " how can ", " how do doctors ",
    " how do pathologists ", " in general ", " normally ",
  ]

  /// Whether a question is about the open slide (or tiles), judged by its words:
  /// - it points at the slide ("this", "these tiles", "here", "the biopsy"): yes;
  /// - it has the marks of a question about a kind of thing (``generalMarkers``: "What is it
  ///   called when ...?", "What is the most frequent type of breast cancer?"): no;
  /// - a what/which/how/why question that names an organ without pointing at the slide (not
  ///   even "it" or "they": "What kind of cancer grows from the inner lining of the bladder?")
  ///   and does not ask for a grade or diagnosis: no;
  /// - it asks for the diagnosis ("What is the diagnosis?", "What is it?"): yes;
  /// - it names "tiles" or "slide" without an indefinite article ("Which tiles look
  ///   malignant?"; "a glass slide" is any slide): yes;
  /// - otherwise it uses slide words ("tissue", "grade", "features") and points at the slide
  ///   ("is it", "they"), or lacks the form of a general-knowledge question ("What is a
  ///   granuloma?", "Which cells dominate acute inflammation?").
  ///
  /// A general question is answered from Eosin's notes, not from the classifier.
  public static func isAboutSlide(_ question: String) -> Bool {
    let lower = question.lowercased()
    var q = " " + String(lower.map { ".,;:!?\"".contains($0) ? " " : $0 }) + " "
    if strongDeicticWords.contains(where: { q.contains($0) }) { return true }
    for i in idioms { q = q.replacingOccurrences(of: i, with: " ") }
    if generalMarkers.contains(where: { q.contains($0) }) { return false }
    let opening = q.trimmingCharacters(in: .whitespaces)
    if ["what ", "which ", "how ", "why ", "where "].contains(where: { opening.hasPrefix($0) }),
      !OrganLexicon.organs(in: lower).isEmpty,
      !deicticWords.contains(where: { q.contains($0) }), !["grade", "diagnos"].contains(where: { lower.contains($0) })
    {
      return false
    }
    if asksForDiagnosis(question) && !idioms.contains(where: { lower.contains($0) }) { return true }
    guard slideWords.contains(where: { (" " + lower + " ").contains($0) }) else { return false }
    // "tiles" and "slide" without an indefinite article name the open input ("Which tiles look
    // malignant?"); "a slide", "a glass slide" and "any slide" are any slide.
    let words = q.split(separator: " ").map(String.init)
    for (i, w) in words.enumerated() where ["tile", "tiles", "slide", "slides"].contains(w) {
      let before = words[max(0, i - 2)..<i]
      if !before.contains(where: { ["a", "an", "any", "every", "each"].contains($0) }) { return true }
    }
    if deicticWords.contains(where: { q.contains($0) }) { return true }
    let generic = genericOpenings.contains { opening.hasPrefix($0) } || q.contains(" a ") || q.contains(" an ")
    return !generic
  }

  /// The polarity a bare yes or no gives to a question that asks about one: "Yes" to "Is this
  /// benign?" calls the tissue benign, and so does "No" to "Is it cancer?". Returns whether the answer
  /// calls it malignant, and its opening word to quote; nil when the question is not a yes/no
  /// question about one polarity (or is negated: "Isn't this benign?") or the answer opens
  /// with neither word.
  public static func answeredPolarity(question: String, answer: String) -> (malignant: Bool, quote: String)? {
    guard let asksMalignant = askedPolarity(question) else { return nil }
    let first = answer.prefix { $0.isLetter }
    let yes: Bool
    switch first.lowercased() {
    case "yes": yes = true
    case "no": yes = false
    default: return nil
    }
    return (asksMalignant == yes, String(first))
  }

  /// Whether `q` (lower-cased, punctuation as spaces, padded with a space) is a yes/no question
  /// that is not negated ("Is this ...?", not "Isn't this ...?").
  static func isPlainYesNo(_ q: String) -> Bool {
    let openings = [" is ", " are ", " does ", " do ", " could ", " can ", " was ", " were ", " has ", " have "]
    return openings.contains(where: { q.hasPrefix($0) }) && !q.contains(" not ") && !q.contains("n t ")
  }

  /// The class of `set` a yes/no question asks about ("Is this an adenocarcinoma?" asks about
  /// lung adenocarcinoma in the lung set): a phrase of the class, or a word of its phrases
  /// that no other class of the set uses and that says more than the set's organ or a polarity
  /// ("adenocarcinoma", "squamous", "4" in "Gleason pattern 4", not "lung", "carcinoma" or
  /// "benign"). nil for another question, a negated one, or one that names several classes.
  public static func askedClass(_ question: String, _ set: PromptSet) -> String? {
    guard isPlainYesNo(spaced(question)) else { return nil }
    return namedClass(question, set)
  }

  /// `text` lowercased, every character but letters, digits and hyphens a space, with a space
  /// at either end (so " word " matches whole words).
  static func spaced(_ text: String) -> String {
    " " + text.lowercased().map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : " " } + " "
  }

  /// The class of `set` a question names, as ``askedClass(_:_:)`` finds it but in any question
  /// ("Which tiles look most like Gleason pattern 4?"); nil when it names none or several.
  public static func namedClass(_ question: String, _ set: PromptSet) -> String? {
    let q = spaced(question)
    let classes = set.allClasses.filter { $0.name != set.background?.name }
    if let (name, _) = assertedClass(q, question, set), name != set.background?.name { return name }
    func words(_ c: PromptClass) -> Set<String> {
      Set(
        c.phrases.flatMap {
          $0.lowercased().split { !($0.isLetter || $0.isNumber || $0 == "-") }.map(String.init)
        })
    }
    // Words that say no more than a polarity or an organ (any organ's terms are stems:
    // "bronch" covers "bronchial").
    let general = Set(malignantWords + benignWords + genericTerms + ["tissue", "cell", "cells", "normal"])
    let organTerms = (OrganLexicon.organs.flatMap(\.terms) + (set.organWords ?? [])).map { $0.lowercased() }
    func specific(_ w: String) -> Bool {
      (w.count >= 4 || w.allSatisfy(\.isNumber)) && !general.contains(w) && !organTerms.contains { w.hasPrefix($0) }
    }
    let all = classes.map(words)
    var named: [String] = []
    for (i, c) in classes.enumerated() {
      let others = all.enumerated().filter { $0.offset != i }.reduce(into: Set<String>()) { $0.formUnion($1.element) }
      let own = all[i].subtracting(others).filter(specific)
      if own.contains(where: { q.contains(" \($0) ") }) { named.append(c.name) }
    }
    return named.count == 1 ? named[0] : nil
  }

  /// Words a yes/no question may hold without naming anything to look for ("Is there anything
  /// here?").
  static let findingFillers: Set<String> = [
    "there", "here", "this", "these", "that", "it", "any", "anything", "some", "see", "seen", "show", "shows", "present",
    "visible", "tissue", "slide", "tile", "tiles", "image", "sample", "biopsy", "specimen", "case", "area", "areas",
  ]

  /// What a yes/no question about the open slide asks to find when Eosin's classifier cannot
  /// settle it ("Is there necrosis here?" gives "necrosis"; "Are mitoses frequent?" gives
  /// "mitoses frequent"): the question names no class of `set` or of any organ's set, no
  /// polarity, lesion, grade or organ. nil for any other question. A model asked such a question
  /// answered "Yes." at the verdict's confidence; the classifier is no evidence either way.
  public static func uncheckedFinding(_ question: String, _ set: PromptSet) -> String? {
    let lower = question.lowercased()
    let q = spaced(question)
    guard isPlainYesNo(q), askedClass(question, set) == nil, askedPolarity(question) == nil,
      OrganLexicon.organs(in: lower).isEmpty
    else { return nil }
    let named =
      diagnosisTerms + malignantWords + benignWords + Array(genericTerms) + [
        "grade", "gleason", "pattern", "normal", "healthy", "diagnos", "classif", "verdict", "probab", "sure", "confiden",
      ]
    if named.contains(where: { q.contains($0) }) { return nil }
    let classWords = set.allClasses.flatMap(\.phrases).flatMap { $0.lowercased().split { !$0.isLetter }.map(String.init) }
    let skip = findingFillers.union(KnowledgeNotes.stopWords).union(["is", "are", "does", "do", "could", "can", "was", "were"])
    let words = q.split(separator: " ").map(String.init).filter { !skip.contains($0) }
    if words.isEmpty || words.allSatisfy({ classWords.contains($0) }) { return nil }
    return words.joined(separator: " ")
  }

  /// The diagnosis a yes/no question asks about that is none of `set`'s classes ("Is there any
  /// sarcoma here?", "Could this be a melanoma?" on the lung set): a specific term of
  /// ``diagnosisTerms`` that no class name or synonym of the set holds. nil for any other
  /// question, one that names a class, or one about a term a class holds ("Is this a
  /// carcinoma?" on the lung set asks about its polarity). The classifier is no evidence of such
  /// a diagnosis either way: "sarcoma" once got Eosin's own "Yes." because it is a malignant word.
  public static func askedOtherDiagnosis(_ question: String, _ set: PromptSet) -> String? {
    let q = spaced(question)
    guard isPlainYesNo(q) || q.hasPrefix(" could ") || q.hasPrefix(" might "), namedClass(question, set) == nil else {
      return nil
    }
    let known = set.allClasses.flatMap { [$0.name] + $0.synonyms }.map(spaced)
    return diagnosisTerms.first { term in
      guard !genericTerms.contains(term), !known.contains(where: { $0.contains(" \(term) ") }) else { return false }
      return q.contains(" \(term) ") || q.contains(" \(term)s ")
    }
  }

  /// Whether a question asks what the tissue looks like ("Describe the features.", "What
  /// features do these tiles show?", "Which findings support the diagnosis here?"), not a yes/no
  /// question ("Are there worrying features?").
  public static func asksForFeatures(_ question: String) -> Bool {
    let q = spaced(question)
    guard !isPlainYesNo(q) else { return false }
    return ["feature", "finding", "describe", "description", "morpholog", "appearance", "look like", "looks like", "histolog"]
      .contains { q.contains($0) }
  }

  /// Whether a yes/no question asks if the tissue is malignant (true: "Is this cancer?") or
  /// benign (false: "Is it normal?"); nil for any other question, one that asks both, or a
  /// negated one ("Isn't this benign?").
  public static func askedPolarity(_ question: String) -> Bool? {
    let q = " " + question.lowercased().map { $0.isLetter || $0 == "-" ? $0 : " " } + " "
    guard isPlainYesNo(q) else { return nil }
    let asksMalignant = malignantWords.contains { q.contains($0) }
    let asksBenign = ["benign", "normal", "healthy", "harmless", "non-neoplastic", "reactive"].contains { q.contains($0) }
    return asksMalignant != asksBenign ? asksMalignant : nil
  }

  /// Benign or malignant, as a class name implies (nil when it implies neither).
  public static func polarity(ofClass name: String) -> Bool? {
    let n = name.lowercased()
    if n.contains("no interpretable") { return nil }
    if malignantWords.contains(where: { n.contains($0) }) { return true }
    if n.contains("benign") || n.contains("normal") { return false }
    return nil
  }

  /// The Gleason patterns (3, 4 or 5) a lower-cased text names ("Gleason pattern 4", "pattern
  /// 3", "Gleason 4"; not the sum of a score such as "3+4=7"), each with where it stands.
  static func gleasonPatterns(in t: String) -> [(Int, Range<String.Index>)] {
    guard let re = try? NSRegularExpression(pattern: "(gleason(?: pattern| grade)?|pattern) ([345])(?![0-9+])") else {
      return []
    }
    let ns = t as NSString
    return re.matches(in: t, range: NSRange(location: 0, length: ns.length)).compactMap { m in
      guard let r = Range(m.range, in: t), let d = Range(m.range(at: 2), in: t), let n = Int(t[d]) else { return nil }
      return (n, r)
    }
  }

  /// Whether the character at `i` ends a sentence: ".", "!", "?" or a newline, but not a
  /// decimal point ("0.86").
  static func endsSentence(_ text: String, at i: String.Index) -> Bool {
    guard ".!?\n".contains(text[i]) else { return false }
    guard text[i] == ".", i > text.startIndex, text.index(after: i) < text.endIndex else { return true }
    return !(text[text.index(before: i)].isNumber && text[text.index(after: i)].isNumber)
  }

  /// The sentences of `text`, each with its closing mark.
  static func sentences(_ text: String) -> [Substring] {
    var out: [Substring] = []
    var start = text.startIndex
    var i = text.startIndex
    while i < text.endIndex {
      let next = text.index(after: i)
      if endsSentence(text, at: i) {
        out.append(text[start..<next])
        start = next
      }
      i = next
    }
    if start < text.endIndex { out.append(text[start...]) }
    return out
  }

  /// The sentence of `text` around a match, for quoting.
  static func sentence(_ text: String, around r: Range<String.Index>) -> String {
    func ends(at i: String.Index) -> Bool { endsSentence(text, at: i) }
    var a = r.lowerBound
    while a > text.startIndex, !ends(at: text.index(before: a)) { a = text.index(before: a) }
    var b = r.upperBound
    while b < text.endIndex, !ends(at: b) { b = text.index(after: b) }
    let s = text[a..<b].trimmingCharacters(in: .whitespaces)
    return s.count > 160 ? String(s.prefix(157)) + "..." : s
  }

  /// Non-negated occurrences of `term` in lower-cased `t`, with the quoted sentence.
  public static func asserted(_ term: String, in t: String, original o0: String) -> String? {
    var from = t.startIndex
    while let r = t.range(of: term, range: from..<t.endIndex) {
      from = r.upperBound
      // Whole words only.
      if r.lowerBound > t.startIndex, t[t.index(before: r.lowerBound)].isLetter { continue }
      if r.upperBound < t.endIndex, t[r.upperBound].isLetter, !(t[r.upperBound] == "s") { continue }
      let before = String(
        t[t.index(r.lowerBound, offsetBy: -min(t.distance(from: t.startIndex, to: r.lowerBound), 24))..<r.lowerBound])
      if negations.contains(where: { before.contains($0) }) { continue }
      return quoted(r, in: t, original: o0)
    }
    return nil
  }

  /// The sentence around a match `r` of lower-cased `t`, quoted from the original text (from `t`
  /// when lower-casing changed the length of a character).
  static func quoted(_ r: Range<String.Index>, in t: String, original o0: String) -> String {
    let original = o0.count == t.count ? o0 : t
    let o = original.index(original.startIndex, offsetBy: t.distance(from: t.startIndex, to: r.lowerBound))
    return sentence(original, around: o..<original.index(o, offsetBy: t.distance(from: r.lowerBound, to: r.upperBound)))
  }

  /// The one class of `set` that the text asserts (by name or synonym, longest first, not
  /// negated), with the quoted sentence; nil when none or several.
  public static func assertedClass(_ t: String, _ original: String, _ set: PromptSet) -> (String, String)? {
    var phrases: [(String, String)] = []
    for c in set.allClasses { for p in c.phrases { phrases.append((p.lowercased(), c.name)) } }
    phrases.sort { $0.0.count > $1.0.count }
    var found: [String: String] = [:]
    var rest = t
    for (p, name) in phrases where rest.contains(p) {
      if let q = asserted(p, in: rest, original: original) { found[name] = found[name] ?? q }
      rest = rest.replacingOccurrences(of: p, with: String(repeating: " ", count: p.count))
    }
    return found.count == 1 ? (found.first!.key, found.first!.value) : nil
  }

  /// Checks an answer. `verdict` is the classifier's class on the slide (nil when the question
  /// is not about the slide); `verdictSet` its prompt set; `otherSets` the rest. `general` marks
  /// a general pathology question (Eosin's notes had passages for it), where naming diagnoses
  /// is the point; otherwise a question not about the slide must get no diagnosis.
  /// - Returns: the flags, and whether the answer agrees with the classifier (nil: no claim).
  public static func check(
    answer: String, question: String, verdict: String?, verdictSet: PromptSet?, otherSets: [PromptSet], general: Bool = false
  ) -> (flags: [ReviewFlag], consistent: Bool?) {
    let t = answer.lowercased()
    var flags: [ReviewFlag] = []
    var consistent: Bool? = nil
    guard let v = verdict, let set = verdictSet else {
      if general { return (flags, nil) }
      // Neither about the slide nor about pathology: any diagnosis is out of place.
      for term in diagnosisTerms + malignantWords {
        if let s = asserted(term, in: t, original: answer) {
          flags.append(
            ReviewFlag(code: "off-topic-diagnosis", reason: "the question is not about the slide, but the answer claims \"\(s)\"")
          )
          break
        }
      }
      return (flags, nil)
    }
    let vPhrases = (set.allClasses.first { $0.name == v }?.phrases ?? [v]).map { $0.lowercased() }
    // Classes of the verdict's set, and of other organs' sets (asserted, not negated).
    if let (name, q) = assertedClass(t, answer, set) {
      if name != v {
        consistent = false
        flags.append(ReviewFlag(code: "inconsistent", reason: "answer claims \"\(q)\" but the classifier sees \(v)"))
      } else {
        consistent = true
      }
    } else {
      for o in otherSets where o.name != set.name {
        guard let (name, q) = assertedClass(t, answer, o), name != o.background?.name, !vPhrases.contains(name.lowercased())
        else {
          continue
        }
        // The malignancy set's benign class agrees with a benign verdict, its malignant one does not.
        if let pv = polarity(ofClass: v), let pn = polarity(ofClass: name), pv == pn { continue }
        consistent = false
        flags.append(
          ReviewFlag(
            code: "inconsistent", reason: "answer claims \"\(q)\", naming \(name) (\(o.name) set), but the classifier sees \(v)"))
        break
      }
    }
    // Specific diagnoses no class supports.
    if consistent != false {
      let malignantVerdict = polarity(ofClass: v) == true
      for term in diagnosisTerms where !vPhrases.contains(where: { $0.contains(term) }) {
        if malignantVerdict && genericTerms.contains(term) { continue }
        if let s = asserted(term, in: t, original: answer) {
          consistent = false
          flags.append(ReviewFlag(code: "unsupported-claim", reason: "\"\(s)\": \(term) is not what the classifier sees (\(v))"))
          break
        }
      }
    }
    // Grade: "low-grade" against "high-grade" (dysplasia, intraepithelial neoplasia, carcinoma).
    let vl = v.lowercased()
    for (mine, other) in [("low-grade", "high-grade"), ("high-grade", "low-grade")] where vl.contains(mine) {
      for form in [other, other.replacingOccurrences(of: "-", with: " ")] {
        if let q = asserted(form, in: t, original: answer) {
          consistent = false
          flags.append(ReviewFlag(code: "wrong-grade", reason: "\"\(q)\" says \(other), but the classifier sees \(v)"))
          break
        }
      }
    }
    // Gleason pattern: "pattern 4", "Gleason 4", "Gleason pattern 4" against the verdict's pattern.
    if let vp = gleasonPatterns(in: vl).first {
      for (p, q) in gleasonPatterns(in: t) where p != vp.0 {
        consistent = false
        let quote = quoted(q, in: t, original: answer)
        flags.append(
          ReviewFlag(code: "wrong-grade", reason: "\"\(quote)\" says Gleason pattern \(p), but the classifier sees \(v)"))
        break
      }
    }
    // Polarity.
    if let p = polarity(ofClass: v) {
      let words = p ? benignClaims : malignantClaims
      for w in words where !vPhrases.contains(where: { $0.contains(w) }) {
        if let s = asserted(w, in: t, original: answer) {
          consistent = false
          flags.append(
            ReviewFlag(
              code: "wrong-polarity", reason: "\"\(s)\" calls it \(p ? "benign" : "malignant"), but the classifier sees \(v)"))
          break
        }
      }
      // A bare yes or no to a question about one polarity ("Is this benign?" "Yes. The
      // classifier calls it lung squamous cell carcinoma.") is a claim too; so is one to a
      // question about one class ("Is this an adenocarcinoma?"), checked below.
      if !flags.contains(where: { $0.code == "wrong-polarity" }), askedClass(question, set) == nil,
        let (m, q) = answeredPolarity(question: question, answer: answer),
        m != p
      {
        consistent = false
        flags.append(
          ReviewFlag(
            code: "wrong-polarity",
            reason:
              "\"\(q)\" to \"\(question.trimmingCharacters(in: .whitespaces))\" calls it \(m ? "malignant" : "benign"), but the classifier sees \(v)"
          ))
      }
    }
    // A diagnosis none of the set's classes is ("Is there any sarcoma here?"): the classifier
    // cannot confirm or exclude it.
    if let d = askedOtherDiagnosis(question, set) {
      flags.append(
        ReviewFlag(
          code: "unchecked-diagnosis",
          reason:
            "the question asks about \"\(d)\", which is none of the \(set.name) set's classes: Eosin's classifier can neither confirm nor exclude it"
        ))
    }
    // A question the classifier cannot settle ("Is there necrosis here?"): whatever the answer
    // says about it rests on the language model alone.
    if let f = uncheckedFinding(question, set) {
      flags.append(
        ReviewFlag(
          code: "unchecked-finding",
          reason:
            "the question asks about \"\(f)\", which Eosin's classifier does not check (it tells only the \(set.name) set's classes apart): the answer is not evidence of it"
        ))
    }
    // A bare yes or no to a question about one class: "Yes" to "Is this an adenocarcinoma?" on a
    // squamous cell carcinoma calls it adenocarcinoma; "No" on an adenocarcinoma denies the verdict.
    if let named = askedClass(question, set) {
      let first = String(answer.prefix { $0.isLetter })
      let yes = first.lowercased() == "yes", no = first.lowercased() == "no"
      if (yes && named != v) || (no && named == v) {
        consistent = false
        flags.append(
          ReviewFlag(
            code: "inconsistent",
            reason:
              "\"\(first)\" to \"\(question.trimmingCharacters(in: .whitespaces))\" \(yes ? "calls it \(named)" : "denies \(named)"), but the classifier sees \(v)"
          ))
      } else if yes || no {
        consistent = consistent ?? true
      }
    }
    return (flags, consistent)
  }
}

extension ChatSession {
  /// Tile tokens before the slide's mean token, as `train lm-projector` trained them.
  public static let slideTokenTiles = 4
  /// Where the slide tokens go in the user turn (the same marker training used).
  public static let slideMarker = "<slide>"

  /// The turn a grounded answer starts from, as ``askGrounded(_:_:onToken:)`` builds it and
  /// `train lm-adapters` trains on it: the system turn (slide facts and the classifier's verdict
  /// when the question is about the slide), the user turn (the notes passages, then "Slide
  /// tiles: <slide>" when slide tokens go in, then the question; with slide tokens the verdict
  /// class's note leads, as ``lead``), the tile embeddings that become slide tokens, and what the
  /// review needs afterwards.
  public struct GroundedTurn {
    /// The system message (cached, with ``lead``).
    public var system: String
    /// The user message; holds ``slideMarker`` where the slide tokens go when ``slideInputs`` is set.
    public var user: String
    /// The start of ``user`` that depends on the slide only (the verdict class's note), cached
    /// with the system turn; empty: none.
    public var lead: String
    /// Eosin's note on the verdict's class (``KnowledgeNotes/passage(forClass:)``); nil for a
    /// general question or a class without one.
    public var classNote: NotePassage?
    /// (``slideTokenTiles`` + 1, D) tile embeddings (the question's tiles, then the slide's
    /// mean) for the projector; nil: no slide tokens.
    public var slideInputs: [Float]?
    public var about: Bool
    public var set: PromptSet?
    public var result: SlideResult?
    public var verdictName: String?
    public var classifier: ZeroShotClassifier?
    public var picks: [Int]
    public var why: String
    public var guessed: Bool
    public var hits: [(NotePassage, Double)]
  }

  /// The system turn's fixed sentences: instructions, not facts (the grounding checks leave
  /// them out of the context an answer may draw on).
  static let systemPreamble = "You are Eosin, a careful assistant for pathologists. Answer in two or three sentences."
  static let systemSlideRule = " Base your answer on this classifier result; do not name any other diagnosis."

  /// Builds the grounded turn for `question` on the open slide (``GroundedTurn``).
  /// - Parameters:
  ///   - slideTokens: whether to prepare slide tokens (a projector exists).
  ///   - dense: embeddings of `notes`' passages to fuse with BM25 (``NoteEmbeddings``).
  public func groundedTurn(_ question: String, notes: KnowledgeNotes, slideTokens: Bool, dense: NoteEmbeddings? = nil) throws
    -> GroundedTurn
  {
    let about = ClaimGate.isAboutSlide(question) && embeddings != nil
    var t = GroundedTurn(
      system: Self.systemPreamble, user: question, lead: "", classNote: nil,
      slideInputs: nil, about: about, set: nil, result: nil, verdictName: nil, classifier: nil, picks: [], why: "",
      guessed: false, hits: [])
    if about, let e = embeddings {
      let (s, reason, g) = try choosePromptSet(for: question)
      t.guessed = g
      let (clf, r) = try verdict(s)
      t.set = s
      t.why = reason
      t.classifier = clf
      t.result = r
      t.verdictName = clf.classNames[r.verdict]
      t.picks = try selectTiles(for: question)
      let p = String(format: "%.2f", r.probs[r.verdict])
      var facts = "The open slide: \(slideInfo["file"] ?? "images"), \(e.tiles.count) tiles"
      if let tf = slideInfo["tissue"] { facts += ", tissue \(tf)" }
      t.system += " \(facts). Eosin's image classifier (\(s.name) classes) calls it \(t.verdictName!) with probability \(p)."
      if !r.flags.isEmpty { t.system += " It flags: " + r.flags.map(\.reason).joined(separator: "; ") + "." }
      t.system += Self.systemSlideRule
    } else {
      t.system += " If you do not know, say so."
    }
    // The best passage for the question, and for a slide question the verdict class's notes.
    // A slide question is answered from the classifier and Eosin's own notes: imported lecture
    // text only ever answers general questions.
    var hits = notes.search(question, k: 1, fallback: !about, dense: dense)
    let classNote = t.verdictName.flatMap { notes.passage(forClass: $0) }
    if let h = classNote, !hits.contains(where: { $0.0 == h.0 }) { hits.append(h) }
    t.hits = hits
    t.classNote = classNote?.0
    // With slide tokens the verdict class's note goes first: it depends on the slide only, so
    // chat computes it once per slide with the system turn; the question's passage, the slide
    // tokens (of the question's tiles) and the question follow. The adapters are trained on that
    // order. Without them the note stays last, next to the question: the model as its file has
    // it named the verdict's class in 0.219 of the closed questions with the note first and in
    // 0.328 with it last (two full `train finalize` runs; EVALUATION.md, "Chat answers", has the
    // shipped layout's figure).
    var ordered = hits
    if slideTokens, let h = classNote {
      ordered = [h] + hits.filter { $0.0 != h.0 }
      t.lead = "Notes:\n- \(h.0.text)\n"
    }
    if !ordered.isEmpty {
      t.user = "Notes:\n" + ordered.map { "- \($0.0.text)" }.joined(separator: "\n") + "\n\nUsing the notes, answer: " + question
    }
    // Slide tokens: the question's tiles and the slide's mean, where the user turn says "Slide tiles:".
    if about, slideTokens, let e = embeddings, !t.picks.isEmpty {
      let D = e.dim
      var x: [Float] = []
      for k in 0..<Self.slideTokenTiles {
        x += e.embeddings[(t.picks[k % t.picks.count] * D)..<((t.picks[k % t.picks.count] + 1) * D)]
      }
      var mean = [Float](repeating: 0, count: D)
      for i in 0..<e.tiles.count { for d in 0..<D { mean[d] += e.embeddings[i * D + d] } }
      x += mean.map { $0 / Float(max(e.tiles.count, 1)) }
      t.slideInputs = x
      let marker = "Slide tiles: \(Self.slideMarker)\n"
      if let r = t.user.range(of: "Using the notes, answer: ") {
        t.user.insert(contentsOf: marker, at: r.lowerBound)
      } else {
        t.user = marker + t.user
      }
    }
    return t
  }

  /// The flag of an answer drawn from imported reference text (`reference-notes`); nil for
  /// Eosin's own notes.
  static func referenceFlag(_ p: NotePassage) -> ReviewFlag? {
    guard p.collection != NotePassage.curated else { return nil }
    return ReviewFlag(
      code: "reference-notes",
      reason: "drawn from \(p.collection) (\(p.source)), lecture text Eosin has not curated; check the answer against it")
  }

  /// The grounding checks of a language model's answer drawn from `passages`: its content
  /// words must come from the passages, the question or (for a slide question) `slideFacts`,
  /// 60% of them at least; a number it states must be there too; and an answer to a general
  /// question (`slideFacts` nil) must mention one of the question's subject words.
  static func groundingFlags(answer: String, question: String, passages: [NotePassage], slideFacts: String?)
    -> [ReviewFlag]
  {
    guard !answer.isEmpty else { return [] }
    var flags: [ReviewFlag] = []
    let context = Set(
      KnowledgeNotes.words(passages.map(\.text).joined(separator: " ") + " " + (slideFacts ?? "") + " " + question))
    let words = KnowledgeNotes.words(answer)
    // A general answer must speak to the question: "Eosin, a careful assistant for
    // pathologists." does not answer "What is endometrial hyperplasia?".
    let subject = KnowledgeNotes.subjectWords(question)
    if slideFacts == nil, !subject.isEmpty, subject.isDisjoint(with: words) {
      flags.append(
        ReviewFlag(
          code: "off-question",
          reason: "the answer does not mention what the question asks about (\(subject.sorted().joined(separator: ", ")))"))
    }
    // An answer to a general question must add something to it: "Scarring inside an organ is
    // called scarring." and "A lump in the breast that is not cancer." only restate it.
    let asked = Set(KnowledgeNotes.words(question))
    if slideFacts == nil, !words.isEmpty, Set(words).subtracting(asked).count < 2 {
      flags.append(ReviewFlag(code: "restates-question", reason: "the answer only restates the question"))
    }
    // Numbers are claims: one in neither the notes, the slide's facts nor the question is
    // unsupported ("The answer is: 102.").
    if let n = words.first(where: { $0.allSatisfy(\.isNumber) && !context.contains($0) }) {
      flags.append(ReviewFlag(code: "unsupported-number", reason: "\"\(n)\" is in neither Eosin's notes nor the slide's facts"))
    }
    let supported = words.filter { context.contains($0) }.count
    let share = Double(supported) / Double(max(1, words.count))
    if words.count >= 4 && share < 0.6 {
      flags.append(
        ReviewFlag(
          code: "unsupported-by-notes",
          reason: String(
            format: "only %.0f%% of the answer's content words come from Eosin's notes or the slide's facts", share * 100)))
    } else if let s = unsupportedSentence(answer, context: context) {
      // One sentence can add a claim the rest of a faithful answer hides: "It is a malignant
      // tumor that originates from the lungs and spreads to other parts of the body."
      flags.append(
        ReviewFlag(
          code: "unsupported-sentence",
          reason: "\"\(s)\": most of this sentence is in neither Eosin's notes nor the slide's facts"))
    }
    return flags
  }

  /// Words of a request about the open slide that any account of it answers ("Summarise this
  /// slide.", "What is your impression?").
  static let slideRequestWords: Set<String> = [
    "summarise", "summarize", "summary", "describe", "overview", "report", "finding", "impression", "assess", "assessment",
    "interpret", "review", "analyse", "analyze", "opinion", "think", "say", "give", "tell", "going", "on", "happening",
    "should", "would", "will", "must",
  ]

  /// `off-question` for an answer to a slide question that takes up none of the question's
  /// subject words (its words less the slide's: "tiles", "tissue", "here" and requests such as
  /// "describe"; a shared stem of five letters counts); nil when it takes one up or the question
  /// has none.
  static func offSlideQuestionFlag(answer: String, question: String) -> ReviewFlag? {
    let subject = KnowledgeNotes.subjectWords(question).subtracting(ClaimGate.findingFillers).subtracting(slideRequestWords)
    guard !subject.isEmpty, !answer.isEmpty else { return nil }
    var words = Set(KnowledgeNotes.words(answer))
    // A Gleason pattern or a named grade answers a question about the grade or the score.
    if ["gleason", "pattern", "grade", "low-grade", "high-grade"].contains(where: { words.contains($0) }) {
      words.formUnion(["grade", "gleason", "score", "pattern"])
    }
    func stem(_ w: String) -> String { w.count >= 5 ? String(w.prefix(5)) : w }
    let stems = Set(words.map(stem))
    if subject.contains(where: { words.contains($0) || stems.contains(stem($0)) }) { return nil }
    return ReviewFlag(
      code: "off-question",
      reason: "the answer does not take up what the question asks about (\(subject.sorted().joined(separator: ", ")))")
  }

  /// The answer without the question it may open by repeating ("Why is my biopsy purple?\nThe
  /// answer to this question can be found ..."): the repeated words say nothing, so the
  /// grounding checks judge the rest.
  static func withoutEcho(_ answer: String, _ question: String) -> String {
    let q = question.trimmingCharacters(in: .whitespacesAndNewlines)
    guard !q.isEmpty, answer.lowercased().hasPrefix(q.lowercased()) else { return answer }
    return String(answer.dropFirst(q.count)).trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// A general answer must speak to what is specific in the question: "What causes caseating
  /// granulomas?" is not answered by a description of granulomas. Flags (`partial-answer`) an
  /// answer that does not mention the question's word rarest in `notes`, or an inflection of it.
  static func partialAnswerFlag(answer: String, question: String, notes: KnowledgeNotes) -> ReviewFlag? {
    guard !answer.isEmpty, let w = notes.mostSpecificWord(of: question),
      !KnowledgeNotes.mentions(Set(KnowledgeNotes.words(answer)), w)
    else { return nil }
    return ReviewFlag(
      code: "partial-answer", reason: "the answer does not mention \"\(w)\", the most specific word of the question")
  }

  /// The first sentence of `answer` with at least 5 content words of which fewer than half are
  /// in `context`.
  static func unsupportedSentence(_ answer: String, context: Set<String>) -> String? {
    for s in ClaimGate.sentences(answer) {
      let w = KnowledgeNotes.words(String(s))
      guard w.count >= 5 else { continue }
      if 2 * w.filter({ context.contains($0) }).count < w.count {
        return s.trimmingCharacters(in: CharacterSet.whitespacesAndNewlines.union(CharacterSet(charactersIn: ".!?")))
      }
    }
    return nil
  }

  /// Answers with the grounded language model: slide facts and the classifier's verdict in the
  /// system context (when the question is about the slide), the best notes passages in the user
  /// turn, and the claim gate after. The answer names the note it used.
  func askGrounded(_ question: String, _ g: GroundedLM, onToken: (String) -> Bool) throws -> ChatAnswer {
    let turn = try groundedTurn(question, notes: g.notes, slideTokens: g.projector != nil, dense: g.noteEmbeddings)
    let (about, set, result, verdictName, picks, why, guessed, classifier, hits, system) = (
      turn.about, turn.set, turn.result, turn.verdictName, turn.picks, turn.why, turn.guessed, turn.classifier, turn.hits,
      turn.system
    )
    let user = turn.user
    let tok = g.lm.tokenizer
    guard let tmpl = g.lm.template else { throw PipelineError.input("\(g.lm.path): the language model has no chat template") }
    var slideTokens: [Float]? = nil
    if let x = turn.slideInputs, let proj = g.projector { slideTokens = proj.forward(x, Self.slideTokenTiles + 1) }
    // The system turn and the user turn's slide-only lead are the cached prefix; the rest of
    // the user turn and the assistant opening follow.
    let parts = GroundedLM.turnTokens(
      system: system, user: user, lead: turn.lead, slide: slideTokens != nil, template: tmpl, tokenizer: tok)
    var prefix = parts.prefix
    var slide: (before: [Int32], tokens: [Float])? = nil
    var rest: [Int32]
    if let st = slideTokens {
      slide = (parts.before, st)
      rest = parts.after
    } else {
      rest = parts.before
    }
    let context = g.lm.model.config.contextLength
    if prefix.count + rest.count + g.maxTokens + (slide.map { $0.before.count + Self.slideTokenTiles + 1 } ?? 0) > context {
      // Too long for the model's context: leave the notes and the slide tokens out, then give up
      // with a clear message.
      slide = nil
      prefix = tok.encodeLlama(
        tmpl.render([(role: "system", content: system)], generationPrompt: false), addSpecial: true, parseSpecial: true)
      rest = tok.encodeLlama(
        tmpl.render([(role: "user", content: question)], generationPrompt: true), addSpecial: false, parseSpecial: true)
      guard prefix.count + rest.count + g.maxTokens <= context else {
        throw PipelineError.input(
          "the question (\(rest.count) tokens) does not fit the language model's context of \(context) tokens with the slide's facts"
        )
      }
    }
    // A yes/no question about one polarity ("Is this benign?") is answered yes or no by the
    // classifier's verdict, and the model goes on from there: left to itself, SmolLM2 answered
    // such questions against the verdict about half the time.
    // A yes/no question that names a class of the set ("Is this an adenocarcinoma?") is answered
    // by whether the verdict is that class, not by its polarity.
    var opening = ""
    if about, let v = verdictName, let s = set, let named = ClaimGate.askedClass(question, s) {
      opening = named == v ? "Yes." : "No."
    } else if about, let s = set, ClaimGate.askedOtherDiagnosis(question, s) != nil {
      // Left to itself, the model answered "Yes." to "Is this a lymphoma?" on a lung carcinoma.
      // The opening does not repeat the term: the gate would read it as a diagnosis the answer
      // makes (the review flag names it).
      opening =
        "Eosin cannot tell: its classifier only tells the \(s.name) set's classes apart, and that diagnosis is not one of them."
    } else if about, let v = verdictName, let p = ClaimGate.polarity(ofClass: v), let asks = ClaimGate.askedPolarity(question) {
      opening = asks == p ? "Yes." : "No."
    } else if about, let s = set, ClaimGate.uncheckedFinding(question, s) != nil {
      // Left to itself, the model answered "Yes." to "Is there necrosis here?".
      opening = "Eosin cannot tell: its classifier only tells the \(s.name) set's classes apart."
    } else if about, let v = verdictName, let r = result, set?.background?.name != v, ClaimGate.asksForFeatures(question),
      turn.classNote?.text.contains("Features: ") == true
    {
      // A feature question opens as `train lm-adapters` answers one, and the model goes on with
      // the features of the verdict class's note: left to itself, it stopped after the verdict
      // on 28 of 90 feature questions (flagged `off-question`).
      opening =
        "The classifier calls it \(v) (probability \(String(format: "%.2f", r.probs[r.verdict]))). Its typical features are"
    }
    if !opening.isEmpty { rest += tok.encodeLlama(opening, addSpecial: false, parseSpecial: false) }
    var cancelled = false
    // A cancel during the opening word shows at the model's first piece.
    if !opening.isEmpty { _ = onToken(opening) }
    let (gen, streamed) = try g.generate(prefix: prefix, slide: slide, rest: rest) { piece in
      if !onToken(piece) {
        cancelled = true
        return false
      }
      return true
    }
    let answer = (opening + streamed).trimmingCharacters(in: .whitespacesAndNewlines)
    var genConf = Self.wordingConfidence(gen.tokens, gen.probabilities) { String(decoding: tok.bytes(of: $0), as: UTF8.self) }
    // An answer that is only the verdict's own yes or no has no wording of the model's to doubt.
    if !opening.isEmpty && !streamed.contains(where: \.isLetter) { genConf = 1 }
    // The key claim: the class the answer asserts (else the verdict's name) wherever it appears;
    // the model's probability of the tokens that spell it is the answer's own confidence.
    let claimName = set.flatMap { ClaimGate.assertedClass(answer.lowercased(), answer, $0)?.0 } ?? verdictName
    if let name = claimName,
      let p = GroundedLM.probability(of: name, in: streamed, tokens: gen.tokens, probabilities: gen.probabilities, tokenizer: tok)
    {
      genConf = p
    }
    var flags: [ReviewFlag] = []
    if !about && hits.isEmpty {
      flags.append(
        ReviewFlag(
          code: "not-from-notes",
          reason:
            "not about the slide and not from Eosin's notes: nothing relevant was found, so this is the language model's own text"
        ))
    }
    // The grounding checks judge the model's words: not Eosin's own opening, nor a repeated
    // question.
    let judged = Self.withoutEcho(streamed.trimmingCharacters(in: .whitespacesAndNewlines), question)
    if !hits.isEmpty {
      flags += Self.groundingFlags(
        answer: judged, question: question, passages: hits.map(\.0),
        slideFacts: about
          ? system.replacingOccurrences(of: Self.systemPreamble, with: "").replacingOccurrences(
            of: Self.systemSlideRule, with: "") : nil)
    }
    // A slide question that asks neither for the diagnosis nor about a class, a polarity or an
    // unchecked finding must be taken up by the answer: "What should be done next for this
    // patient?" got the verdict and a garbled sentence from its note.
    if about, let s = set, !ClaimGate.asksForDiagnosis(question), ClaimGate.askedClass(question, s) == nil,
      ClaimGate.askedPolarity(question) == nil, ClaimGate.uncheckedFinding(question, s) == nil,
      ClaimGate.askedOtherDiagnosis(question, s) == nil,
      let f = Self.offSlideQuestionFlag(answer: opening + " " + judged, question: question)
    {
      flags.append(f)
    }
    // Cite the note that grounds the answer: the verdict class's for a slide question.
    let cited = about ? hits.last : hits.first
    let m = about ? nil : cited.map { Self.matchFlag(question, $0.0, g.notes) }
    if let f = m?.flag { flags.append(f) }
    if !about, !hits.isEmpty, !flags.contains(where: { $0.code == "off-question" }),
      let f = Self.partialAnswerFlag(answer: judged, question: question, notes: g.notes)
    {
      flags.append(f)
    }
    // Imported reference text (the atlas lecture notes) is terse slide text Eosin did not write:
    // on questions only it covers, the 135M model's answers drawn from it were often wrong in a
    // detail the word-share check cannot see ("frataxin" for Huntington disease), so such an
    // answer is always for review.
    if let h = cited, let f = Self.referenceFlag(h.0) { flags.append(f) }
    if let h = cited {
      let src = "(Source: \(h.0.collection), \(h.0.source)\(about ? "" : "; a general answer, not about this slide"))"
      if !cancelled { _ = onToken("\n" + src) }
    }
    var a = review(
      question: question, answer: answer, set: set, judgedBy: why, organGuessed: guessed, classifier: classifier,
      result: result, picks: picks, generator: genConf, cancelled: cancelled, general: !hits.isEmpty, extraFlags: flags,
      match: m?.share)
    a.source = cited.map { "\($0.0.collection), \($0.0.source)" }
    lastAnswer = a
    return a
  }
}

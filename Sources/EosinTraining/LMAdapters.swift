import EosinModels
import EosinPipelines
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// One grounded chat turn to train on: the system and user messages exactly as chat builds them
/// (``ChatSession/groundedTurn(_:notes:slideTokens:)``), the tile embeddings that become slide
/// tokens, and the answer the model should give.
public struct GroundedExample: Sendable {
  /// What kind of turn it is: "slide", "notes", "pathvqa" or "off-topic".
  public var kind: String
  /// The system message, as chat builds it.
  public var system: String
  /// The user message; holds ``ChatSession/slideMarker`` where slide tokens go.
  public var user: String
  /// The start of `user` chat caches with the system turn (``ChatSession/GroundedTurn/lead``).
  public var lead: String
  /// (slide tokens, D) projector inputs; nil for a turn without slide tokens.
  public var slideInputs: [Float]?
  /// The answer the model is trained to give.
  public var answer: String
  public init(kind: String, system: String, user: String, lead: String = "", slideInputs: [Float]?, answer: String) {
    self.kind = kind
    self.system = system
    self.user = user
    self.lead = lead
    self.slideInputs = slideInputs
    self.answer = answer
  }
}

/// Builds the grounded instruction data of `train lm-adapters`. Every turn is built by the chat
/// session itself, so training sees the prompts chat gives at inference:
/// - slide turns on training tiles: diagnosis, malignancy and feature questions, answered from
///   the classifier's verdict in the context (its name, its probability, and its review flag
///   when it has one) and the verdict class's notes, never another diagnosis;
/// - notes turns without a slide: "What is X?" about a passage of Eosin's notes, answered by
///   copying the passage the retrieval put in the turn. Passages that an evaluation question
///   retrieves first are held out, so the evaluation's general questions stay unseen;
/// - PathVQA turns: its question–answer text (questions that point at an image left out);
/// - off-topic turns: everyday questions answered as the frozen model itself answers them, so
///   the adapters keep its general behaviour.
public enum GroundedInstructions {
  static let diagnosisQuestions = [
    "What is the diagnosis here?", "What does this {organ} biopsy show?", "Give the diagnosis for this {organ} sample.",
    "What is your diagnosis for these tiles?", "What kind of lesion is this?", "Classify this {organ} tissue.",
    "Which diagnosis fits this {organ} specimen?",
  ]
  static let malignancyQuestions = [
    "Is this malignant?", "Is there cancer in this {organ} sample?", "Is this {organ} tissue benign or malignant?",
    "Does this biopsy show a malignant tumour?",
  ]
  static let featureQuestions = [
    "Describe the features of this {organ} tissue.", "What features do these tiles show?",
    "Which findings support the diagnosis here?",
  ]
  static let notesQuestions = ["What is {}?", "Tell me about {}.", "What are the key features of {}?", "Explain {} briefly."]
  /// Everyday questions for the off-topic turns (none of them in the evaluation's set).
  public static let offTopicQuestions = [
    "What is the capital of Italy?", "How do I boil an egg?", "Write a haiku about autumn.", "What is 12 times 7?",
    "Who wrote Romeo and Juliet?", "Which planet is closest to the Sun?", "How far is the Moon from the Earth?",
    "What is the boiling point of water?", "What is the chemical symbol for gold?", "What colour is the sky on Mars?",
    "Give me a tip for learning to play the guitar.", "What is photosynthesis?", "Name three primary colours.",
    "How many continents are there?", "What is the tallest mountain in the world?", "Suggest a name for a goldfish.",
    "What does a carpenter do?", "How do airplanes stay in the air?", "What is the largest ocean?",
    "Describe a sunset in one sentence.", "What language is spoken in Brazil?", "How do I make a cup of tea?",
    "blorp quantum teapot sideways?", "Why is the sea salty?",
  ]

  /// The first `n` sentences of a passage.
  static func sentences(_ text: String, _ n: Int) -> String {
    var out = "", count = 0
    let chars = Array(text)
    var i = 0
    while i < chars.count {
      out.append(chars[i])
      if ".!?".contains(chars[i]) && (i + 1 == chars.count || chars[i + 1] == " " || chars[i + 1] == "\n") {
        count += 1
        if count >= n { break }
      }
      i += 1
    }
    return out.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// A passage told in sentences: a class note ("name (also: ...); behaviour. Features: a; b; c.
  /// Next steps: ...") as "Name is behaviour. Its typical features are a, b and c."; any other
  /// note by its first two sentences.
  static func noteAnswer(_ p: NotePassage) -> String {
    guard let r = p.text.range(of: ". Features: ") else { return sentences(p.text, 2) }
    let head = p.text[..<r.lowerBound]
    var tail = String(p.text[r.upperBound...])
    if let n = tail.range(of: ". Next steps:") { tail = String(tail[..<n.lowerBound]) }
    let f = tail.split(separator: ";").map { $0.trimmingCharacters(in: .whitespacesAndNewlines.union(["."])) }.prefix(3)
    let behaviour = head.range(of: "; ", options: .backwards).map { String(head[$0.upperBound...]) }
    let name = p.title.prefix(1).uppercased() + p.title.dropFirst()
    var s = behaviour.map { "\(name) is \($0)." } ?? "\(name)."
    if !f.isEmpty {
      let list = f.count == 1 ? f[0] : f.dropLast().joined(separator: ", ") + " and " + f.last!
      s += " Its typical features are \(list)."
    }
    return s
  }

  /// The answer to a slide question from its turn, stating only what the context says.
  static func slideAnswer(kind: Int, turn t: ChatSession.GroundedTurn) -> String? {
    guard let v = t.verdictName, let r = t.result, let set = t.set else { return nil }
    if set.background?.name == v {
      return
        "The tiles show no interpretable tissue, so there is no diagnosis to give. A pathologist should look at the slide itself."
    }
    let p = String(format: "%.2f", r.probs[r.verdict])
    let flag = r.flags.first.map { " It is flagged for review: \($0.reason)." } ?? ""
    // The verdict class's note, which chat puts in the turn.
    let note = t.hits.first { $0.0.title == v }.map { $0.0.text }
    let features = note.flatMap { n -> String? in
      guard let r = n.range(of: "Features: ") else { return nil }
      let rest = n[r.upperBound...]
      let f = rest.prefix { $0 != "." }.split(separator: ";").prefix(2).map { $0.trimmingCharacters(in: .whitespaces) }
      return f.isEmpty ? nil : "Its typical features are " + f.joined(separator: " and ") + "."
    }
    switch kind {
    case 0:
      return "Eosin's classifier calls it \(v) (probability \(p))." + (flag.isEmpty ? (features.map { " " + $0 } ?? "") : flag)
    case 1:
      guard let malignant = ClaimGate.polarity(ofClass: v) else { return nil }
      return
        (malignant
        ? "Yes. The classifier calls it \(v), which is malignant (probability \(p))."
        : "No. The classifier calls it \(v), which is benign (probability \(p)).") + flag
    default:
      guard let f = features else { return nil }
      return "The classifier calls it \(v) (probability \(p)). " + f
    }
  }

  /// Slide turns on `cases` (one question each, kinds in turn), built by `session`.
  public static func slideExamples(
    session: ChatSession, cases: [ChatEvaluation.Case], notes: KnowledgeNotes, seed: UInt64,
    progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> [GroundedExample] {
    var rng = SeededRNG(seed: seed)
    var out: [GroundedExample] = []
    for (i, c) in cases.enumerated() {
      progress(i + 1, cases.count)
      try session.open(c.paths)
      let kind = i % 3
      let pool = [diagnosisQuestions, malignancyQuestions, featureQuestions][kind]
      let organ = c.set.organName ?? "tissue"
      let q = pool[Int(rng.next() % UInt64(pool.count))].replacingOccurrences(of: "{organ}", with: organ)
      let t = try session.groundedTurn(q, notes: notes, slideTokens: true)
      guard t.slideInputs != nil, let a = slideAnswer(kind: kind, turn: t) else { continue }
      out.append(
        GroundedExample(kind: "slide", system: t.system, user: t.user, lead: t.lead, slideInputs: t.slideInputs, answer: a))
    }
    return out
  }

  /// Notes turns: each passage not retrieved first by any of `heldOutQuestions`, asked about by
  /// title, answered with its first two sentences, kept only when the retrieval puts that
  /// passage first (as it would in chat).
  public static func notesExamples(session: ChatSession, notes: KnowledgeNotes, heldOutQuestions: [String]) throws
    -> [GroundedExample]
  {
    let heldOut = Set(heldOutQuestions.compactMap { notes.search($0, k: 1).first?.0.source })
    var out: [GroundedExample] = []
    for p in notes.passages where !heldOut.contains(p.source) {
      for tmpl in notesQuestions {
        let q = tmpl.replacingOccurrences(of: "{}", with: p.title)
        let t = try session.groundedTurn(q, notes: notes, slideTokens: false)
        guard !t.about, t.hits.first?.0.source == p.source else { continue }
        out.append(GroundedExample(kind: "notes", system: t.system, user: t.user, slideInputs: nil, answer: noteAnswer(p)))
      }
    }
    return out
  }

  /// PathVQA turns: up to `count` open (not yes/no) question–answer pairs of its train split
  /// whose question does not point at an image, drawn with `seed`.
  /// - Throws: ``TrainingError/data(_:)`` naming the file when it cannot be read.
  public static func pathVQAExamples(file: String, session: ChatSession, notes: KnowledgeNotes, count: Int, seed: UInt64) throws
    -> [GroundedExample]
  {
    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
      throw TrainingError.data("\(file): cannot read the PathVQA question-answer text")
    }
    let imageWords = ["image", "picture", "photo", "shown", "this ", "these ", "figure", "here", "slide", "arrow"]
    var pairs: [(String, String)] = []
    for line in text.split(separator: "\n") {
      guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        o["split"] as? String == "train", let q = o["question"] as? String, let a = o["answer"] as? String
      else { continue }
      let ql = q.lowercased(), al = a.lowercased()
      guard al != "yes", al != "no", a.count >= 3, !imageWords.contains(where: { ql.contains($0) }) else { continue }
      pairs.append((q, a))
    }
    var rng = SeededRNG(seed: seed)
    for i in stride(from: pairs.count - 1, to: 0, by: -1) { pairs.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
    var out: [GroundedExample] = []
    for (q, a) in pairs.prefix(count) {
      let t = try session.groundedTurn(q, notes: notes, slideTokens: false)
      guard !t.about else { continue }
      let answer = a.prefix(1).uppercased() + a.dropFirst() + "."
      out.append(GroundedExample(kind: "pathvqa", system: t.system, user: t.user, slideInputs: nil, answer: answer))
    }
    return out
  }

  /// Off-topic turns answered by the frozen model itself (greedy, at most 48 tokens, cut after
  /// two sentences): training on them keeps its general behaviour.
  public static func offTopicExamples(session: ChatSession, notes: KnowledgeNotes, lm: LanguageModel) throws -> [GroundedExample]
  {
    guard let tmpl = lm.template else { throw PipelineError.input("\(lm.path): the language model has no chat template") }
    var out: [GroundedExample] = []
    let saved = lm.model.adapters
    lm.model.adapters = nil
    defer { lm.model.adapters = saved }
    for q in offTopicQuestions {
      let t = try session.groundedTurn(q, notes: notes, slideTokens: false)
      let text =
        tmpl.render([(role: "system", content: t.system)], generationPrompt: false)
        + tmpl.render([(role: "user", content: t.user)], generationPrompt: true)
      let ids = lm.tokenizer.encodeLlama(text, addSpecial: true, parseSpecial: true)
      var opts = SamplingOptions()
      opts.maxTokens = 48
      opts.repeatPenalty = 1.1
      let g = try lm.generate(prompt: ids, state: lm.model.makeState(capacity: ids.count + 64), options: opts)
      let a = sentences(g.text, 2)
      guard !a.isEmpty else { continue }
      out.append(GroundedExample(kind: "off-topic", system: t.system, user: t.user, slideInputs: nil, answer: a))
    }
    return out
  }
}

/// Trains low-rank adapters on the frozen language model together with the slide-token
/// projector (LLaVA's second stage, instruction tuning, here with LoRA instead of full
/// fine-tuning) on ``GroundedExample``s. Each turn is rendered with the model's chat template as
/// chat renders it (system turn, then the user turn with the slide tokens spliced in where
/// ``ChatSession/slideMarker`` stands); the loss is the cross-entropy of the answer's tokens. The
/// gradient reaches the adapters and the slide tokens through
/// ``LlamaModel/inputGradient(embeddings:count:targets:)``, and the projector through its own
/// backward.
public final class LMAdapterTrainer {
  /// The frozen language model (its matrices are dequantised once into a private copy).
  public let lm: LanguageModel
  let model: LlamaModel
  /// The projector's and the adapters' values, gradients and AdamW state (adapters as
  /// `lora.BLOCK.q|v.A|B`).
  public let params = ParameterSet()
  var projector: Projector
  var projectorGrads: Projector
  /// The adapters as of the last ``step(_:)`` or export.
  public private(set) var adapters: LoRAAdapters
  let loraOffset: Int

  /// - Parameters:
  ///   - projector: the projector of the first stage (`train lm-projector`), trained further here.
  /// - Throws: ``PipelineError`` when the model has no chat template.
  public init(lm: LanguageModel, projector: Projector, rank: Int = 8, alpha: Float = 16, seed: UInt64 = 1) throws {
    guard lm.template != nil else { throw PipelineError.input("\(lm.path): the language model has no chat template") }
    self.lm = lm
    model = lm.model.dense()
    self.projector = projector
    var adder = ParameterAdder(params: params)
    try self.projector.visitParameters(&adder)
    projectorGrads = projector
    var z = Zeroer()
    try projectorGrads.visitParameters(&z)
    adapters = LoRAAdapters(config: lm.model.config, rank: rank, alpha: alpha, seed: seed)
    // The adapters as one flat tensor per matrix, in ``LoRAAdapters/flat`` order.
    loraOffset = params.count
    for l in adapters.q.indices {
      for (proj, m) in [("q", adapters.q[l]), ("v", adapters.v[l])] {
        _ = params.add("lora.\(l).\(proj).A", Tensor(shape: [m.rank, m.inDim], data: m.a))
        _ = params.add("lora.\(l).\(proj).B", Tensor(shape: [m.outDim, m.rank], data: m.b))
      }
    }
  }

  /// Token ids of one turn: the system turn and the user turn up to the slide tokens (`before`),
  /// the rest of the user turn and the assistant opening (`after`), and the answer with the
  /// end-of-turn token.
  public func tokens(_ ex: GroundedExample) -> (before: [Int32], after: [Int32], answer: [Int32]) {
    let tok = lm.tokenizer
    let p = GroundedLM.turnTokens(
      system: ex.system, user: ex.user, lead: ex.lead, slide: ex.slideInputs != nil, template: lm.template!, tokenizer: tok)
    // Without slide tokens the whole turn is "before" the (absent) slide tokens.
    let (before, after) = ex.slideInputs != nil ? (p.prefix + p.before, p.after) : (p.prefix, p.before)
    var ans = tok.encodeLlama(ex.answer, addSpecial: false, parseSpecial: false)
    if let end = tok.special["<|im_end|>"] ?? tok.special["<|eot_id|>"] ?? tok.eos { ans.append(end) }
    return (before, after, ans)
  }

  /// Copies the optimizer's values into the projector and the adapters the steps run.
  func sync() throws {
    var reader = ParameterReader(params: params)
    try projector.visitParameters(&reader)
    adapters.setFlat(Array(params.data[loraOffset...]))
    model.adapters = adapters
  }

  /// Forward and backward on turns; gradients accumulate in ``params`` (mean over the turns).
  /// Returns the mean loss.
  public func step(_ batch: [GroundedExample]) throws -> Float {
    try sync()
    let C = lm.model.config.channels
    var tape = ProjectorTape()
    var loraGrad = adapters.zeros()
    var z = Zeroer()
    try projectorGrads.visitParameters(&z)
    var total: Float = 0
    let scale = 1 / Float(max(batch.count, 1))
    for ex in batch {
      let (before, after, answer) = tokens(ex)
      let D = projector.fc1.weight.shape[1]
      let P = (ex.slideInputs?.count ?? 0) / D
      let y = ex.slideInputs.map { projector.forward($0, P, tape: &tape) } ?? []
      let nb = before.count, T = nb + P + after.count + answer.count
      guard T <= lm.model.config.contextLength else { continue }
      let x = model.embed(before) + y + model.embed(after + answer)
      var targets = [Int32](repeating: -1, count: T)
      let firstAnswer = nb + P + after.count
      for i in 0..<answer.count { targets[firstAnswer - 1 + i] = answer[i] }
      let r = try model.inputGradient(embeddings: x, count: T, targets: targets)
      total += r.loss
      if P > 0 {
        let dy = r.grad[(nb * C)..<((nb + P) * C)].map { $0 * scale }
        projector.backward(dy, tape: &tape, into: &projectorGrads)
      }
      if let g = r.adapterGrad {
        for l in g.q.indices {
          for i in g.q[l].a.indices { loraGrad.q[l].a[i] += g.q[l].a[i] * scale }
          for i in g.q[l].b.indices { loraGrad.q[l].b[i] += g.q[l].b[i] * scale }
          for i in g.v[l].a.indices { loraGrad.v[l].a[i] += g.v[l].a[i] * scale }
          for i in g.v[l].b.indices { loraGrad.v[l].b[i] += g.v[l].b[i] * scale }
        }
      }
    }
    var gather = GradientGatherer(params: params)
    try projectorGrads.visitParameters(&gather)
    let flat = loraGrad.flat
    for i in flat.indices { params.grad[loraOffset + i] += flat[i] }
    return total / Float(max(batch.count, 1))
  }

  /// The mean loss on turns, without changing the gradients.
  public func loss(_ batch: [GroundedExample]) throws -> Float {
    let saved = params.grad
    defer { params.grad = saved }
    return try step(batch)
  }

  /// The projector under LLaVA's names.
  public func exportProjector() throws -> [String: Tensor] {
    try sync()
    var recorder = TensorRecorder()
    var p = projector
    try p.visitParameters(&recorder)
    return recorder.tensors
  }

  /// The adapters under PEFT's names (HF layout).
  public func exportAdapters() throws -> [String: Tensor] {
    try sync()
    return adapters.tensors(config: lm.model.config)
  }
}

import EosinModels
import EosinPipelines
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// The slide-token projector trained through a frozen GGUF language model (tiny fixture).
final class LMProjectorTests: XCTestCase {
  static let gguf = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-llama-F32.gguf"

  func conversations(_ D: Int) -> [SlideConversation] {
    var rng = SeededRNG(seed: 3)
    return (0..<2).map { i in
      SlideConversation(
        prefix: (0..<(3 * D)).map { _ in Float(rng.uniform() * 2 - 1) }, question: "What is the diagnosis?",
        answer: i == 0 ? "the tissue is benign" : "it is a carcinoma")
    }
  }

  /// Guards the projector's gradient: analytic against central differences of the loss for
  /// entries of both layers, and the slide tokens sit where the marker was.
  func testGradientMatchesFiniteDifferences() throws {
    let lm = try LanguageModel(path: Self.gguf)
    let D = 8
    let t = try LMProjectorTrainer(lm: lm, imageDim: D, hidden: 16, seed: 2)
    let batch = conversations(D)
    let (before, after, answer) = t.tokens(question: "What is the diagnosis?", answer: "it is a carcinoma")
    XCTAssertFalse(before.isEmpty)
    XCTAssertFalse(after.isEmpty)
    XCTAssertEqual(answer.last, lm.tokenizer.special["<|im_end|>"])
    t.params.zeroGrad()
    _ = try t.step(batch)
    checkFiniteDifferences(
      t.params, ["mm_projector.0.weight", "mm_projector.2.weight", "mm_projector.2.bias"], entries: [0, 5, 11]
    ) { try t.loss(batch) }
  }

  /// A few AdamW steps lower the loss.
  func testTrainingLowersTheLoss() throws {
    let lm = try LanguageModel(path: Self.gguf)
    let t = try LMProjectorTrainer(lm: lm, imageDim: 8, hidden: 16, seed: 2)
    let batch = conversations(8)
    let (first, last) = try fifteenSteps(t.params, step: { try t.step(batch) }, loss: { try t.loss(batch) })
    XCTAssertLessThan(last, first)
    XCTAssertEqual(
      Set(t.export().keys), ["mm_projector.0.weight", "mm_projector.0.bias", "mm_projector.2.weight", "mm_projector.2.bias"])
  }
}

/// The second stage: adapters and the projector trained together on grounded turns (tiny fixture).
final class LMAdapterTrainerTests: XCTestCase {
  func turns(_ D: Int) -> [GroundedExample] {
    var rng = SeededRNG(seed: 5)
    return [
      GroundedExample(
        kind: "slide", system: "You are Eosin. The classifier calls it lung adenocarcinoma.",
        user: "Slide tiles: \(ChatSession.slideMarker)\nWhat is the diagnosis?",
        slideInputs: (0..<(3 * D)).map { _ in Float(rng.uniform() * 2 - 1) }, answer: "it is lung adenocarcinoma"),
      GroundedExample(
        kind: "notes", system: "You are Eosin.",
        user: "Notes:\n- a granuloma is a collection of macrophages\n\nWhat is a granuloma?",
        slideInputs: nil, answer: "a collection of macrophages"),
    ]
  }

  func projector(_ D: Int, _ C: Int) throws -> Projector {
    var r = RandomTensors(seed: 9, std: 0.2)
    return Projector(
      fc1: Linear(weight: try r.take("mm_projector.0.weight", [16, D]), bias: Tensor(zeros: [16])),
      fc2: Linear(weight: try r.take("mm_projector.2.weight", [C, 16]), bias: Tensor(zeros: [C])))
  }

  /// Adapter gradients through the trainer (slide and text-only turns mixed) against central
  /// differences; a fresh adapter's B is zero, so its A gets no gradient until B moves.
  func testAdapterGradientsMatchFiniteDifferences() throws {
    let lm = try LanguageModel(path: LMProjectorTests.gguf)
    let C = lm.model.config.channels
    let t = try LMAdapterTrainer(lm: lm, projector: try projector(8, C), rank: 2, alpha: 4, seed: 3)
    // Move B off zero so both factors carry gradient.
    let b0 = t.params.offset("lora.0.q.B"), v1 = t.params.offset("lora.1.v.B")
    for i in 0..<(C * 2) { t.params.data[b0 + i] = 0.05 * Float((i % 7) - 3) }
    for i in 0..<8 { t.params.data[v1 + i] = 0.04 * Float((i % 5) - 2) }
    let batch = turns(8)
    t.params.zeroGrad()
    _ = try t.step(batch)
    checkFiniteDifferences(t.params, ["lora.0.q.A", "lora.0.q.B", "lora.1.v.A", "lora.1.v.B", "mm_projector.2.weight"]) {
      try t.loss(batch)
    }
  }

  /// Steps lower the loss; the exported adapters load back under PEFT's names and change the
  /// model's output, and the projector keeps LLaVA's names.
  func testTrainingLowersTheLossAndExportsLoad() throws {
    let lm = try LanguageModel(path: LMProjectorTests.gguf)
    let C = lm.model.config.channels
    let t = try LMAdapterTrainer(lm: lm, projector: try projector(8, C), rank: 4, alpha: 8, seed: 3)
    let batch = turns(8)
    let (first, last) = try fifteenSteps(t.params, step: { try t.step(batch) }, loss: { try t.loss(batch) })
    XCTAssertLessThan(last, first)
    XCTAssertEqual(
      Set(try t.exportProjector().keys),
      ["mm_projector.0.weight", "mm_projector.0.bias", "mm_projector.2.weight", "mm_projector.2.bias"])
    let dir = NSTemporaryDirectory() + "eosin-lora-\(ProcessInfo.processInfo.processIdentifier)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try SafeTensorsWriter.write(try t.exportAdapters(), metadata: t.adapters.metadata, to: dir + "/a.safetensors")
    let loaded = try LoRAAdapters(file: try SafeTensorsFile(path: dir + "/a.safetensors"), config: lm.model.config)
    XCTAssertEqual(loaded, t.adapters)
    let ids: [Int32] = [1, 5, 9, 12]
    let plain = try lm.model.forward(ids, state: lm.model.makeState(capacity: 8))
    lm.model.adapters = loaded
    let adapted = try lm.model.forward(ids, state: lm.model.makeState(capacity: 8))
    lm.model.adapters = nil
    XCTAssertGreaterThan(zip(plain, adapted).map { abs($0 - $1) }.max()!, 1e-4)
    // A file whose tensors do not fit the model is refused, naming it.
    try SafeTensorsWriter.write(["x": Tensor(zeros: [2])], metadata: t.adapters.metadata, to: dir + "/bad.safetensors")
    XCTAssertThrowsError(try LoRAAdapters(file: try SafeTensorsFile(path: dir + "/bad.safetensors"), config: lm.model.config)) {
      XCTAssertTrue("\($0.localizedDescription)".contains("bad.safetensors"), "\($0)")
    }
  }
}

/// Compares the gradient in `params` with central differences of `loss` for a few entries of
/// each named tensor (step 1e-2; within 2e-3 or 5%).
func checkFiniteDifferences(
  _ params: ParameterSet, _ names: [String], entries: [Int] = [0, 3, 7], file: StaticString = #filePath, line: UInt = #line,
  loss: () throws -> Float
) {
  let grad = params.grad
  for name in names {
    let o = params.offset(name)
    for k in entries {
      let i = o + k
      let w = params.data[i]
      let eps: Float = 1e-2
      params.data[i] = w + eps
      let lp = (try? loss()) ?? .nan
      params.data[i] = w - eps
      let ln = (try? loss()) ?? .nan
      params.data[i] = w
      let fd = (lp - ln) / (2 * eps)
      XCTAssertEqual(grad[i], fd, accuracy: max(2e-3, abs(fd) * 0.05), "\(name)[\(k)]", file: file, line: line)
    }
  }
}

/// The loss before and after 15 AdamW steps (learning rate 1e-2) on one batch.
func fifteenSteps(_ params: ParameterSet, step: () throws -> Float, loss: () throws -> Float) throws -> (Float, Float) {
  let first = try loss()
  for _ in 0..<15 {
    params.zeroGrad()
    _ = try step()
    params.adamw(lr: 1e-2, weightDecay: 0, clip: 1)
  }
  return (first, try loss())
}

extension LMAdapterTrainerTests {
  /// Guards the cached lead of a grounded turn: the system turn and the user turn's slide-only
  /// lead (the verdict class's note) are one prefix, the same for every question on the slide;
  /// the rest splits at the slide marker; the pieces spell the whole turn; and `train
  /// lm-adapters` trains on exactly the tokens chat runs.
  func testTurnTokensCacheTheLeadAndTrainingUsesThem() throws {
    let lm = try LanguageModel(path: LMProjectorTests.gguf)
    let tmpl = try XCTUnwrap(lm.template), tok = lm.tokenizer
    let system = "You are Eosin. The classifier calls it lung adenocarcinoma."
    let lead = "Notes:\n- lung adenocarcinoma; malignant. Features: glands.\n"
    func user(_ q: String) -> String {
      lead + "- a passage for the question\n\nSlide tiles: \(ChatSession.slideMarker)\nUsing the notes, answer: " + q
    }
    func spell(_ ids: [Int32]) -> String { String(decoding: ids.flatMap { tok.bytes(of: $0) }, as: UTF8.self) }
    let a = GroundedLM.turnTokens(
      system: system, user: user("What is it?"), lead: lead, slide: true, template: tmpl, tokenizer: tok)
    let b = GroundedLM.turnTokens(
      system: system, user: user("Describe the features."), lead: lead, slide: true, template: tmpl, tokenizer: tok)
    let systemOnly = tok.encodeLlama(
      tmpl.render([(role: "system", content: system)], generationPrompt: false), addSpecial: true, parseSpecial: true)
    XCTAssertEqual(a.prefix, b.prefix)
    XCTAssertEqual(Array(a.prefix.prefix(systemOnly.count)), systemOnly)
    XCTAssertTrue(spell(a.prefix).hasSuffix(lead), spell(a.prefix))
    XCTAssertEqual(spell(a.before), "- a passage for the question\n\nSlide tiles: ")
    let whole =
      tmpl.render([(role: "system", content: system)], generationPrompt: false)
      + tmpl.render([(role: "user", content: user("What is it?"))], generationPrompt: true)
    XCTAssertEqual(
      spell(a.prefix + a.before) + ChatSession.slideMarker + spell(a.after),
      spell(tok.encodeLlama(whole, addSpecial: true, parseSpecial: true)))
    // No lead, or a lead the user turn does not start with: the system turn alone is cached.
    for l in ["", "Notes:\n- another note\n"] {
      let c = GroundedLM.turnTokens(
        system: system, user: user("What is it?"), lead: l, slide: true, template: tmpl, tokenizer: tok)
      XCTAssertEqual(c.prefix, systemOnly)
    }
    // Without slide tokens the rest is one piece.
    let d = GroundedLM.turnTokens(
      system: system, user: user("What is it?"), lead: lead, slide: false, template: tmpl, tokenizer: tok)
    XCTAssertEqual(d.prefix, a.prefix)
    XCTAssertTrue(d.after.isEmpty)
    // Training's tokens are chat's.
    let C = lm.model.config.channels
    let t = try LMAdapterTrainer(lm: lm, projector: try projector(8, C), rank: 2, alpha: 4, seed: 3)
    let ex = GroundedExample(
      kind: "slide", system: system, user: user("What is it?"), lead: lead, slideInputs: [Float](repeating: 0, count: 24),
      answer: "lung adenocarcinoma")
    let (before, after, _) = t.tokens(ex)
    XCTAssertEqual(before, a.prefix + a.before)
    XCTAssertEqual(after, a.after)
  }
}

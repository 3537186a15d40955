import EosinModels
import EosinPipelines
import EosinTensor
import EosinTraining
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
    let grad = t.params.grad
    for name in ["mm_projector.0.weight", "mm_projector.2.weight", "mm_projector.2.bias"] {
      let o = t.params.offset(name)
      for k in [0, 5, 11] {
        let i = o + k
        let w = t.params.data[i]
        let eps: Float = 1e-2
        t.params.data[i] = w + eps
        let lp = try t.loss(batch)
        t.params.data[i] = w - eps
        let lmn = try t.loss(batch)
        t.params.data[i] = w
        let fd = (lp - lmn) / (2 * eps)
        XCTAssertEqual(grad[i], fd, accuracy: max(2e-3, abs(fd) * 0.05), "\(name)[\(k)]")
      }
    }
  }

  /// A few AdamW steps lower the loss.
  func testTrainingLowersTheLoss() throws {
    let lm = try LanguageModel(path: Self.gguf)
    let t = try LMProjectorTrainer(lm: lm, imageDim: 8, hidden: 16, seed: 2)
    let batch = conversations(8)
    let first = try t.loss(batch)
    for _ in 0..<15 {
      t.params.zeroGrad()
      _ = try t.step(batch)
      t.params.adamw(lr: 1e-2, weightDecay: 0, clip: 1)
    }
    XCTAssertLessThan(try t.loss(batch), first)
    XCTAssertEqual(
      Set(t.export().keys), ["mm_projector.0.weight", "mm_projector.0.bias", "mm_projector.2.weight", "mm_projector.2.bias"])
  }
}

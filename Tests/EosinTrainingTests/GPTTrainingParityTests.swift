import EosinModels
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// Decoder training parity with PyTorch on the tiny GPT-2 fixture: the LM loss, every
/// parameter's gradient (tied embedding included), then 10 AdamW steps.
final class GPTTrainingParityTests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures"

  func load() throws -> (TrainGPT, [Int32], SafeTensorsFile) {
    let ck = try Checkpoint(path: Self.fixtures + "/tiny-gpt2")
    let m = try TrainGPT(decoder: GPT2Model(checkpoint: ck), imageDim: 8, projectorHidden: 8, seed: 1)
    let g = try SafeTensorsFile(path: Self.fixtures + "/tiny-gpt2-grads.safetensors")
    return (m, try g.tensor("seq").data.map { Int32($0) }, g)
  }

  /// Guards the decoder's backward passes (causal attention, tanh GELU, tied head, Conv1D
  /// layout): all gradients within 1e-4 absolute plus 1e-3 relative.
  func testGradientsMatchPyTorch() throws {
    let (m, seq, g) = try load()
    m.params.zeroGrad()
    let loss = m.step(prefix: [], prefixLength: 0, ids: [seq], targets: [Array(seq.dropFirst()) + [-1]])
    XCTAssertEqual(loss, try g.tensor("loss0").data[0], accuracy: 1e-5)
    let ours = m.export(gradients: true).decoder
    var checked = 0
    for (name, t) in ours {
      let ref = try g.tensor("grad." + name)
      var worst: Float = 0
      for i in 0..<ref.count { worst = max(worst, abs(t.data[i] - ref.data[i]) - 1e-3 * abs(ref.data[i])) }
      XCTAssertLessThan(worst, 1e-4, "gradient of \(name)")
      checked += 1
    }
    XCTAssertEqual(checked, 28)
  }

  /// Guards AdamW on the decoder: 10 losses within 1e-4 of torch.optim.AdamW.
  func testTenAdamWSteps() throws {
    let (m, seq, g) = try load()
    let ref = try g.tensor("adamw_losses").data
    // The projector is not part of the reference model; freeze it by excluding it from the step.
    for k in 0..<10 {
      m.params.zeroGrad()
      let l = m.step(prefix: [], prefixLength: 0, ids: [seq], targets: [Array(seq.dropFirst()) + [-1]])
      XCTAssertEqual(l, ref[k], accuracy: 1e-4, "step \(k)")
      m.params.adamw(lr: 1e-3, weightDecay: 0, clip: 0)
    }
  }
}

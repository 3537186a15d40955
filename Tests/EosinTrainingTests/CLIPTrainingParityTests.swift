import EosinModels
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// Training parity with PyTorch on the tiny CLIP fixture (Scripts/reference/make_model_fixtures.py):
/// the contrastive loss, every parameter's gradient, then the losses of 10 AdamW steps.
final class CLIPTrainingParityTests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures"

  func loadModel() throws -> (TrainCLIP, [Float], [[Int32]]) {
    let ck = try Checkpoint(path: Self.fixtures + "/tiny-clip")
    let m = try TrainCLIP(model: CLIPModel(checkpoint: ck))
    let io = try SafeTensorsFile(path: Self.fixtures + "/tiny-clip-io.safetensors")
    let px = try io.tensor("pixel_values").data
    let idt = try io.tensor("input_ids")
    let rows = (0..<idt.shape[0]).map { r in (0..<idt.shape[1]).map { Int32(idt.data[r * idt.shape[1] + $0]) } }
    return (m, px, rows)
  }

  /// Guards every backward pass of the CLIP pair end to end: gradients of all 78 tensors within
  /// 1e-4 absolute (plus 1e-3 relative) of PyTorch's.
  func testGradientsMatchPyTorch() throws {
    let (m, px, rows) = try loadModel()
    let g = try SafeTensorsFile(path: Self.fixtures + "/tiny-clip-grads.safetensors")
    m.params.zeroGrad()
    let loss = m.step(pixels: px, ids: rows, labels: [0, 1])
    XCTAssertEqual(loss, try g.tensor("loss0").data[0], accuracy: 1e-5)
    let ours = m.export(gradients: true)
    var checked = 0
    for (name, t) in ours {
      guard g.tensors["grad." + name] != nil else { continue }
      let ref = try g.tensor("grad." + name)
      var worst: Float = 0
      for i in 0..<ref.count { worst = max(worst, abs(t.data[i] - ref.data[i]) - 1e-3 * abs(ref.data[i])) }
      XCTAssertLessThan(worst, 1e-4, "gradient of \(name)")
      checked += 1
    }
    XCTAssertEqual(checked, g.tensors.keys.filter { $0.hasPrefix("grad.") }.count)
    XCTAssertGreaterThan(checked, 70)
  }

  /// Guards AdamW (bias correction, step order): the losses of 10 steps at lr 1e-3 without
  /// weight decay or clipping match torch.optim.AdamW within 1e-4.
  func testTenAdamWStepsMatchPyTorch() throws {
    let (m, px, rows) = try loadModel()
    let ref = try SafeTensorsFile(path: Self.fixtures + "/tiny-clip-grads.safetensors").tensor("adamw_losses").data
    for k in 0..<10 {
      m.params.zeroGrad()
      let l = m.step(pixels: px, ids: rows, labels: [0, 1])
      XCTAssertEqual(l, ref[k], accuracy: 1e-4, "step \(k)")
      m.params.adamw(lr: 1e-3, weightDecay: 0, clip: 0)
    }
  }

  /// Guards export: a trained model's HF-named tensors load in the inference CLIPModel and give
  /// the same embeddings as the training forward.
  func testExportLoadsForInference() throws {
    let (m, px, rows) = try loadModel()
    let d = TestSupport.tempDir()
    try SafeTensorsWriter.write(m.export(), to: d + "/model.safetensors")
    try FileManager.default.copyItem(atPath: Self.fixtures + "/tiny-clip/config.json", toPath: d + "/config.json")
    let inf = try CLIPModel(checkpoint: Checkpoint(path: d))
    let ref = try CLIPModel(checkpoint: Checkpoint(path: Self.fixtures + "/tiny-clip"))
    let a = inf.imageEmbeddings(px, batch: 2), b = ref.imageEmbeddings(px, batch: 2)
    XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-6)
    XCTAssertEqual(try inf.textEmbeddings(rows), try ref.textEmbeddings(rows))
  }
}

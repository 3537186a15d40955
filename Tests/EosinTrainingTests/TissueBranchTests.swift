import EosinModels
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// The image tower's tissue-statistics branch in training and inference.
final class TissueBranchTests: XCTestCase {
  func tinyModel() throws -> TrainCLIP {
    let cfg = CLIPConfig.eosin(
      vocabSize: 40, eos: 1, width: 32, visionLayers: 1, textLayers: 1, heads: 2, embedDim: 16, imageSize: 32,
      contextLength: 8, tissueFeatures: true)
    let m = try TrainCLIP(config: cfg, seed: 3)
    // Standardisation as training sets it: some center, a positive scale.
    let c = m.params.offset("vision_model.tissue_features.center"), s = m.params.offset("vision_model.tissue_features.scale")
    for i in 0..<TissueFeatures.count {
      m.params.data[c + i] = 0.1 * Float(i % 7)
      m.params.data[s + i] = 1 + 0.05 * Float(i % 5)
    }
    return m
  }

  func inputs() -> ([Float], [[Int32]]) {
    var rng = SeededRNG(seed: 9)
    let px = (0..<(2 * 3 * 32 * 32)).map { _ in Float(rng.uniform()) * 3 - 1.5 }
    return (px, [[5, 7, 9, 1, 0, 0, 0, 0], [6, 8, 1, 0, 0, 0, 0, 0]])
  }

  /// Guards the branch end to end: the gradient of its projection matches finite differences of
  /// the contrastive loss; the fixed standardisation gets no gradient and survives AdamW with
  /// weight decay; export loads for inference and gives the training forward's features.
  func testGradientStandardisationAndExport() throws {
    let m = try tinyModel()
    let (px, rows) = inputs()
    m.params.zeroGrad()
    _ = m.step(pixels: px, ids: rows, labels: [0, 1])
    let name = "visual_tissue_projection.weight"
    let g = m.export(gradients: true)
    XCTAssertEqual(g[name]?.shape, [16, TissueFeatures.count])
    XCTAssertEqual(g["vision_model.tissue_features.center"]?.data.allSatisfy { $0 == 0 }, true)
    XCTAssertEqual(g["vision_model.tissue_features.scale"]?.data.allSatisfy { $0 == 0 }, true)
    let off = m.params.offset(name)
    for k in [0, 17, 5 * TissueFeatures.count + 44, 15 * TissueFeatures.count + 122] {
      let saved = m.params.data[off + k], eps: Float = 1e-2
      m.params.data[off + k] = saved + eps
      let up = m.step(pixels: px, ids: rows, labels: [0, 1])
      m.params.data[off + k] = saved - eps
      let down = m.step(pixels: px, ids: rows, labels: [0, 1])
      m.params.data[off + k] = saved
      let fd = (up - down) / (2 * eps), analytic = g[name]!.data[k]
      XCTAssertEqual(analytic, fd, accuracy: 2e-3 + 0.02 * abs(fd), "d loss / d \(name)[\(k)]")
    }
    XCTAssertTrue(g[name]!.data.contains { abs($0) > 1e-4 }, "the branch must receive gradient")
    let center = m.params.tensor("vision_model.tissue_features.center").data
    m.params.zeroGrad()
    _ = m.step(pixels: px, ids: rows, labels: [0, 1])
    m.params.adamw(lr: 1e-2, weightDecay: 0.1, clip: 1)
    XCTAssertEqual(m.params.tensor("vision_model.tissue_features.center").data, center)
    // Export and reload.
    let d = TestSupport.tempDir()
    try SafeTensorsWriter.write(m.export(), to: d + "/model.safetensors")
    try JSONEncoder().encode(m.config).write(to: URL(fileURLWithPath: d + "/config.json"))
    let inf = try CLIPModel(checkpoint: Checkpoint(path: d))
    var tape = ViTTape()
    let a = try TrainCLIP(model: inf).model.vision.trainingForward(px, batch: 2, tape: &tape)
    let b = inf.imageFeatures(px, batch: 2)
    XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-4)
    XCTAssertEqual(inf.imageFeatures(Array(px[0..<(3 * 32 * 32)]), batch: 1), Array(b[0..<16]))
    // The branch's tensors under a config without it are refused, by name.
    var plain = inf.config
    plain.visionConfig.tissueFeatures = 0
    let e = TestSupport.tempDir()
    try FileManager.default.copyItem(atPath: d + "/model.safetensors", toPath: e + "/model.safetensors")
    try JSONEncoder().encode(plain).write(to: URL(fileURLWithPath: e + "/config.json"))
    XCTAssertThrowsError(try CLIPModel(checkpoint: Checkpoint(path: e))) { err in
      XCTAssertTrue("\(err.localizedDescription)".contains("tissue"), "\(err)")
    }
  }

  /// An unsupported width is refused in words.
  func testWrongWidthIsRefused() throws {
    var cfg = CLIPConfig.eosin(
      vocabSize: 40, eos: 1, width: 32, visionLayers: 1, textLayers: 1, heads: 2, embedDim: 16, imageSize: 32,
      contextLength: 8)
    cfg.visionConfig.tissueFeatures = 5
    XCTAssertThrowsError(try TrainCLIP(config: cfg, seed: 1)) { e in
      XCTAssertTrue("\(e.localizedDescription)".contains("eosin_tissue_features must be 0 or 123"), "\(e)")
    }
  }
}

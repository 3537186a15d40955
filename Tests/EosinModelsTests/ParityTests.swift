import EosinModels
import EosinTensor
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// Parity with PyTorch/transformers on tiny random models. Fixtures come from
/// Scripts/reference/make_model_fixtures.py. Tolerance: max |diff| <= 1e-4.
final class ParityTests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures"
  let tol: Float = 1e-4

  func io(_ name: String) throws -> SafeTensorsFile { try SafeTensorsFile(path: Self.fixtures + "/" + name) }

  func maxDiff(_ a: [Float], _ b: [Float]) -> Float {
    XCTAssertEqual(a.count, b.count)
    return zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
  }

  /// Guards CLIP image and text towers, projections, normalisation and logits against HF CLIPModel.
  func testCLIPParity() throws {
    let model = try CLIPModel(checkpoint: Checkpoint(path: Self.fixtures + "/tiny-clip"))
    let f = try io("tiny-clip-io.safetensors")
    let px = try f.tensor("pixel_values")
    let ids = try f.tensor("input_ids")
    let rows = (0..<ids.shape[0]).map { r in (0..<ids.shape[1]).map { Int32(ids.data[r * ids.shape[1] + $0]) } }
    let imgF = model.imageFeatures(px.data, batch: 2)
    XCTAssertLessThan(maxDiff(imgF, try f.tensor("image_features").data), tol, "image features")
    let one = model.imageFeatures(Array(px.data[0..<(px.count / 2)]), batch: 1)
    XCTAssertLessThan(maxDiff(one, Array(imgF[0..<one.count])), 1e-5, "one image alone must match its row of the batch")
    let txtF = try model.textFeatures(rows)
    XCTAssertLessThan(maxDiff(txtF, try f.tensor("text_features").data), tol, "text features")
    let ie = model.imageEmbeddings(px.data, batch: 2), te = try model.textEmbeddings(rows)
    XCTAssertLessThan(maxDiff(ie, try f.tensor("image_embeds").data), tol)
    XCTAssertLessThan(maxDiff(te, try f.tensor("text_embeds").data), tol)
    XCTAssertLessThan(maxDiff(model.logits(images: ie, texts: te), try f.tensor("logits_per_image").data), tol * 10)
    XCTAssertEqual(model.logitScale, try f.tensor("logit_scale").data[0])
  }

  /// Guards the backbone rows the out-of-domain model measures against HF CLIP's vision tower:
  /// `pooler_output` then the patch-token mean of `last_hidden_state`
  /// (`Scripts/reference/make_backbone_fixture.py`); the embeddings beside them are unchanged.
  func testCLIPBackboneParity() throws {
    let model = try CLIPModel(checkpoint: Checkpoint(path: Self.fixtures + "/tiny-clip"))
    let px = try io("tiny-clip-io.safetensors").tensor("pixel_values")
    let r = model.imageEmbeddingsAndBackbone(px.data, batch: 2)
    XCTAssertEqual(r.embeddings, model.imageEmbeddings(px.data, batch: 2))
    XCTAssertEqual(model.backboneDim, 96)
    XCTAssertLessThan(maxDiff(r.backbone, try io("tiny-clip-backbone.safetensors").tensor("backbone").data), tol)
  }

  /// Guards GPT-2 logits (Conv1D transpose, tanh GELU, tied head) and greedy tokens against HF.
  func testGPT2ParityAndGreedy() throws {
    let model = try GPT2Model(checkpoint: Checkpoint(path: Self.fixtures + "/tiny-gpt2"))
    let f = try io("tiny-gpt2-io.safetensors")
    let prompt = try f.tensor("prompt").data.map { Int32($0) }
    XCTAssertLessThan(maxDiff(try model.logits(prompt), try f.tensor("logits").data), tol)
    var s = Sampler()
    let gen = try model.generate(prompt: prompt, maxNewTokens: 12, sampler: &s)
    XCTAssertEqual(gen.tokens, try f.tensor("greedy").data.map { Int32($0) })
  }

  /// Guards the KV cache: logits from incremental decoding (prefix, then one token at a time)
  /// equal full recomputation at every position.
  func testKVCacheEqualsRecompute() throws {
    let model = try GPT2Model(checkpoint: Checkpoint(path: Self.fixtures + "/tiny-gpt2"))
    let ids: [Int32] = [5, 17, 33, 2, 71, 9, 40, 41, 3]
    let full = try model.logits(ids)
    var cache = model.makeCache()
    var last = try model.step(Array(ids[0..<4]), cache: &cache)
    XCTAssertLessThan(maxDiff(last, Array(full[(3 * 100)..<(4 * 100)])), 1e-5)
    for t in 4..<ids.count {
      last = try model.step([ids[t]], cache: &cache)
      XCTAssertLessThan(maxDiff(last, Array(full[(t * 100)..<((t + 1) * 100)])), 1e-5, "position \(t)")
    }
    XCTAssertEqual(cache.length, ids.count)
    // Prefix embeddings path: embedding the same ids gives the same result.
    var c2 = model.makeCache()
    let viaEmb = try model.step(embeddings: model.embed(ids), T: ids.count, cache: &c2)
    XCTAssertLessThan(maxDiff(viaEmb, Array(full[(8 * 100)..<(9 * 100)])), 1e-5)
  }

  /// Guards the projector (Linear-GELU-Linear) against torch.
  func testProjectorParity() throws {
    let f = try io("projector-io.safetensors")
    let p = try Projector(file: f, inDim: 24, hidden: 64, outDim: 32)
    XCTAssertLessThan(maxDiff(p.forward(try f.tensor("input").data, 5), try f.tensor("output").data), tol)
  }

  /// Guards seeded sampling: the same seed reproduces the same tokens; top-p 0 is greedy.
  func testSeededSampling() throws {
    let model = try GPT2Model(checkpoint: Checkpoint(path: Self.fixtures + "/tiny-gpt2"))
    var a = Sampler(temperature: 1, topP: 0.9, seed: 7), b = Sampler(temperature: 1, topP: 0.9, seed: 7)
    let ga = try model.generate(prompt: [5, 17], maxNewTokens: 10, sampler: &a)
    let gb = try model.generate(prompt: [5, 17], maxNewTokens: 10, sampler: &b)
    XCTAssertEqual(ga.tokens, gb.tokens)
    var g = Sampler(), n = Sampler(temperature: 1, topP: 0, seed: 1)
    XCTAssertEqual(
      try model.generate(prompt: [5, 17], maxNewTokens: 6, sampler: &g).tokens,
      try model.generate(prompt: [5, 17], maxNewTokens: 6, sampler: &n).tokens)
  }

  /// Guards loading: a checkpoint whose config disagrees with its tensors fails naming the
  /// tensor; an extra tensor fails; a missing tensor fails.
  func testLoaderRejectsMismatch() throws {
    let src = Self.fixtures + "/tiny-gpt2"
    let dir = TestSupport.tempDir()
    let w = try SafeTensorsFile(path: src + "/model.safetensors")
    var all: [String: Tensor] = [:]
    for n in w.tensors.keys { all[n] = try w.tensor(n) }
    func attempt(_ tensors: [String: Tensor], config: String? = nil) -> String {
      let d = dir + "/\(UUID().uuidString)"
      try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
      try! SafeTensorsWriter.write(tensors, to: d + "/model.safetensors")
      try! (config ?? String(contentsOfFile: src + "/config.json", encoding: .utf8)).write(
        toFile: d + "/config.json", atomically: true, encoding: .utf8)
      do { _ = try GPT2Model(checkpoint: Checkpoint(path: d)); return "ok" } catch { return error.localizedDescription }
    }
    XCTAssertEqual(attempt(all), "ok")
    var missing = all
    missing["transformer.h.1.mlp.c_fc.bias"] = nil
    XCTAssertTrue(attempt(missing).hasSuffix("tensor 'transformer.h.1.mlp.c_fc.bias': missing"))
    var extra = all
    extra["transformer.h.9.ln_1.weight"] = Tensor(zeros: [32])
    XCTAssertTrue(attempt(extra).contains("tensor 'transformer.h.9.ln_1.weight': unexpected tensor"))
    let cfg = try String(contentsOfFile: src + "/config.json", encoding: .utf8).replacingOccurrences(
      of: "\"n_positions\": 32", with: "\"n_positions\": 64")
    XCTAssertTrue(attempt(all, config: cfg).contains("tensor 'transformer.wpe.weight': expected shape [64, 32], found [32, 32]"))
  }

  /// Guards preprocessing: a flat image maps to (value/255 - mean)/std in every pixel, and the
  /// centre crop of a non-square image keeps the middle.
  func testPreprocess() {
    let p = ImagePreprocessor(imageSize: 8)
    let flat = [UInt8](repeating: 128, count: 20 * 10 * 3)
    let out = p(flat, width: 20, height: 10)
    XCTAssertEqual(out.count, 3 * 64)
    XCTAssertEqual(out[0], (128 / 255 - p.mean[0]) / p.std[0], accuracy: 1e-5)
    XCTAssertEqual(out[64 * 2 + 63], (128 / 255 - p.mean[2]) / p.std[2], accuracy: 1e-5)
    // Left half black, right half white, 16x8 -> 8x8 crop of a 16x8 resize: columns 0-3 of the
    // crop come from source columns 4-7 (black), 4-7 from 8-11 (white).
    var lr = [UInt8](repeating: 0, count: 16 * 8 * 3)
    for y in 0..<8 { for x in 8..<16 { for c in 0..<3 { lr[(y * 16 + x) * 3 + c] = 255 } } }
    let o2 = ImagePreprocessor(imageSize: 8)(lr, width: 16, height: 8)
    XCTAssertLessThan(o2[3], 0)
    XCTAssertGreaterThan(o2[4], 0)
  }
}

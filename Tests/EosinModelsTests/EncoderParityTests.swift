import EosinModels
import EosinTensor
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// Parity of every published image-encoder layout with its reference library (timm, transformers,
/// open_clip) on tiny random models. Fixtures: Scripts/reference/make_encoder_fixtures.py.
/// Each must match to cosine >= 0.9999 and max |diff| <= 1e-4.
final class EncoderParityTests: XCTestCase {
  static let root = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/encoders"

  /// Loads a fixture folder, runs its reference pixels, and compares with the reference features.
  @discardableResult
  func check(_ name: String, family: String, file: StaticString = #filePath, line: UInt = #line) throws -> LoadedEncoder {
    let dir = Self.root + "/" + name
    let enc = try VisionCheckpoint.load(dir)
    XCTAssertEqual(enc.family, family, file: file, line: line)
    let io = try SafeTensorsFile(path: dir + "/io.safetensors")
    let px = try io.tensor("pixels"), ref = try io.tensor("embedding")
    let B = px.shape[0]
    XCTAssertEqual(px.shape[2], enc.encoder.inputSize, "input size from the config", file: file, line: line)
    XCTAssertEqual(ref.shape[1], enc.encoder.featureDim, file: file, line: line)
    let got = enc.encoder.features(px.data, batch: B)
    let D = ref.shape[1]
    for b in 0..<B {
      let g = Array(got[(b * D)..<((b + 1) * D)]), r = Array(ref.data[(b * D)..<((b + 1) * D)])
      var dot: Float = 0, ng: Float = 0, nr: Float = 0, m: Float = 0
      for i in 0..<D {
        dot += g[i] * r[i]
        ng += g[i] * g[i]
        nr += r[i] * r[i]
        m = max(m, abs(g[i] - r[i]))
      }
      XCTAssertGreaterThanOrEqual(dot / (ng * nr).squareRoot(), 0.9999, "\(name) image \(b): cosine", file: file, line: line)
      XCTAssertLessThanOrEqual(m, 1e-4, "\(name) image \(b): max abs diff", file: file, line: line)
    }
    // One image at a time gives the same rows as the batch.
    let one = enc.encoder.features(Array(px.data[0..<(px.count / B)]), batch: 1)
    XCTAssertEqual(one, Array(got[0..<D]), file: file, line: line)
    return enc
  }

  /// timm hub layout, UNI's recipe: LayerScale, patch 16, dynamic size (input 48 against a
  /// 32 px position grid: anti-aliased bicubic resampling), weights in pytorch_model.bin.
  func testTimmLayerScaleFromBin() throws {
    let e = try check("timm-l16", family: "timm")
    XCTAssertTrue(e.weightsPath.hasSuffix("pytorch_model.bin"))
    XCTAssertEqual(e.preprocess.mean, [0.485, 0.456, 0.406])
    XCTAssertEqual(e.preprocess.crop, 48)
  }

  /// Virchow2's recipe: patch 14, register tokens, SwiGLUPacked with SiLU, concat(CLS, patch
  /// mean); the 2x2 position grid is resampled to the 3x3 input grid.
  func testTimmRegistersSwiGLUAndConcatPooling() throws {
    let e = try check("timm-h14-reg", family: "timm")
    XCTAssertEqual(e.encoder.featureDim, 64)
  }

  /// DINOv2-style giant with registers and no_embed_class, from sharded safetensors.
  func testTimmDinov2RegistersFromShards() throws {
    let e = try check("timm-g14-reg-dinov2", family: "timm")
    XCTAssertTrue(e.weightsPath.hasSuffix("model.safetensors.index.json"))
  }

  /// transformers Dinov2Model (Phikon-v2): plain bicubic position interpolation, LayerScale.
  func testTransformersDinov2() throws {
    let e = try check("hf-dinov2", family: "transformers-dinov2")
    XCTAssertEqual(e.preprocess.crop, 42, "crop size from preprocessor_config.json")
  }

  /// transformers ViTModel (Phikon), from pytorch_model.bin.
  func testTransformersViTFromBin() throws {
    try check("hf-vit", family: "transformers-vit")
  }

  /// The same ViTModel as transformers 5 names and writes it (model.safetensors).
  func testTransformersViTVersion5Names() throws {
    try check("hf-vit-v5", family: "transformers-vit")
  }

  /// open_clip ViT CLIP image tower (projected, normalised), from open_clip_pytorch_model.bin.
  func testOpenCLIP() throws {
    try check("openclip-vit", family: "open_clip")
  }

  /// open_clip CoCa image tower with its attentional pooler.
  func testOpenCLIPCoCaPooler() throws {
    try check("openclip-coca", family: "open_clip-coca")
  }

  /// Eosin's own tiny HF CLIP fixture through the one vision transformer matches CLIPModel.
  func testHFCLIPThroughTheSameViT() throws {
    let dir = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/tiny-clip"
    let enc = try VisionCheckpoint.load(dir)
    let clip = try CLIPModel(checkpoint: Checkpoint(path: dir))
    let io = try SafeTensorsFile(path: TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/tiny-clip-io.safetensors")
    let px = try io.tensor("pixel_values")
    let a = enc.encoder.features(px.data, batch: 2), b = clip.imageEmbeddings(px.data, batch: 2)
    XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-5)
  }

  /// A pickle that calls os.system is refused by name, and nothing runs.
  func testMaliciousPickleIsRefusedWithoutRunning() throws {
    let marker = "/tmp/eosin-evil-pickle-ran"
    try? FileManager.default.removeItem(atPath: marker)
    XCTAssertThrowsError(try VisionCheckpoint.load(Self.root + "/evil")) { e in
      let m = e.localizedDescription
      XCTAssertTrue(m.contains("pytorch_model.bin"), m)
      XCTAssertTrue(m.contains("posix.system") || m.contains("os.system"), m)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
  }

  /// Bicubic resampling matches PyTorch's formulas on a case worked by hand: identity size is a
  /// copy, and a constant grid stays constant (weights sum to one) with and without antialias.
  func testPositionResamplerInvariants() {
    let g: [Float] = (0..<(5 * 5 * 2)).map { Float($0 % 7) }
    XCTAssertEqual(PositionResampler.resample(g, from: 5, 5, to: 5, 5, channels: 2, antialias: false), g)
    let c = [Float](repeating: 3, count: 4 * 4)
    for aa in [false, true] {
      for n in [2, 3, 7] {
        let r = PositionResampler.resample(c, from: 4, 4, to: n, n, channels: 1, antialias: aa)
        XCTAssertLessThan(r.map { abs($0 - 3) }.max()!, 1e-5)
      }
    }
  }
}

/// bf16 inference against fp32 on every fixture: cosine >= 0.999 per image.
final class BF16EncoderTests: XCTestCase {
  func testBF16EmbeddingsStayWithinCosine0999() throws {
    for name in ["timm-l16", "timm-h14-reg", "timm-g14-reg-dinov2", "hf-dinov2", "hf-vit", "openclip-vit", "openclip-coca"] {
      let dir = EncoderParityTests.root + "/" + name
      let enc = try VisionCheckpoint.load(dir)
      let px = try SafeTensorsFile(path: dir + "/io.safetensors").tensor("pixels")
      let B = px.shape[0], D = enc.encoder.featureDim
      let a = enc.encoder.features(px.data, batch: B)
      let b = enc.encoder.converted(to: .bf16).features(px.data, batch: B)
      for i in 0..<B {
        var dot: Float = 0, na: Float = 0, nb: Float = 0
        for j in 0..<D {
          dot += a[i * D + j] * b[i * D + j]
          na += a[i * D + j] * a[i * D + j]
          nb += b[i * D + j] * b[i * D + j]
        }
        XCTAssertGreaterThanOrEqual(dot / (na * nb).squareRoot(), 0.999, "\(name) image \(i)")
      }
    }
  }
}

/// open_clip's text tower against open_clip's encode_text.
final class OpenCLIPTextTests: XCTestCase {
  func testTextTowerParity() throws {
    let dir = EncoderParityTests.root + "/openclip-vit"
    let m = try CLIPModel(openCLIP: dir)
    let io = try SafeTensorsFile(path: dir + "/io.safetensors")
    let ids = try io.tensor("text_ids"), ref = try io.tensor("text_embedding")
    let T = ids.shape[1]
    let rows = (0..<ids.shape[0]).map { r in (0..<T).map { Int32(ids.data[r * T + $0]) } }
    let got = try m.textEmbeddings(rows)
    XCTAssertLessThan(zip(got, ref.data).map { abs($0 - $1) }.max()!, 1e-4)
    let img = m.imageEmbeddings(try io.tensor("pixels").data, batch: 2)
    XCTAssertLessThan(zip(img, try io.tensor("embedding").data).map { abs($0 - $1) }.max()!, 1e-4)
    XCTAssertThrowsError(try CLIPModel(openCLIP: EncoderParityTests.root + "/openclip-coca"))
  }
}

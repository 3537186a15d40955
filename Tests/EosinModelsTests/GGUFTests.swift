import EosinModels
import EosinTensor
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// The GGUF reader, the quantised kernels and the LLaMA-family decoder, against fixtures written by
/// Scripts/reference/make_gguf_fixtures.py (gguf-py and transformers).
final class GGUFTests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf"

  static func json(_ name: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixtures + "/" + name))) as! [String: Any]
  }

  /// Guards: every supported type dequantises exactly as gguf-py does (Q5_K and Q6_K included).
  func testDequantizeMatchesGGUFPy() throws {
    let f = try GGUFFile(path: Self.fixtures + "/quant-blocks.gguf")
    let ref = try Self.json("quant-blocks.json") as! [String: [Double]]
    XCTAssertEqual(Set(ref.keys), ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"])
    for (name, want) in ref {
      let t = try f.tensor(name)
      XCTAssertEqual(t.shape, [2, 256], name)
      var worst = 0.0
      for (a, b) in zip(t.data, want) { worst = max(worst, abs(Double(a) - b)) }
      XCTAssertLessThanOrEqual(worst, 1e-6, "\(name): largest difference \(worst)")
      // The scalar twin gives the same values as the SIMD dequantiser.
      let info = f.tensors[name]!
      var naive = [Float](repeating: 0, count: 512)
      ggmlDequantizeNaive(info.type, try f.bytes(name).baseAddress!, &naive, 512)
      for (a, b) in zip(naive, t.data) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, abs(a)), name) }
    }
  }

  /// Guards: the SIMD matrix-vector kernels (exact and q8 paths) agree with their scalar twins,
  /// and the q8 path stays close to the exact product.
  func testFastKernelsMatchNaiveTwins() throws {
    let f = try GGUFFile(path: Self.fixtures + "/quant-blocks.gguf")
    var x = [Float](repeating: 0, count: 256)
    for i in 0..<256 { x[i] = sin(Float(i) * 0.37) }
    let xq = QuantActivations(count: 256)
    x.withUnsafeBufferPointer { xq.quantize($0.baseAddress!) }
    for info in f.tensorList {
      let m = QuantMatrix(type: info.type, rows: 2, cols: 256, data: try f.bytes(info.name).baseAddress!)
      var fast = [Float](repeating: 0, count: 2), naive = fast, q8 = fast, q8naive = fast
      x.withUnsafeBufferPointer { xp in
        m.gemv(&fast, xp.baseAddress!)
        m.gemvNaive(&naive, xp.baseAddress!)
        m.gemv(&q8, xp.baseAddress!, xq)
        m.gemvNaive(&q8naive, xq)
      }
      for r in 0..<2 {
        XCTAssertEqual(fast[r], naive[r], accuracy: 1e-4 * max(1, abs(naive[r])), "\(info.name) exact row \(r)")
        if [GGMLType.q4_0, .q4_1, .q8_0].contains(info.type) {
          XCTAssertEqual(q8[r], q8naive[r], accuracy: 1e-4 * max(1, abs(q8naive[r])), "\(info.name) q8 row \(r)")
          // int8 activations: error of order |x|/127 per element, well under 2% of the norm here.
          XCTAssertEqual(q8[r], naive[r], accuracy: 0.02 * max(1, abs(naive[r])), "\(info.name) q8 vs exact row \(r)")
        }
      }
    }
  }

  /// Guards: tiny random `llama` and `qwen2` models in F32, F16, Q8_0, Q4_0, Q4_1 and Q4_K give
  /// transformers' logits at every position (exact path, within 1e-4, or 1e-6 of the largest
  /// logit when that is larger: both run fp32 on the same dequantised weights, in different
  /// summation orders, and the Q4_K qwen2 fixture's logits reach 166), and token-by-token decode
  /// with the KV cache gives the same logits.
  func testTinyModelsMatchTransformers() throws {
    let ref = try Self.json("tiny-logits.json")
    XCTAssertEqual(ref.count, 12)
    for (name, v) in ref.sorted(by: { $0.key < $1.key }) {
      let e = v as! [String: Any]
      let ids = (e["ids"] as! [Int]).map { Int32($0) }
      let V = e["vocab"] as! Int
      let want = (e["logits"] as! [Double]).map { Float($0) }
      let model = try LlamaModel(path: Self.fixtures + "/" + name)
      XCTAssertEqual(model.config.architecture.rawValue, name.contains("qwen2") ? "qwen2" : "llama")
      let all = try model.forward(ids, state: model.makeState(precision: .exact), allLogits: true)
      XCTAssertEqual(all.count, ids.count * V)
      let tol = max(1e-4, 1e-6 * (want.map { abs($0) }.max() ?? 0))
      let d = maxAbsDiff(all, want)
      XCTAssertLessThanOrEqual(d, tol, "\(name): batched logits differ from transformers by \(d)")
      // KV cache: one token at a time equals the batched pass.
      let s = model.makeState(precision: .exact)
      var steps: [Float] = []
      for id in ids { steps += try model.forward([id], state: s) }
      let dk = maxAbsDiff(steps, want)
      XCTAssertLessThanOrEqual(dk, tol, "\(name): cached decode differs from transformers by \(dk)")
      // The q8 path: int8 activations; stated tolerance 5% of the logits' range.
      let sq = model.makeState(precision: .q8)
      var q: [Float] = []
      for id in ids { q += try model.forward([id], state: sq) }
      let range = (want.max()! - want.min()!)
      XCTAssertLessThanOrEqual(maxAbsDiff(q, want), 0.05 * range, "\(name): q8 path")
    }
  }

  func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    var m: Float = 0
    for (x, y) in zip(a, b) { m = max(m, abs(x - y)) }
    return a.count == b.count ? m : .infinity
  }

  /// Guards: the reader's metadata API and the name-table checks on a file built here.
  func testBuiltModelLoadsAndRejectsUnknownTensor() throws {
    let dir = TestSupport.tempDir("gguf")
    let ok = dir + "/ok.gguf"
    try GGUFBuilder.tinyLlama().bytes().write(to: URL(fileURLWithPath: ok))
    let m = try LlamaModel(path: ok)
    XCTAssertEqual(m.config.heads, 4)
    XCTAssertEqual(m.config.kvHeads, 2)
    XCTAssertTrue(m.config.tiedOutput)
    var b = GGUFBuilder.tinyLlama()
    b.addF32("blk.0.attn_extra.weight", dims: [32])
    try b.bytes().write(to: URL(fileURLWithPath: dir + "/extra.gguf"))
    XCTAssertThrowsError(try LlamaModel(path: dir + "/extra.gguf")) { e in
      XCTAssertTrue("\(e.localizedDescription)".contains("blk.0.attn_extra.weight"), e.localizedDescription)
    }
  }

  /// Guards: each malformed file is one clear error naming the file, never a crash or a huge
  /// allocation.
  func testBadFilesAreClearErrors() throws {
    let dir = TestSupport.tempDir("gguf-bad")
    let good = GGUFBuilder.tinyLlama().bytes()
    var cases: [(String, Data, String)] = []
    cases.append(("truncated", good.prefix(good.count - 100), "runs past the end"))
    cases.append(("header-only", good.prefix(30), "more than the file can hold"))
    var magic = GGUFBuilder.tinyLlama()
    magic.magic = 0x1234_5678
    cases.append(("magic", magic.bytes(), "wrong magic"))
    var v1 = GGUFBuilder.tinyLlama()
    v1.version = 1
    cases.append(("version1", v1.bytes(), "version 1 is not supported"))
    var off = GGUFBuilder.tinyLlama()
    off.tensors[3].offset = 1 << 40
    cases.append(("offset", off.bytes(), "out of range"))
    var size = GGUFBuilder.tinyLlama()
    size.tensors[1].dims = [32, 1 << 20]
    cases.append(("size", size.bytes(), "runs past the end"))
    var str = GGUFBuilder()
    str.add("general.architecture", raw: Data([8, 0, 0, 0]) + withUnsafeBytes(of: UInt64(1) << 63) { Data($0) })
    cases.append(("string-length", str.bytes() + Data(count: 64), "string length"))
    var arr = GGUFBuilder()
    arr.add("tokenizer.ggml.tokens", raw: Data([9, 0, 0, 0, 5, 0, 0, 0]) + withUnsafeBytes(of: UInt64(1) << 40) { Data($0) })
    cases.append(("array-count", arr.bytes() + Data(count: 64), "larger than the file"))
    var type = GGUFBuilder.tinyLlama()
    type.tensors[2].type = 11
    cases.append(("type", type.bytes(), "Q3_K"))
    var arch = GGUFBuilder.tinyLlama()
    arch.kv[0] = ("general.architecture", Data([8, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]) + Data("mamba".utf8))
    cases.append(("arch", arch.bytes(), "architecture 'mamba' is not supported"))
    cases.append(("vocab", GGUFBuilder.tinyLlama(vocab: 256, tokens: 300).bytes(), "300 tokens but token_embd.weight has 256"))
    // Found by the fuzzer: a block count of millions made the loader build a name set per block
    // (2.5 GB, 90 s) before checking any tensor.
    var blocks = GGUFBuilder.tinyLlama()
    blocks.kv[1] = ("llama.block_count", GGUFBuilder.u32(4) + GGUFBuilder.u32(11_468_802))
    cases.append(("block-count", blocks.bytes(), "block_count 11468802 is more than"))
    var count = GGUFBuilder.tinyLlama()
    count.tensorCountOverride = UInt64(1) << 50
    cases.append(("tensor-count", count.bytes(), "more than the file can hold"))
    for (name, bytes, want) in cases {
      let p = dir + "/\(name).gguf"
      try bytes.write(to: URL(fileURLWithPath: p))
      XCTAssertThrowsError(try LlamaModel(path: p), name) { e in
        let m = e.localizedDescription
        XCTAssertTrue(m.hasPrefix(p), "\(name): \(m)")
        XCTAssertTrue(m.contains(want), "\(name): \(m)")
        XCTAssertFalse(m.contains("\n"), name)
      }
    }
  }

  /// Guards: the exact decode path on the real SmolLM2 file reproduces transformers' top logits
  /// (skipped without the file; `make lm` fetches it).
  func testSmolLM2LastLogitsMatchTransformers() throws {
    guard let path = TestSupport.smolLM2 else { throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not in the cache; run `make lm`") }
    let ref = try Self.json("smollm2-reference.json")
    let model = try LlamaModel(path: path)
    let e = (ref["prompts"] as! [[String: Any]])[0]
    let ids = (e["ids"] as! [Int]).map { Int32($0) }
    let logits = try model.forward(ids, state: model.makeState(capacity: 256, precision: .exact))
    let top = e["last_top_ids"] as! [Int], vals = e["last_top_logits"] as! [Double]
    var worst: Float = 0
    for (i, v) in zip(top, vals) { worst = max(worst, abs(logits[i] - Float(v))) }
    XCTAssertLessThanOrEqual(worst, 2e-3, "top-64 logits differ from transformers by \(worst)")
    XCTAssertEqual(logits.indices.max { logits[$0] < logits[$1] }, top[0])
  }
}

/// Gradient parity of the backward pass through a frozen LLaMA-family model with transformers
/// (Scripts/reference/make_llama_grad_fixtures.py): loss and d loss / d input embeddings.
final class LlamaGradientTests: XCTestCase {
  func testInputGradientMatchesTransformers() throws {
    let dir = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf"
    for name in ["tiny-llama-F32", "tiny-qwen2-F32", "tiny-llama-Q4_1"] {
      let m = try LlamaModel(file: try GGUFFile(path: "\(dir)/\(name).gguf"))
      let f = try SafeTensorsFile(path: "\(dir)/grad-\(name).safetensors")
      let x = try f.tensor("embeddings"), ref = try f.tensor("grad")
      let targets = try f.tensor("targets").data.map { Int32($0) }
      let r = try m.inputGradient(embeddings: x.data, count: x.shape[0], targets: targets)
      XCTAssertEqual(r.count, 10, name)
      XCTAssertEqual(r.loss, try f.tensor("loss").data[0], accuracy: 1e-4, name)
      let scale = ref.data.map(abs).max()!
      let diff = zip(r.grad, ref.data).map { abs($0 - $1) }.max()!
      XCTAssertLessThan(diff, 1e-4 * max(1, scale), "\(name): max |grad diff| \(diff) (grad scale \(scale))")
    }
  }

  /// Low-rank adapters on q and v: the loss, the input gradient and every adapter's dA and dB
  /// against PyTorch; the inference forward with the same adapters gives the same loss.
  func testLoRAGradientsMatchPyTorch() throws {
    let dir = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf"
    for name in ["tiny-llama-F32", "tiny-qwen2-F32"] {
      let m = try LlamaModel(file: try GGUFFile(path: "\(dir)/\(name).gguf"))
      let f = try SafeTensorsFile(path: "\(dir)/grad-lora-\(name).safetensors")
      let c = m.config
      let rank = Int(f.metadata["lora_rank"]!)!, alpha = Float(f.metadata["lora_alpha"]!)!
      var all: [String: Tensor] = [:]
      for n in f.tensors.keys { all[n] = try f.tensor(n) }
      m.adapters = try LoRAAdapters(tensors: all, rank: rank, alpha: alpha, config: c, path: f.path)
      let x = try f.tensor("embeddings"), ref = try f.tensor("grad")
      let targets = try f.tensor("targets").data.map { Int32($0) }
      let T = x.shape[0]
      let r = try m.inputGradient(embeddings: x.data, count: T, targets: targets)
      let refLoss = try f.tensor("loss").data[0]
      XCTAssertEqual(r.loss, refLoss, accuracy: 1e-4, name)
      func close(_ got: [Float], _ want: [Float], _ what: String) {
        let scale = want.map(abs).max()!
        let diff = zip(got, want).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(diff, 1e-4 * max(1, scale), "\(name) \(what): max diff \(diff) (scale \(scale))")
      }
      close(r.grad, ref.data, "input gradient")
      // Gradients in the HF layout (the engine keeps GGUF's query rows), under "grad." + name.
      let g = try XCTUnwrap(r.adapterGrad).tensors(config: c)
      XCTAssertEqual(g.count, 4 * c.layers)
      for (n, t) in g { close(t.data, try f.tensor("grad." + n).data, n) }
      // Inference: the same adapters in the cached forward give the same loss.
      let logits = try m.forward(embeddings: x.data, count: T, state: m.makeState(capacity: 32), allLogits: true)
      var loss: Double = 0, n = 0
      for t in 0..<T where targets[t] >= 0 {
        let row = logits[(t * c.vocabSize)..<((t + 1) * c.vocabSize)]
        let mx = row.max()!
        let z = row.reduce(0.0) { $0 + Double(expf($1 - mx)) }
        loss += log(z) - Double(row[row.startIndex + Int(targets[t])] - mx)
        n += 1
      }
      XCTAssertEqual(Float(loss / Double(n)), refLoss, accuracy: 1e-4, "\(name): inference forward with adapters")
      // Saved and loaded under PEFT's names, the adapters are the same.
      let path = NSTemporaryDirectory() + "lora-\(name)-\(ProcessInfo.processInfo.processIdentifier).safetensors"
      defer { try? FileManager.default.removeItem(atPath: path) }
      try SafeTensorsWriter.write(m.adapters!.tensors(config: c), metadata: m.adapters!.metadata, to: path)
      XCTAssertEqual(try LoRAAdapters(file: try SafeTensorsFile(path: path), config: c), m.adapters)
    }
  }
}

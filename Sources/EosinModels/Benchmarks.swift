import EosinTensor
import EosinWeights
import Foundation

/// Named architectures at real sizes, for benchmarks with random weights.
public enum Architectures {
  /// GPT-2 sizes: gpt2-124m (and gpt2-tiny for quick checks).
  public static func decoder(_ name: String) -> GPT2Config? {
    var c = GPT2Config()
    switch name {
    case "gpt2-124m": break
    case "gpt2-tiny":
      c.nEmbd = 128
      c.nLayer = 2
      c.nHead = 4
      c.vocabSize = 1000
    default: return nil
    }
    return c
  }
}

/// Results of timing the image encoder.
public struct EncoderBenchResult: Sendable {
  public var imagesPerSecond: Double
  public var gflops: Double
  public var mode: String
  public var seconds: [Double]
}

/// Times the vision tower on random images.
public enum EncoderBenchmark {
  /// Times ``VisionTransformer/features(_:batch:)`` (one image per core for a batch, rows split
  /// across cores for one image) on `batch` images.
  public static func run(model: VisionTransformer, shape: ViTShape, batch: Int, repeats: Int, mode: String)
    -> EncoderBenchResult
  {
    let S = model.inputSize
    var px = [Float](repeating: 0, count: batch * 3 * S * S)
    for i in 0..<px.count { px[i] = Float((i * 7919) % 255) / 128 - 1 }
    var secs: [Double] = []
    for r in 0...repeats {
      let t0 = Probes.now()
      _ = model.features(px, batch: batch)
      if r > 0 { secs.append(Probes.now() - t0) }
    }
    let med = medianOf(secs)
    return EncoderBenchResult(
      imagesPerSecond: Double(batch) / med, gflops: shape.flops * Double(batch) / med / 1e9, mode: mode, seconds: secs)
  }

}

/// Results of timing decode.
public struct DecoderBenchResult: Sendable {
  public var tokensPerSecond: Double
  /// Bytes of weights read per decoded token (every block matrix, LayerNorms, and the tied head).
  public var bytesPerToken: Double
  public var prefillTokensPerSecond: Double
  /// Read bandwidth (GB/s), median of probes interleaved with the decode repeats.
  public var bandwidthGBs: Double
}

/// Times greedy decode with the KV cache after a prompt.
public enum DecoderBenchmark {
  public static func run(model: GPT2Model, promptLength: Int, newTokens: Int, repeats: Int) throws -> DecoderBenchResult {
    let prompt = (0..<promptLength).map { Int32(($0 * 31) % model.vocabSize) }
    var rates: [Double] = [], prefill: [Double] = [], bw: [Double] = []
    for r in 0...repeats {
      if r > 0 { bw.append(Probes.readBandwidthGBs(repeats: 3)) }
      var cache = model.makeCache(capacity: promptLength + newTokens + 1)
      let t0 = Probes.now()
      var logits = try model.step(prompt, cache: &cache)
      let t1 = Probes.now()
      var s = Sampler()
      for _ in 0..<newTokens {
        let (tok, _) = s.sample(logits)
        logits = try model.step([tok], cache: &cache)
      }
      let t2 = Probes.now()
      if r > 0 {
        rates.append(Double(newTokens) / (t2 - t1))
        prefill.append(Double(promptLength) / (t1 - t0))
      }
    }
    let c = model.config
    let C = Double(c.nEmbd), I = Double(c.nInner ?? 4 * c.nEmbd)
    let perLayer = (3 * C * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C) + 4 * C
    let bytes = 4 * (Double(c.nLayer) * perLayer + Double(c.vocabSize) * C + 2 * C)
    bw.append(Probes.readBandwidthGBs(repeats: 3))
    return DecoderBenchResult(
      tokensPerSecond: medianOf(rates), bytesPerToken: bytes, prefillTokensPerSecond: medianOf(prefill),
      bandwidthGBs: medianOf(bw))
  }
}

import ArgumentParser
import EosinModels
import EosinSlide
import EosinTensor
import EosinWeights
import Foundation

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmarks. Each prints medians and a ratio against a reference measured in the same run.",
    subcommands: [BenchSlide.self, BenchEncoder.self, BenchDecoder.self, BenchTokenizer.self])
}

struct BenchSlide: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "slide", abstract: "Tiler tiles/s against a raw OpenSlide read_region loop over the same regions.")

  @Argument(help: "A whole-slide image.") var slide: String
  @Option(help: "Target microns per pixel.") var mpp: Double = 0.5
  @Option(help: "Tile side in pixels.") var size: Int = 224
  @Option(help: "Timed rounds of each loop.") var repeats: Int = 5
  @Option(help: "Relative mpp tolerance for 1:1 reads (0 forces resampling).") var tolerance: Double = 0.01
  @Option(help: "The slide's level-0 mpp when the file lacks it.") var slideMpp: Double?

  func run() throws {
    let s = try Slide(path: slide)
    let tissue = try TissueDetector().detect(s)
    let tiler = try Tiler(
      slide: s, mpp: mpp, tileSize: size, overrideMPP: slideMpp, tissue: tissue, tolerance: tolerance, mppOption: "--slide-mpp")
    let r = try SlideBenchmark.run(tiler, repeats: max(1, repeats))
    let t = EosinSlide.median(r.tilerRates), raw = EosinSlide.median(r.rawRates)
    print("slide      \((slide as NSString).lastPathComponent)")
    print(
      "tiles      \(r.tiles) of \(size) px at \(fmt(tiler.grid.mpp, 4)) µm/px from level \(tiler.grid.level)\(r.resampled ? " (resampled)" : " (1:1)")"
    )
    print("raw loop   \(fmt(raw, 1)) tiles/s (median of \(r.rawRates.count); openslide_read_region only)")
    print("tiler      \(fmt(t, 1)) tiles/s (median of \(r.tilerRates.count); read + RGB\(r.resampled ? " + resample" : ""))")
    print("ratio      \(fmt(t / raw, 3))x raw (target >= 0.9)")
  }
}

/// Prints a JSON object on one line (for scripts) when asked.
func emitJSON(_ o: [String: Any]) {
  if let d = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) { print(String(decoding: d, as: UTF8.self)) }
}

struct BenchEncoder: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "encoder",
    abstract: "Image-encoder img/s and GFLOP/s with random weights, against sgemm peak measured in the same run.")

  @Option(help: "vit-b-16, vit-b-32, vit-s-16 or vit-t-16.") var arch = "vit-b-16"
  @Option(help: "Images per forward.") var batch = 32
  @Option(help: "Timed repeats (after one warm-up).") var repeats = 3
  @Option(help: "parallel (one image per core), batched (BLAS on all cores), or both.") var mode = "both"
  @Flag(help: "Print one JSON line.") var json = false

  func run() throws {
    guard let cfg = Architectures.vision(arch) else { throw ValidationError("unknown --arch \(arch)") }
    var src = RandomTensors(seed: 1)
    let model = try CLIPModel(config: cfg, source: &src)
    let v = cfg.visionConfig
    let T = (v.imageSize / v.patchSize) * (v.imageSize / v.patchSize) + 1
    // Peak: the encoder's dominant GEMM shape (tokens x hidden -> 4*hidden), both ways.
    let peak2 = Probes.sgemmGFLOPS(M: T * min(batch, 8), N: v.intermediateSize, K: v.hiddenSize, threads: Threads.cores)
    let peak1 = Probes.sgemmGFLOPS(M: T, N: v.intermediateSize, K: v.hiddenSize, threads: 1) * Double(Threads.cores)
    let peak = max(peak1, peak2)
    var results: [EncoderBenchResult] = []
    if mode != "batched" && batch > 1 {
      results.append(EncoderBenchmark.run(model: model, batch: batch, repeats: repeats, parallelImages: true))
    }
    if mode != "parallel" || batch == 1 {
      results.append(EncoderBenchmark.run(model: model, batch: batch, repeats: repeats, parallelImages: false))
    }
    let best = results.max { $0.imagesPerSecond < $1.imagesPerSecond }!
    if json {
      emitJSON([
        "arch": arch, "batch": batch, "img_per_s": best.imagesPerSecond, "gflops": best.gflops, "sgemm_peak_gflops": peak,
        "mode": best.mode,
      ])
      return
    }
    print(
      "arch         \(arch) (\(v.numHiddenLayers) layers, width \(v.hiddenSize), \(T) tokens), batch \(batch), \(Threads.cores) cores"
    )
    print("sgemm peak   \(fmt(peak, 1)) GFLOP/s (encoder MLP shape; max of 1 thread x cores and \(Threads.cores)-thread)")
    for r in results {
      print(
        "\(r.mode.padding(toLength: 28, withPad: " ", startingAt: 0)) \(fmt(r.imagesPerSecond, 2)) img/s  \(fmt(r.gflops, 1)) GFLOP/s  \(fmt(r.gflops / peak, 2)) of peak"
      )
    }
    print("best         \(fmt(best.imagesPerSecond, 2)) img/s (\(best.mode))")
  }
}

struct BenchDecoder: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "decoder",
    abstract: "Decoder tok/s with random weights, against the read-bandwidth bound measured in the same run.")

  @Option(help: "gpt2-124m or gpt2-tiny.") var arch = "gpt2-124m"
  @Option(help: "Prompt tokens before decoding.") var prompt = 16
  @Option(help: "Tokens to decode.") var tokens = 128
  @Option(help: "Timed repeats (after one warm-up).") var repeats = 3
  @Flag(help: "Print one JSON line.") var json = false

  func run() throws {
    guard let cfg = Architectures.decoder(arch) else { throw ValidationError("unknown --arch \(arch)") }
    var src = RandomTensors(seed: 2)
    let model = try GPT2Model(config: cfg, source: &src)
    let r = try DecoderBenchmark.run(model: model, promptLength: prompt, newTokens: tokens, repeats: repeats)
    let bw = r.bandwidthGBs
    let bound = bw * 1e9 / r.bytesPerToken
    if json {
      emitJSON([
        "arch": arch, "tok_per_s": r.tokensPerSecond, "bandwidth_gbs": bw, "bound_tok_per_s": bound,
        "bytes_per_token": r.bytesPerToken,
      ])
      return
    }
    print("arch         \(arch) (\(cfg.nLayer) layers, width \(cfg.nEmbd), vocab \(cfg.vocabSize)), fp32, \(Threads.cores) cores")
    print("weights/tok  \(fmt(r.bytesPerToken / 1e6, 1)) MB read per token")
    print("bandwidth    \(fmt(bw, 1)) GB/s read (median of probes between the decode runs)")
    print("bound        \(fmt(bound, 1)) tok/s")
    print(
      "decode       \(fmt(r.tokensPerSecond, 1)) tok/s (median of \(repeats), \(tokens) tokens after \(prompt))  = \(fmt(r.tokensPerSecond / bound, 2)) of bound"
    )
    print("prefill      \(fmt(r.prefillTokensPerSecond, 1)) tok/s")
  }
}

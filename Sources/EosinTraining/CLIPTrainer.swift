import EosinModels
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// Settings for contrastive training.
public struct CLIPTrainConfig: Codable, Sendable {
  public var batch = 64
  public var steps = 2000
  public var warmup = 100
  public var peakLR: Float = 5e-4
  public var weightDecay: Float = 0.05
  public var clip: Float = 1.0
  public var seed: UInt64 = 1
  public var contextLength = 40
  /// Share of each batch that is non-tissue (blank, noise, pen, blur, slide background).
  public var nonTissueShare: Float = 0.08
  public var checkpointEvery = 100
  /// Augmented training draws that standardise the tissue branch (``TissueBranch``) before step 0.
  public var tissueSample = 1024
  public init() {}
}

/// The contrastive training loop: augmented batches, label-aware CLIP loss, AdamW with warmup
/// and cosine decay, gradient clipping, periodic atomic checkpoints with optimizer state.
///
/// Batches depend only on (seed, step), so a resumed run sees the same data as an uninterrupted
/// one. Not thread-safe; uses every core through the engine's kernels.
public final class CLIPTrainer {
  public let model: TrainCLIP
  public let config: CLIPTrainConfig
  let images: [RawImage]
  let labels: [Int]
  /// Cumulative sampling weights of `images` (organ- and class-balanced draws).
  let cumulative: [Double]
  let nonTissue: [RawImage]
  let nonTissueClass: Int
  let captions: CaptionBuilder
  let tokenizer: Tokenizer
  let augmenter: Augmenter
  let pad: Int32, eos: Int32

  /// - Parameter weights: each image's relative chance of being drawn (``TileSampling/weights``);
  ///   empty for uniform draws.
  public init(
    model: TrainCLIP, images: [RawImage], labels: [Int], weights: [Double] = [], nonTissue: [RawImage], nonTissueClass: Int,
    captions: CaptionBuilder, tokenizer: Tokenizer, config: CLIPTrainConfig
  ) throws {
    guard !images.isEmpty else { throw TrainingError.data("no training images: the dataset is empty") }
    guard weights.isEmpty || (weights.count == images.count && weights.allSatisfy { $0 >= 0 && $0.isFinite }) else {
      throw TrainingError.data("sampling weights: \(weights.count) for \(images.count) images, or a negative weight")
    }
    self.model = model
    self.images = images
    self.labels = labels
    var acc = 0.0
    cumulative = (weights.isEmpty ? [Double](repeating: 1, count: images.count) : weights).map {
      acc += $0
      return acc
    }
    guard acc > 0 else { throw TrainingError.data("sampling weights are all zero") }
    self.nonTissue = nonTissue
    self.nonTissueClass = nonTissueClass
    self.captions = captions
    self.tokenizer = tokenizer
    self.config = config
    augmenter = Augmenter(size: model.config.visionConfig.imageSize)
    guard let e = tokenizer.eos else { throw TrainingError.data("tokenizer has no end token") }
    eos = e
    pad = tokenizer.special["<|pad|>"] ?? e
  }

  /// Sets the tissue branch's fixed `center` and `scale` (``TissueBranch/standardisation(_:)``)
  /// from ``TissueFeatures`` of `config.tissueSample` augmented draws of the training tiles (at
  /// most four per tile: the distribution the branch sees in training), before step 0.
  /// - Returns: the number of draws.
  @discardableResult
  public func fitTissueStatistics() -> Int {
    let n = max(2, min(config.tissueSample, 4 * images.count)), S = augmenter.size
    var rng = SeededRNG(seed: config.seed ^ 0x7155_0E5)
    let picks = (0..<n).map { _ in TileSampling.draw(cumulative, Double(rng.uniform())) }
    let seeds = (0..<n).map { _ in rng.next() }
    var rows = [[Float]](repeating: [], count: n)
    let pre = ImagePreprocessor(imageSize: S)
    rows.withUnsafeMutableBufferPointer { out in
      let base = out.baseAddress!
      parallelFor(n) { k in
        var r = SeededRNG(seed: seeds[k])
        var px = [Float](repeating: 0, count: 3 * S * S)
        px.withUnsafeMutableBufferPointer { self.augmenter.augment(self.images[picks[k]], rng: &r, into: $0.baseAddress!) }
        base[k] = px.withUnsafeBufferPointer {
          TissueFeatures.compute(pixels: $0.baseAddress!, size: S, mean: pre.mean, std: pre.std)
        }
      }
    }
    let (center, scale) = TissueBranch.standardisation(rows)
    let c = model.params.offset("vision_model.tissue_features.center")
    let s = model.params.offset("vision_model.tissue_features.scale")
    for i in center.indices {
      model.params.data[c + i] = center[i]
      model.params.data[s + i] = scale[i]
    }
    return n
  }

  /// Token rows for captions: ids + end token, truncated and padded to the context length.
  public func tokenRows(_ texts: [String]) -> [[Int32]] {
    let T = config.contextLength
    return texts.map { t in
      var ids = Array(tokenizer.encode(t).prefix(T - 1)) + [eos]
      while ids.count < T { ids.append(pad) }
      return ids
    }
  }

  /// Runs from the model's current step to `config.steps`, or until `stop()` says so.
  /// - Parameters:
  ///   - log: receives one line per `logEvery` steps (loss, lr, grad norm, img/s).
  ///   - save: called with the step number to write a checkpoint.
  public func run(logEvery: Int = 20, stop: () -> Bool, log: (String) -> Void, save: (Int) throws -> Void) throws {
    let B = config.batch, S = augmenter.size
    if model.params.step == 0 && model.config.visionConfig.tissueFeatures > 0 {
      log("tissue statistics standardised on \(fitTissueStatistics()) augmented training draws")
    }
    var losses: [Float] = []
    var t0 = Probes.now()
    var seen = 0
    while model.params.step < config.steps {
      if stop() {
        try save(model.params.step)
        log("stopped at step \(model.params.step); checkpoint saved")
        return
      }
      let step = model.params.step
      var rng = SeededRNG(seed: config.seed &* 0x9E37_79B9 &+ UInt64(step) &* 0x85EB_CA6B &+ 1)
      // Pick the batch: tissue tiles by a per-step shuffle, plus a few non-tissue images.
      var picks: [(RawImage, Int)] = []
      for _ in 0..<B {
        if !nonTissue.isEmpty && rng.uniform() < config.nonTissueShare {
          picks.append((nonTissue[Int(rng.next() % UInt64(nonTissue.count))], nonTissueClass))
        } else {
          let i = TileSampling.draw(cumulative, Double(rng.uniform()))
          picks.append((images[i], labels[i]))
        }
      }
      let seeds = (0..<B).map { _ in rng.next() }
      let px = UnsafeMutableBufferPointer<Float>.allocate(capacity: B * 3 * S * S)
      defer { px.deallocate() }
      parallelFor(B) { b in
        var r = SeededRNG(seed: seeds[b])
        self.augmenter.augment(picks[b].0, rng: &r, into: px.baseAddress! + b * 3 * S * S)
      }
      let texts = picks.map { captions.caption($0.1, rng: &rng) }
      model.params.zeroGrad()
      let loss = model.step(pixels: Array(px), ids: tokenRows(texts), labels: picks.map { $0.1 })
      let lr = learningRate(step: step, total: config.steps, warmup: config.warmup, peak: config.peakLR)
      let gn = model.params.adamw(lr: lr, weightDecay: config.weightDecay, clip: config.clip)
      losses.append(loss)
      seen += B
      if model.params.step % logEvery == 0 {
        let dt = Probes.now() - t0
        let mean = losses.reduce(0, +) / Float(losses.count)
        log(
          String(
            format: "step %5d/%d  loss %.4f  lr %.2e  grad %.2f  scale %.1f  %.1f img/s", model.params.step, config.steps, mean,
            lr, gn, expf(model.params.data[model.params.offset("logit_scale")]), Double(seen) / dt))
        losses.removeAll()
        seen = 0
        t0 = Probes.now()
      }
      if model.params.step % config.checkpointEvery == 0 { try save(model.params.step) }
    }
    try save(model.params.step)
  }
}

/// Organ- and class-balanced sampling for contrastive training.
public enum TileSampling {
  /// Per-tile weights: every dataset gets its share of the draws (`datasetShare`, default equal),
  /// split among its classes in proportion to the square root of their sizes (rare classes are
  /// seen more often than their share of tiles, without repeating a few tiles endlessly), and
  /// evenly among a class's tiles.
  public static func weights(datasets: [String], labels: [Int], datasetShare: [String: Double] = [:]) -> [Double] {
    var count: [String: [Int: Int]] = [:]
    for (d, l) in zip(datasets, labels) { count[d, default: [:]][l, default: 0] += 1 }
    var classMass: [String: Double] = [:]
    for (d, cs) in count { classMass[d] = cs.values.reduce(0) { $0 + Double($1).squareRoot() } }
    return zip(datasets, labels).map { d, l in
      let n = Double(count[d]![l]!)
      return (datasetShare[d] ?? 1) * (n.squareRoot() / classMass[d]!) / n
    }
  }

  /// The index whose cumulative weight first exceeds `u` x total (`u` in [0, 1)).
  public static func draw(_ cumulative: [Double], _ u: Double) -> Int {
    let target = u * cumulative[cumulative.count - 1]
    var lo = 0, hi = cumulative.count - 1
    while lo < hi {
      let mid = (lo + hi) / 2
      if cumulative[mid] > target { hi = mid } else { lo = mid + 1 }
    }
    return lo
  }
}

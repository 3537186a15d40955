import EosinModels
import EosinTensor
import EosinTokenizer
import Foundation

/// Settings for ``CLIPHeadAligner``.
public struct CLIPAlignConfig: Codable, Sendable {
  /// Augmented training draws whose features the image head is fitted on (organ- and
  /// class-balanced like the contrastive batches, with the same share of non-tissue images).
  public var draws = 8192
  /// Full-batch Adam epochs over the draws.
  public var epochs = 400
  public var lr: Float = 2e-3
  /// L2 pull of the head towards its contrastive weights (per weight, on the mean loss).
  public var pull: Float = 1e-2
  /// Validation balanced accuracy is measured every this many epochs; the best head is kept.
  public var evalEvery = 10
  public var nonTissueShare: Float = 0.08
  /// Training captions sampled per class for its anchor (``CaptionBuilder/caption(_:rng:)``:
  /// the wording, features and organ mentions contrastive training paired with its images).
  public var anchorCaptions = 128
  public var seed: UInt64 = 1
  public init() {}
}

/// What ``CLIPHeadAligner/run(log:)`` did, for training.json.
public struct CLIPAlignReport: Codable, Sendable {
  public var draws: Int
  public var classes: Int
  public var valTiles: [String: Int]
  /// Validation balanced accuracy per dataset against the training-wording anchors, before.
  public var valBefore: [String: Double]
  /// The same after alignment (the kept epoch).
  public var valAfter: [String: Double]
  /// The kept epoch (0: the contrastive head was best and is unchanged).
  public var bestEpoch: Int
  public var lossBefore: Double
  public var lossAfter: Double
  public var seconds: Double
}

/// Fits the image tower's two linear maps into the shared space (`visual_projection` on the
/// pooled class token and, when present, `visual_tissue_projection` on the tissue statistics)
/// to the frozen text tower, after contrastive training.
///
/// Contrastive batches give each image only the classes that happen to share its batch as
/// negatives, and a few thousand steps leave the head short of what a converged linear probe on
/// the same features reaches. Here every class competes in every example: each class's anchor is
/// the mean text embedding of its *training* captions (drawn by ``CaptionBuilder``, as contrastive
/// training draws them; the prompt sets' held-out wording is never used), and
/// the head minimises cross-entropy against the anchors over augmented training draws, with an
/// L2 pull towards the contrastive head. The backbone and the text tower are frozen; the kept
/// head is the one with the best mean validation balanced accuracy (val split of each dataset,
/// the dataset's own classes and non-tissue competing), which may be the unchanged one.
public final class CLIPHeadAligner {
  public let model: TrainCLIP
  public let config: CLIPAlignConfig
  let trainer: CLIPTrainer
  let validation: [(dataset: String, image: RawImage, label: Int)]

  /// - Parameters:
  ///   - trainer: the contrastive trainer of `model` (its draws, captions and tokenizer are reused).
  ///   - validation: un-augmented validation tiles with their dataset and class.
  public init(
    trainer: CLIPTrainer, validation: [(dataset: String, image: RawImage, label: Int)], config: CLIPAlignConfig
  ) {
    self.trainer = trainer
    self.model = trainer.model
    self.validation = validation
    self.config = config
  }

  /// The classes the head is fitted on: every training label and the non-tissue class.
  var classList: [Int] { Array(Set(trainer.labels).union([trainer.nonTissueClass])).sorted() }

  /// Mean normalised text embedding of `config.anchorCaptions` training captions of each class
  /// (drawn as contrastive training draws them), normalised: (K, D).
  func anchors(_ classes: [Int]) throws -> [Float] {
    let D = model.config.projectionDim
    var out = [Float](repeating: 0, count: classes.count * D)
    var rng = SeededRNG(seed: config.seed ^ 0xA4C0)
    for (k, c) in classes.enumerated() {
      let texts = (0..<config.anchorCaptions).map { _ in trainer.captions.caption(c, rng: &rng) }
      let e = try model.model.textEmbeddings(trainer.tokenRows(texts))
      for t in 0..<texts.count { for d in 0..<D { out[k * D + d] += e[t * D + d] } }
    }
    out.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, classes.count, D) }
    return out
  }

  /// Rows of preprocessed pixels, 256 images at a time: `fill` writes image i's pixels, and
  /// `parts` maps a batch (pixels, count) to per-image parts (each (count, width)), which each
  /// image's row holds one after another.
  func rows(
    count n: Int, fill: (Int, UnsafeMutablePointer<Float>) -> Void, parts: ([Float], Int) -> [[Float]]
  ) -> [Float] {
    let S = model.config.visionConfig.imageSize, per = 3 * S * S
    var rows: [Float] = []
    var start = 0
    while start < n {
      let b = min(256, n - start)
      var px = [Float](repeating: 0, count: b * per)
      px.withUnsafeMutableBufferPointer { p in
        let base = p.baseAddress!
        parallelFor(b) { i in fill(start + i, base + i * per) }
      }
      let ps = parts(px, b)
      for i in 0..<b {
        for p in ps {
          let w = p.count / b
          rows += p[(i * w)..<((i + 1) * w)]
        }
      }
      start += b
    }
    return rows
  }

  /// Head inputs (pooled class token, then tissue statistics) of preprocessed pixels.
  func inputs(count n: Int, fill: (Int, UnsafeMutablePointer<Float>) -> Void) -> [Float] {
    rows(count: n, fill: fill) { px, b in
      let r = model.model.vision.projectionInputs(px, batch: b)
      return [r.pooled, r.tissue]
    }
  }

  /// The `config.draws` training draws (image, class) the head is fitted on, organ- and
  /// class-balanced with `config.nonTissueShare` non-tissue images, and each one's augmentation seed.
  func draws() -> (picks: [(RawImage, Int)], seeds: [UInt64]) {
    var rng = SeededRNG(seed: config.seed ^ 0xA11_6E)
    var picks: [(RawImage, Int)] = []
    for _ in 0..<config.draws {
      if !trainer.nonTissue.isEmpty && rng.uniform() < config.nonTissueShare {
        picks.append((trainer.nonTissue[Int(rng.next() % UInt64(trainer.nonTissue.count))], trainer.nonTissueClass))
      } else {
        let i = TileSampling.draw(trainer.cumulative, Double(rng.uniform()))
        picks.append((trainer.images[i], trainer.labels[i]))
      }
    }
    return (picks, (0..<config.draws).map { _ in rng.next() })
  }

  /// Backbone rows (the pooled class token and the patch-token mean, 2 x width) followed by the
  /// standardised tissue statistics, for preprocessed pixels.
  func backboneRows(count n: Int, fill: (Int, UnsafeMutablePointer<Float>) -> Void) -> [Float] {
    rows(count: n, fill: fill) { px, b in
      let r = model.model.vision.backboneAndTissue(px, batch: b)
      return [r.backbone, r.tissue]
    }
  }

  /// What a head could be fitted on, for experiments with other heads
  /// (`Scripts/experiments/head_probe.py`): the training draws' rows (``backboneRows``: backbone
  /// then tissue statistics) and their class slots, the validation tiles' rows, class slots and
  /// dataset indices, the class anchors, and the current head's two maps. The class slots index
  /// `classes` (metadata, JSON, the knowledge class of each slot); `datasets` (JSON) names the
  /// dataset indices; `logit_scale` is the contrastive scale.
  public func features() throws -> (tensors: [String: Tensor], metadata: [String: String]) {
    model.syncModel()
    let D = model.config.projectionDim, C = model.config.visionConfig.hiddenSize
    let F = model.config.visionConfig.tissueFeatures
    let classes = classList
    var slot: [Int: Int] = [:]
    for (k, c) in classes.enumerated() { slot[c] = k }
    let (picks, seeds) = draws()
    let X = backboneRows(count: picks.count) { i, out in
      var r = SeededRNG(seed: seeds[i])
      self.trainer.augmenter.augment(picks[i].0, rng: &r, into: out)
    }
    let XV = backboneRows(count: validation.count) { i, out in
      self.trainer.augmenter.plain(self.validation[i].image, into: out)
    }
    let R = 2 * C + F
    let names = Array(Set(validation.map(\.dataset))).sorted()
    let ov = model.params.offset("visual_projection.weight")
    var t: [String: Tensor] = [
      "train_rows": Tensor(shape: [picks.count, R], data: X),
      "train_labels": Tensor(shape: [picks.count], data: picks.map { Float(slot[$0.1]!) }),
      "val_rows": Tensor(shape: [validation.count, R], data: XV),
      "val_labels": Tensor(shape: [validation.count], data: validation.map { Float(slot[$0.label]!) }),
      "val_datasets": Tensor(shape: [validation.count], data: validation.map { Float(names.firstIndex(of: $0.dataset)!) }),
      "anchors": Tensor(shape: [classes.count, D], data: try anchors(classes)),
      "visual_projection": Tensor(shape: [D, C], data: Array(model.params.data[ov..<(ov + D * C)])),
      "logit_scale": Tensor(shape: [1], data: [expf(model.params.data[model.params.offset("logit_scale")])]),
    ]
    if F > 0 {
      let ot = model.params.offset("visual_tissue_projection.weight")
      t["visual_tissue_projection"] = Tensor(shape: [D, F], data: Array(model.params.data[ot..<(ot + D * F)]))
    }
    let json = { (x: Any) in String(decoding: try JSONSerialization.data(withJSONObject: x), as: UTF8.self) }
    return (
      t,
      [
        "datasets": try json(names), "classes": try json(classes.map { trainer.captions.classes[$0].id }),
        "non_tissue_slot": "\(slot[trainer.nonTissueClass]!)", "backbone_width": "\(2 * C)",
      ]
    )
  }

  /// Fits the head and writes it into `model.params`.
  public func run(log: (String) -> Void) throws -> CLIPAlignReport {
    let t0 = Probes.now()
    model.syncModel()
    let D = model.config.projectionDim
    let C = model.config.visionConfig.hiddenSize
    let F = model.config.visionConfig.tissueFeatures
    let P = C + F
    let classes = classList
    let K = classes.count
    var slot: [Int: Int] = [:]
    for (k, c) in classes.enumerated() { slot[c] = k }
    let A = try anchors(classes)
    var AT = [Float](repeating: 0, count: D * K)
    for k in 0..<K { for d in 0..<D { AT[d * K + k] = A[k * D + d] } }
    let scale = expf(model.params.data[model.params.offset("logit_scale")])

    // Training draws.
    let N = config.draws
    let (picks, seeds) = draws()
    let X = inputs(count: N) { i, out in
      var r = SeededRNG(seed: seeds[i])
      self.trainer.augmenter.augment(picks[i].0, rng: &r, into: out)
    }
    let Y = picks.map { Int32(slot[$0.1]!) }
    log("features of \(N) augmented training draws in \(String(format: "%.0f", Probes.now() - t0)) s")
    let V = validation.count
    let XV = inputs(count: V) { i, out in self.trainer.augmenter.plain(self.validation[i].image, into: out) }
    // Each dataset's own classes (its training labels) and non-tissue compete on its val tiles.
    var own: [String: Set<Int>] = [:]
    for v in validation { own[v.dataset, default: [trainer.nonTissueClass]].insert(v.label) }

    // The head: W = [visual_projection | visual_tissue_projection], (D, P).
    let ov = model.params.offset("visual_projection.weight")
    let ot = F > 0 ? model.params.offset("visual_tissue_projection.weight") : 0
    var W = [Float](repeating: 0, count: D * P)
    for d in 0..<D {
      for i in 0..<C { W[d * P + i] = model.params.data[ov + d * C + i] }
      for i in 0..<F { W[d * P + C + i] = model.params.data[ot + d * F + i] }
    }
    let W0 = W

    func embed(_ rows: [Float], _ n: Int, _ w: [Float]) -> (e: [Float], norm: [Float]) {
      var e = [Float](repeating: 0, count: n * D)
      e.withUnsafeMutableBufferPointer { o in
        rows.withUnsafeBufferPointer { x in
          w.withUnsafeBufferPointer { matmulForward(o.baseAddress!, x.baseAddress!, $0.baseAddress!, nil, n, P, D) }
        }
      }
      var norm = [Float](repeating: 0, count: n)
      e.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, &norm, $0.baseAddress!, n, D) }
      return (e, norm)
    }
    func logits(_ e: [Float], _ n: Int) -> [Float] {
      var z = [Float](repeating: 0, count: n * K)
      z.withUnsafeMutableBufferPointer { o in
        e.withUnsafeBufferPointer { x in
          A.withUnsafeBufferPointer { matmulForward(o.baseAddress!, x.baseAddress!, $0.baseAddress!, nil, n, D, K) }
        }
      }
      for i in z.indices { z[i] *= scale }
      return z
    }
    func validate(_ w: [Float]) -> [String: Double] {
      guard V > 0 else { return [:] }
      let z = logits(embed(XV, V, w).e, V)
      var hit: [String: [Int: (Int, Int)]] = [:]
      for (i, v) in validation.enumerated() {
        let allowed = own[v.dataset]!
        var best = -1, bz = -Float.infinity
        for (k, c) in classes.enumerated() where allowed.contains(c) && z[i * K + k] > bz {
          bz = z[i * K + k]
          best = c
        }
        var h = hit[v.dataset, default: [:]][v.label, default: (0, 0)]
        h.1 += 1
        if best == v.label { h.0 += 1 }
        hit[v.dataset, default: [:]][v.label] = h
      }
      return hit.mapValues { cs in cs.values.reduce(0) { $0 + Double($1.0) / Double($1.1) } / Double(cs.count) }
    }
    func mean(_ r: [String: Double]) -> Double { r.isEmpty ? 0 : r.values.reduce(0, +) / Double(r.count) }

    // Full-batch Adam on cross-entropy + pull/2 |W - W0|^2.
    var m = [Float](repeating: 0, count: D * P), v2 = m
    var dW = m
    var best = W, bestEpoch = 0
    let before = validate(W)
    var bestScore = mean(before)
    var lossBefore = 0.0, lossAfter = 0.0
    let b1: Float = 0.9, b2: Float = 0.999
    for epoch in 0...config.epochs {
      let (e, norm) = embed(X, N, W)
      let z = logits(e, N)
      var dz = [Float](repeating: 0, count: N * K)
      let loss = Double(crossEntropyForwardBackward(&dz, z, Y, N, K))
      if epoch == 0 { lossBefore = loss }
      if epoch > 0 && (epoch % config.evalEvery == 0 || epoch == config.epochs) {
        let score = mean(validate(W))
        if score > bestScore {
          bestScore = score
          best = W
          bestEpoch = epoch
          lossAfter = loss
        }
        if epoch % (config.evalEvery * 10) == 0 || epoch == config.epochs {
          log(
            String(
              format: "epoch %4d  loss %.4f  val balanced accuracy %.4f (best %.4f at %d)", epoch, loss, score, bestScore,
              bestEpoch))
        }
      }
      if epoch == config.epochs { break }
      // dE_hat = scale * dZ @ A (= dZ @ (A^T)^T), then back through the normalisation.
      var deHat = [Float](repeating: 0, count: N * D)
      deHat.withUnsafeMutableBufferPointer { o in
        AT.withUnsafeBufferPointer { matmulForward(o.baseAddress!, dz, $0.baseAddress!, nil, N, K, D) }
      }
      for i in deHat.indices { deHat[i] *= scale }
      var de = [Float](repeating: 0, count: N * D)
      l2normBackward(&de, deHat, e, norm, N, D)
      for i in dW.indices { dW[i] = config.pull * (W[i] - W0[i]) }
      dW.withUnsafeMutableBufferPointer { g in
        de.withUnsafeBufferPointer { o in
          X.withUnsafeBufferPointer { x in
            W.withUnsafeBufferPointer {
              matmulBackward(nil, g.baseAddress!, nil, o.baseAddress!, x.baseAddress!, $0.baseAddress!, N, P, D)
            }
          }
        }
      }
      let t = Float(epoch + 1)
      let c1 = 1 - powf(b1, t), c2 = 1 - powf(b2, t)
      for i in W.indices {
        m[i] = b1 * m[i] + (1 - b1) * dW[i]
        v2[i] = b2 * v2[i] + (1 - b2) * dW[i] * dW[i]
        W[i] -= config.lr * (m[i] / c1) / ((v2[i] / c2).squareRoot() + 1e-8)
      }
    }
    let after = bestEpoch == 0 ? before : validate(best)
    if bestEpoch == 0 { lossAfter = lossBefore }
    for d in 0..<D {
      for i in 0..<C { model.params.data[ov + d * C + i] = best[d * P + i] }
      for i in 0..<F { model.params.data[ot + d * F + i] = best[d * P + C + i] }
    }
    model.syncModel()
    return CLIPAlignReport(
      draws: N, classes: K, valTiles: validation.reduce(into: [:]) { $0[$1.dataset, default: 0] += 1 },
      valBefore: before, valAfter: after, bestEpoch: bestEpoch, lossBefore: lossBefore, lossAfter: lossAfter,
      seconds: Probes.now() - t0)
  }
}

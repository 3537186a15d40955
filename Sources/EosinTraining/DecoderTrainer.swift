import EosinModels
import EosinTensor
import EosinTokenizer
import Foundation

/// One instruction example: image embeddings for the prefix and a tokenised conversation with
/// targets on the answer only.
public struct InstructionExample: Sendable {
  /// (P, imageDim) image embeddings: tiles, then their mean as a global token.
  public var prefix: [Float]
  public var ids: [Int32]
  public var targets: [Int32]

  public init(prefix: [Float], ids: [Int32], targets: [Int32]) {
    self.prefix = prefix
    self.ids = ids
    self.targets = targets
  }
}

/// Language pretraining then instruction tuning for ``TrainGPT``.
public final class DecoderTrainer {
  public let model: TrainGPT
  public var peakLR: Float = 1e-3
  public var seed: UInt64 = 1
  public init(model: TrainGPT) { self.model = model }

  /// Next-token training on random windows of a token stream.
  public func pretrain(stream: [Int32], steps: Int, batch: Int, length T: Int, log: (String) -> Void, stop: () -> Bool) {
    let start = model.params.step
    var t0 = Probes.now(), losses: [Float] = []
    for s in 0..<steps {
      if stop() { return }
      var rng = SeededRNG(seed: seed &+ UInt64(s) &* 0x9E37_79B9)
      var ids: [[Int32]] = [], tg: [[Int32]] = []
      for _ in 0..<batch {
        let o = Int(rng.next() % UInt64(stream.count - T - 1))
        ids.append(Array(stream[o..<(o + T)]))
        tg.append(Array(stream[(o + 1)..<(o + T + 1)]))
      }
      model.params.zeroGrad()
      losses.append(model.step(prefix: [], prefixLength: 0, ids: ids, targets: tg))
      let lr = learningRate(step: s, total: steps, warmup: max(1, steps / 20), peak: peakLR)
      model.params.adamw(lr: lr, weightDecay: 0.05, clip: 1)
      if (s + 1) % 50 == 0 {
        log(
          String(
            format: "pretrain %5d/%d  loss %.4f  lr %.2e  %.0f tok/s", s + 1, steps, losses.reduce(0, +) / Float(losses.count),
            lr, Double(50 * batch * T) / (Probes.now() - t0)))
        losses.removeAll()
        t0 = Probes.now()
      }
    }
    _ = start
  }

  /// Mean loss on held-out windows (no gradient); perplexity is exp of it.
  public func heldOutLoss(stream: [Int32], windows: Int, length T: Int) -> Float {
    var total: Float = 0
    let stride = max(1, (stream.count - T - 1) / windows)
    var n = 0
    var o = 0
    while o + T + 1 < stream.count && n < windows {
      total += model.step(
        prefix: [], prefixLength: 0, ids: [Array(stream[o..<(o + T)])], targets: [Array(stream[(o + 1)..<(o + T + 1)])],
        train: false)
      n += 1
      o += stride
    }
    return total / Float(max(1, n))
  }

  /// Instruction tuning: `make(step, index)` returns the example for one batch slot.
  public func instruct(
    steps: Int, batch: Int, prefixLength P: Int, make: (Int, Int) -> InstructionExample, log: (String) -> Void, stop: () -> Bool
  ) {
    var t0 = Probes.now(), losses: [Float] = []
    for s in 0..<steps {
      if stop() { return }
      let ex = (0..<batch).map { make(s, $0) }
      model.params.zeroGrad()
      losses.append(
        model.step(prefix: ex.map { $0.prefix }, prefixLength: P, ids: ex.map { $0.ids }, targets: ex.map { $0.targets }))
      let lr = learningRate(step: s, total: steps, warmup: max(1, steps / 20), peak: peakLR * 0.5)
      model.params.adamw(lr: lr, weightDecay: 0.05, clip: 1)
      if (s + 1) % 50 == 0 {
        log(
          String(
            format: "instruct %5d/%d  loss %.4f  lr %.2e  %.1f ex/s", s + 1, steps, losses.reduce(0, +) / Float(losses.count), lr,
            Double(50 * batch) / (Probes.now() - t0)))
        losses.removeAll()
        t0 = Probes.now()
      }
    }
  }
}

import EosinModels
import EosinTensor
import EosinWeights
import Foundation

/// A GPT-2 style decoder in training, with the slide-token projector (Linear-GELU-Linear from
/// image-embedding width to decoder width) in the same parameter set. The inference
/// ``GPT2Model`` and ``Projector`` run every forward and backward; their weights live in a
/// ``ParameterSet`` under their checkpoint names. Inputs are an optional prefix of image
/// embeddings (projected to slide tokens) followed by text tokens; the loss is cross-entropy on
/// the text targets (-1 = ignored). ``export()`` writes HF `GPT2LMHeadModel` names (Conv1D
/// layout) and LLaVA-style `mm_projector.*` names.
public final class TrainGPT {
  public let config: GPT2Config
  public let imageDim: Int
  public let projectorHidden: Int
  public let params = ParameterSet()
  var decoder: GPT2Model
  var projector: Projector
  var decoderGrads: GPT2Model
  var projectorGrads: Projector
  var tape = GPT2Tape()
  var projectorTape = ProjectorTape()

  /// Fresh weights, deterministic for `seed`.
  public convenience init(config cfg: GPT2Config, imageDim: Int, projectorHidden: Int, seed: UInt64) throws {
    var source = TrainingInit(seed: seed) { _ in cfg.nLayer }
    try self.init(
      decoder: GPT2Model(config: cfg, source: &source), imageDim: imageDim, projectorHidden: projectorHidden, source: &source)
  }

  /// Continues from an existing decoder (a checkpoint); the projector is fresh, from `seed`.
  public convenience init(decoder: GPT2Model, imageDim: Int, projectorHidden: Int, seed: UInt64) throws {
    var source = TrainingInit(seed: seed) { _ in decoder.config.nLayer }
    try self.init(decoder: decoder, imageDim: imageDim, projectorHidden: projectorHidden, source: &source)
  }

  init(decoder: GPT2Model, imageDim: Int, projectorHidden: Int, source: inout TrainingInit) throws {
    config = decoder.config
    self.imageDim = imageDim
    self.projectorHidden = projectorHidden
    self.decoder = decoder
    projector = try Projector(source: &source, inDim: imageDim, hidden: projectorHidden, outDim: decoder.config.nEmbd)
    var adder = ParameterAdder(params: params)
    try self.decoder.visitParameters(&adder)
    try projector.visitParameters(&adder)
    decoderGrads = decoder
    projectorGrads = projector
    var z = Zeroer()
    try decoderGrads.visitParameters(&z)
    try projectorGrads.visitParameters(&z)
  }

  /// Forward and backward on B sequences of equal length: `prefix[b]` image embeddings (P,
  /// imageDim) each (the same P for every row, may be 0), then `ids[b]` (T) with `targets[b]` (T).
  /// Gradients accumulate. Returns the mean loss over counted targets.
  public func step(prefix: [[Float]], prefixLength P: Int, ids: [[Int32]], targets: [[Int32]], train: Bool = true) -> Float {
    var reader = ParameterReader(params: params)
    try! decoder.visitParameters(&reader)
    try! projector.visitParameters(&reader)
    let B = ids.count, T = ids[0].count, L = P + T, C = config.nEmbd, V = config.vocabSize
    precondition(L <= config.nPositions)
    let N = B * L
    // Inputs: projected prefix, then token embeddings; positions are added by the decoder.
    var x = [Float](repeating: 0, count: N * C)
    if P > 0 {
      let po = projector.forward(prefix.flatMap { $0 }, B * P, tape: &projectorTape)
      for b in 0..<B { for i in 0..<(P * C) { x[b * L * C + i] = po[b * P * C + i] } }
    }
    let flatIDs = ids.flatMap { $0 }
    let tokens = decoder.embed(flatIDs)
    for b in 0..<B { for i in 0..<(T * C) { x[(b * L + P) * C + i] = tokens[b * T * C + i] } }
    let logits = decoder.forward(inputs: x, batch: B, length: L, tape: &tape)
    // Targets over the whole row: prefix positions ignored.
    var tg = [Int32](repeating: -1, count: N)
    for b in 0..<B { for t in 0..<T { tg[b * L + P + t] = targets[b][t] } }
    guard train else { return crossEntropyForwardBackward(nil, logits, tg, N, V) }
    var dlogits = [Float](repeating: 0, count: N * V)
    let loss = crossEntropyForwardBackward(&dlogits, logits, tg, N, V)
    let dx = decoder.backward(dlogits, tape: &tape, into: &decoderGrads)
    // Token rows into the (tied) embedding, prefix rows into the projector.
    decoderGrads.accumulateEmbeddingGradient(dx, ids: flatIDs, batch: B, length: L, skip: P)
    if P > 0 {
      var dpo = [Float](repeating: 0, count: B * P * C)
      for b in 0..<B { for i in 0..<(P * C) { dpo[b * P * C + i] = dx[b * L * C + i] } }
      projector.backward(dpo, tape: &projectorTape, into: &projectorGrads)
    }
    var gather = GradientGatherer(params: params)
    try! decoderGrads.visitParameters(&gather)
    try! projectorGrads.visitParameters(&gather)
    return loss
  }

  /// HF GPT2LMHeadModel tensors (Conv1D weights (C, OC)) and the projector as
  /// `mm_projector.0.*` / `mm_projector.2.*`; with `gradients`, the accumulated gradients.
  public func export(gradients: Bool = false) -> (decoder: [String: Tensor], projector: [String: Tensor]) {
    var d = decoder, p = projector
    var reader = ParameterReader(params: params, gradients: gradients)
    try! d.visitParameters(&reader)
    try! p.visitParameters(&reader)
    var dr = TensorRecorder(), pr = TensorRecorder()
    try! d.visitParameters(&dr)
    try! p.visitParameters(&pr)
    return (dr.tensors, pr.tensors)
  }
}

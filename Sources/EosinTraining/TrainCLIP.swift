import EosinModels
import EosinTensor
import EosinWeights
import Foundation

extension CLIPConfig {
  /// Eosin's CLIP architecture: a ViT (patch 16, quick-GELU, MLP 4x width) on `imageSize`-px
  /// inputs and a causal text transformer over `vocabSize` tokens with `contextLength`
  /// positions, pooled at `eos`; with `tissueFeatures`, the image tower adds its
  /// ``TissueBranch``. The defaults are eosin-small-v1's (v2 uses 160 px): width 192, 6 vision and 4
  /// text layers, 3 heads, 112 px, 40 tokens, 128-d shared space.
  public static func eosin(
    vocabSize: Int, eos: Int, width: Int = 192, visionLayers: Int = 6, textLayers: Int = 4, heads: Int = 3, embedDim: Int = 128,
    imageSize: Int = 112, contextLength: Int = 40, tissueFeatures: Bool = false
  ) -> CLIPConfig {
    var c = CLIPConfig()
    c.projectionDim = embedDim
    c.visionConfig.hiddenSize = width
    c.visionConfig.intermediateSize = 4 * width
    c.visionConfig.numHiddenLayers = visionLayers
    c.visionConfig.numAttentionHeads = heads
    c.visionConfig.imageSize = imageSize
    c.visionConfig.patchSize = 16
    c.visionConfig.tissueFeatures = tissueFeatures ? TissueFeatures.count : 0
    c.textConfig.vocabSize = vocabSize
    c.textConfig.hiddenSize = width
    c.textConfig.intermediateSize = 4 * width
    c.textConfig.numHiddenLayers = textLayers
    c.textConfig.numAttentionHeads = heads
    c.textConfig.maxPositionEmbeddings = contextLength
    c.textConfig.eosTokenId = eos
    c.textConfig.bosTokenId = eos
    return c
  }
}

/// A CLIP pair in training: the inference ``CLIPModel`` runs every forward and backward, its
/// weights kept in a ``ParameterSet`` (AdamW, resumable state) under the checkpoint names of
/// ``CLIPModel/visitParameters(_:)``. ``export()`` gives HF `CLIPModel` tensors, so the result
/// loads for inference as it is. The image side takes preprocessed pixels (B,3,S,S).
public final class TrainCLIP {
  public let config: CLIPConfig
  public let params = ParameterSet()
  /// The model the steps run; its weights are copied from ``params`` before each step.
  public private(set) var model: CLIPModel
  /// Gradients, shaped like the model; gathered into ``params`` after each step.
  var grads: CLIPModel
  var visionTape = ViTTape()
  var textTape = TextTape()

  /// Fresh weights for `cfg`, deterministic for `seed`.
  public convenience init(config cfg: CLIPConfig, seed: UInt64) throws {
    var source = TrainingInit(seed: seed) {
      $0.hasPrefix("text") ? cfg.textConfig.numHiddenLayers : cfg.visionConfig.numHiddenLayers
    }
    try self.init(model: CLIPModel(config: cfg, source: &source))
  }

  /// Continues from an existing model (a checkpoint, for fine-tuning and the parity tests).
  public init(model: CLIPModel) throws {
    config = model.config
    self.model = model
    var adder = ParameterAdder(params: params)
    try self.model.visitParameters(&adder)
    grads = model
    var z = Zeroer()
    try grads.visitParameters(&z)
  }

  /// Copies the weights in ``params`` into ``model`` (each ``step(pixels:ids:labels:)`` does this
  /// first); for inference on the trained weights between steps.
  public func syncModel() {
    var reader = ParameterReader(params: params)
    try! model.visitParameters(&reader)
  }

  /// One training step's forward and backward on a batch; gradients accumulate in `params`.
  /// - Parameters:
  ///   - pixels: (B,3,S,S) preprocessed images.
  ///   - ids: B rows of token ids, each with its end token, padded to one length.
  ///   - labels: class index per pair, for the label-aware contrastive loss.
  /// - Returns: the loss.
  public func step(pixels: [Float], ids: [[Int32]], labels: [Int]) -> Float {
    syncModel()
    let B = ids.count, D = config.projectionDim
    let img = model.vision.trainingForward(pixels, batch: B, tape: &visionTape)
    let txt = model.textForward(ids, tape: &textTape)
    var imgN = img, txtN = txt
    var ni = [Float](repeating: 0, count: B), nt = ni
    imgN.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, &ni, img, B, D) }
    txtN.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, &nt, txt, B, D) }
    var dimgN = [Float](repeating: 0, count: B * D), dtxtN = dimgN
    var scratch = [Float](repeating: 0, count: B * B)
    var dls: Float = 0
    let loss = contrastiveLossForwardBackward(
      &dimgN, &dtxtN, &dls, &scratch, imgN, txtN, model.logitScale, B, D, labels: labels)
    var dimg = [Float](repeating: 0, count: B * D), dtxt = dimg
    l2normBackward(&dimg, dimgN, imgN, ni, B, D)
    l2normBackward(&dtxt, dtxtN, txtN, nt, B, D)
    model.backward(
      image: dimg, text: dtxt, logitScale: dls, visionTape: &visionTape, textTape: &textTape, into: &grads)
    var gather = GradientGatherer(params: params)
    try! grads.visitParameters(&gather)
    return loss
  }

  /// The weights (or, with `gradients`, the accumulated gradients) under HF `CLIPModel` names.
  public func export(gradients: Bool = false) -> [String: Tensor] {
    var m = model
    var reader = ParameterReader(params: params, gradients: gradients)
    try! m.visitParameters(&reader)
    var recorder = TensorRecorder()
    try! m.visitParameters(&recorder)
    return recorder.tensors
  }
}

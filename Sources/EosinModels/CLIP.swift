import EosinTensor
import EosinWeights
import Foundation

/// A CLIP model: ViT image tower, causal text tower, and the two projections into one embedding
/// space. Reads HF `CLIPModel` checkpoints with their tensor names verbatim (PLIP and QuiltNet
/// in HF format load as they are).
///
/// Thread-safe: encoding only reads weights, so several threads may encode at once.
public struct CLIPModel: Sendable {
  public let config: CLIPConfig
  /// The image tower: the one ``VisionTransformer`` every image encoder runs on (pre-norm,
  /// class token through the post-norm and the projection, L2-normalised).
  public internal(set) var vision: VisionTransformer
  // Text tower.
  var tokenEmbedding: Tensor  // (V, C)
  var textPositions: Tensor  // (maxT, C)
  var textBlocks: [TransformerBlock]
  var finalLayernorm: LayerNorm
  var textProjection: Linear
  /// The learned temperature, stored as its log.
  public internal(set) var logitScale: Float

  /// Loads an HF CLIPModel checkpoint. Takes exactly the names in the table below; any other
  /// tensor (except `position_ids` buffers) is an error naming it.
  public init(checkpoint: Checkpoint) throws {
    var t = TensorTable(checkpoint.weights)
    try self.init(config: try checkpoint.config(CLIPConfig.self), source: &t)
    try t.finish(ignoring: ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"])
  }

  /// Builds the model from `source` (a checkpoint's table, or ``RandomTensors`` for fresh
  /// weights) through ``visitParameters(_:)``, which checks every shape.
  public init<S: TensorSource>(config cfg: CLIPConfig, source t: inout S) throws {
    self = try CLIPModel(shapesFor: cfg)
    var loader = SourceLoader(t)
    try visitParameters(&loader)
    t = loader.source
  }

  /// The structure for `cfg`, every tensor a placeholder of its shape.
  init(shapesFor cfg: CLIPConfig) throws {
    let v = cfg.visionConfig, x = cfg.textConfig
    guard v.hiddenSize % v.numAttentionHeads == 0, x.hiddenSize % x.numAttentionHeads == 0, v.imageSize % v.patchSize == 0 else {
      throw ModelError.config("hidden size must divide by heads and image size by patch size")
    }
    guard v.numChannels == 3 else { throw ModelError.config("only 3-channel (RGB) image towers are supported") }
    let TC = x.hiddenSize
    self.init(
      config: cfg, vision: try CLIPModel.visionShapes(cfg),
      tokenEmbedding: .placeholder([x.vocabSize, TC]), textPositions: .placeholder([x.maxPositionEmbeddings, TC]),
      textBlocks: try (0..<x.numHiddenLayers).map { _ in
        TransformerBlock.placeholder(
          C: TC, I: x.intermediateSize, heads: x.numAttentionHeads, act: try activation(x.hiddenAct), eps: x.layerNormEps)
      },
      finalLayernorm: .placeholder(TC, eps: x.layerNormEps),
      textProjection: .placeholder(TC, cfg.projectionDim, bias: false), logitScale: 0)
  }

  /// The one table of HF `CLIPModel` tensor names (the image tower's in
  /// ``visitVisionTower(_:_:_:)``). Loading, training and export all go through it.
  public mutating func visitParameters<V: ParameterVisitor>(_ v: inout V) throws {
    try CLIPModel.visitVisionTower(&vision, config, &v)
    try v.visit("text_model.embeddings.token_embedding.weight", &tokenEmbedding)
    try v.visit("text_model.embeddings.position_embedding.weight", &textPositions)
    for l in textBlocks.indices { try CLIPModel.visitBlock(&textBlocks[l], "text_model.encoder.layers.\(l)", &v) }
    try v.visit("text_model.final_layer_norm", &finalLayernorm)
    try v.visit("text_projection", &textProjection)
    try v.visitScalar("logit_scale", &logitScale)
  }

  /// The image tower's names in an HF `CLIPModel` checkpoint: patch embedding (no bias), class
  /// token, positions, pre-norm, encoder layers, post-norm on the class token, projection.
  static func visitVisionTower<V: ParameterVisitor>(_ vit: inout VisionTransformer, _ cfg: CLIPConfig, _ v: inout V) throws {
    let c = cfg.visionConfig
    try v.visitReshaped(
      "vision_model.embeddings.patch_embedding.weight", [c.hiddenSize, c.numChannels, c.patchSize, c.patchSize],
      &vit.patchLinear.weight)
    try v.visit("vision_model.embeddings.class_embedding", &vit.classToken!)
    try v.visit("vision_model.embeddings.position_embedding.weight", &vit.positions)
    try v.visit("vision_model.pre_layrnorm", &vit.preNorm!)
    for l in vit.blocks.indices { try visitBlock(&vit.blocks[l], "vision_model.encoder.layers.\(l)", &v) }
    try v.visit("vision_model.post_layernorm", &vit.finalNorm!)
    try v.visit("visual_projection", &vit.projection!)
    if vit.tissue != nil {
      try v.visit("vision_model.tissue_features.center", &vit.tissue!.center)
      try v.visit("vision_model.tissue_features.scale", &vit.tissue!.scale)
      try v.visit("visual_tissue_projection", &vit.tissue!.projection)
    }
  }

  /// An HF CLIP encoder layer: q, k and v are separate in the checkpoint and fused here.
  static func visitBlock<V: ParameterVisitor>(_ b: inout TransformerBlock, _ p: String, _ v: inout V) throws {
    try v.visit(p + ".layer_norm1", &b.ln1)
    let qkv = ["q_proj", "k_proj", "v_proj"].map { p + ".self_attn." + $0 }
    try v.visitFused(qkv.map { $0 + ".weight" }, &b.qkv.weight)
    try v.visitFused(qkv.map { $0 + ".bias" }, &b.qkv.bias!)
    try v.visit(p + ".self_attn.out_proj", &b.proj)
    try v.visit(p + ".layer_norm2", &b.ln2)
    try v.visit(p + ".mlp.fc1", &b.fc1)
    try v.visit(p + ".mlp.fc2", &b.fc2)
  }

  /// The image tower with placeholder tensors.
  static func visionShapes(_ cfg: CLIPConfig) throws -> VisionTransformer {
    let v = cfg.visionConfig
    let C = v.hiddenSize, P = v.patchSize, NP = (v.imageSize / P) * (v.imageSize / P)
    var vision = try VisionTransformer(
      width: C, patch: P, inputSize: v.imageSize, pooling: .projected, antialias: false,
      patch: (.placeholder([C, v.numChannels, P, P]), nil), classToken: .placeholder([C]), registers: nil,
      positions: .placeholder([NP + 1, C]), positionedPrefix: 1, file: "")
    vision.preNorm = .placeholder(C, eps: v.layerNormEps)
    vision.blocks = try (0..<v.numHiddenLayers).map { _ in
      TransformerBlock.placeholder(
        C: C, I: v.intermediateSize, heads: v.numAttentionHeads, act: try activation(v.hiddenAct), eps: v.layerNormEps)
    }
    vision.finalNorm = .placeholder(C, eps: v.layerNormEps)
    vision.projection = .placeholder(C, cfg.projectionDim, bias: false)
    if v.tissueFeatures != 0 {
      guard v.tissueFeatures == TissueFeatures.count else {
        throw ModelError.config("eosin_tissue_features must be 0 or \(TissueFeatures.count), not \(v.tissueFeatures)")
      }
      let pre = ImagePreprocessor(imageSize: v.imageSize)
      vision.tissue = .placeholder(cfg.projectionDim, pixelMean: pre.mean, pixelStd: pre.std)
    }
    return vision
  }

  /// An HF CLIP image tower read from `t` (for `eosin embed` on a transformers CLIP folder).
  static func visionTower<S: TensorSource>(_ cfg: CLIPConfig, _ t: inout S) throws -> VisionTransformer {
    var vit = try visionShapes(cfg)
    var loader = SourceLoader(t)
    try visitVisionTower(&vit, cfg, &loader)
    t = loader.source
    return vit
  }

  /// The same model with its image tower's GEMMs at `precision` (the text tower, a few small
  /// products per prompt, stays fp32).
  public func converted(to precision: Precision) -> CLIPModel {
    var m = self
    m.vision = vision.converted(to: precision)
    return m
  }

  /// Image side the vision tower expects.
  public var imageSize: Int { config.visionConfig.imageSize }
  /// Width of the shared embedding space.
  public var embedDim: Int { config.projectionDim }

  /// Projected image features (not normalised). pixels (B,3,S,S) preprocessed -> (B,D), one
  /// image per core when B > 1.
  public func imageFeatures(_ pixels: [Float], batch B: Int) -> [Float] {
    var v = vision
    v.normalizeOutput = false
    return v.features(pixels, batch: B)
  }

  /// Normalised image embeddings (B,D).
  public func imageEmbeddings(_ pixels: [Float], batch B: Int) -> [Float] { vision.features(pixels, batch: B) }

  /// Normalised image embeddings (B,D) and the vision tower's backbone rows (B, 2 x width): the
  /// post-normed class token before the projection and the patch-token mean (see
  /// ``VisionTransformer/featuresAndBackbone(_:batch:)``).
  public func imageEmbeddingsAndBackbone(_ pixels: [Float], batch B: Int) -> (embeddings: [Float], backbone: [Float]) {
    let r = vision.featuresAndBackbone(pixels, batch: B)
    return (r.features, r.backbone)
  }

  /// Width of a backbone row of ``imageEmbeddingsAndBackbone(_:batch:)``.
  public var backboneDim: Int { vision.backboneDim }

  /// Projected text features (not normalised). ids (B,T), each row holding its end token;
  /// pooled at the end token (HF's rule: argmax id for legacy eos 2, else the first eos).
  /// - Throws: ``ModelError/input`` when T exceeds the context or an id is out of range.
  public func textFeatures(_ ids: [[Int32]]) throws -> [Float] {
    let x = config.textConfig
    guard let T = ids.first?.count, ids.allSatisfy({ $0.count == T }), T > 0 else {
      throw ModelError.input("token rows must be non-empty and equal length")
    }
    guard T <= x.maxPositionEmbeddings else {
      throw ModelError.input("\(T) tokens exceed the context of \(x.maxPositionEmbeddings)")
    }
    guard ids.joined().allSatisfy({ $0 >= 0 && Int($0) < x.vocabSize }) else {
      throw ModelError.input("token id outside the vocabulary of \(x.vocabSize)")
    }
    var tape = TextTape()
    return textForward(ids, tape: &tape)
  }

  /// Normalised text embeddings (B,D).
  public func textEmbeddings(_ ids: [[Int32]]) throws -> [Float] {
    var f = try textFeatures(ids)
    f.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, ids.count, embedDim) }
    return f
  }

  /// `exp(logit_scale) * image @ text^T` for normalised embeddings: (NI,D) x (NT,D) -> (NI,NT).
  public func logits(images: [Float], texts: [Float]) -> [Float] {
    let D = embedDim, NI = images.count / D, NT = texts.count / D
    var out = [Float](repeating: 0, count: NI * NT)
    out.withUnsafeMutableBufferPointer { o in
      images.withUnsafeBufferPointer { a in
        texts.withUnsafeBufferPointer { b in
          sgemmNT(o.baseAddress!, a.baseAddress!, b.baseAddress!, NI, NT, D, alpha: expf(logitScale))
        }
      }
    }
    return out
  }
}

extension CLIPModel {
  /// Reads an open_clip ViT CLIP folder (`open_clip_config.json` and its weights): the image
  /// tower through ``VisionCheckpoint`` and the text tower from open_clip's names
  /// (`token_embedding`, `positional_embedding`, `transformer.resblocks.N`, `ln_final`,
  /// `text_projection`, `logit_scale`). Text is pooled at the highest token id, open_clip's
  /// `argmax` rule for the OpenAI tokenizer.
  /// - Throws: ``WeightsError`` naming the file; CoCa folders are refused here (their text tower
  ///   is a captioning decoder), though their image tower loads through ``VisionCheckpoint``.
  public init(openCLIP dir: String) throws {
    let cfgPath = (dir as NSString).appendingPathComponent("open_clip_config.json")
    let top = try VisionCheckpoint.json(cfgPath)
    guard let mc = top["model_cfg"] as? [String: Any], let tc = mc["text_cfg"] as? [String: Any] else {
      throw WeightsError.io(file: cfgPath, message: "no model_cfg.text_cfg")
    }
    if mc["multimodal_cfg"] != nil {
      throw WeightsError.io(file: cfgPath, message: "a CoCa model: only its image tower is supported (eosin embed)")
    }
    if tc["hf_model_name"] != nil {
      throw WeightsError.io(file: cfgPath, message: "text towers from Hugging Face models (hf_model_name) are not supported")
    }
    let image = try VisionCheckpoint.load(dir)
    let D = mc["embed_dim"] as? Int ?? 512
    let C = tc["width"] as? Int ?? 512, L = tc["layers"] as? Int ?? 12
    let heads = tc["heads"] as? Int ?? 8, ctx = tc["context_length"] as? Int ?? 77, V = tc["vocab_size"] as? Int ?? 49408
    let quick = mc["quick_gelu"] as? Bool ?? false
    var cfg = CLIPConfig()
    cfg.projectionDim = D
    cfg.visionConfig.imageSize = image.encoder.inputSize
    cfg.visionConfig.hiddenSize = image.encoder.width
    cfg.visionConfig.patchSize = image.encoder.patch
    cfg.visionConfig.numHiddenLayers = image.encoder.blocks.count
    cfg.textConfig.hiddenSize = C
    cfg.textConfig.numHiddenLayers = L
    cfg.textConfig.numAttentionHeads = heads
    cfg.textConfig.maxPositionEmbeddings = ctx
    cfg.textConfig.vocabSize = V
    cfg.textConfig.eosTokenId = 2  // pooled at the highest id
    cfg.textConfig.hiddenAct = quick ? "quick_gelu" : "gelu"
    guard heads > 0, C % heads == 0 else { throw WeightsError.io(file: cfgPath, message: "text width must divide by heads") }
    var t = TensorTable(try WeightsLocator.open(dir))
    let blocks = try (0..<L).map {
      try VisionCheckpoint.openCLIPBlock(&t, "transformer.resblocks.\($0)", C, heads, quick ? .quickGelu : .gelu)
    }
    cfg.textConfig.intermediateSize = blocks.first?.fc1.outFeatures ?? 4 * C
    self.init(
      config: cfg, vision: image.encoder, tokenEmbedding: try t.take("token_embedding.weight", [V, C]),
      textPositions: try t.take("positional_embedding", [ctx, C]), textBlocks: blocks,
      finalLayernorm: try LayerNorm.load(&t, "ln_final", C, eps: 1e-5),
      textProjection: Linear(weight: VisionCheckpoint.transposed(try t.take("text_projection", [C, D])), bias: nil),
      logitScale: try t.take("logit_scale", []).data[0])
    try t.finish(ignoring: Set(t.store.shapes.keys.filter { $0.hasPrefix("visual.") || $0 == "attn_mask" }))
  }

  init(
    config: CLIPConfig, vision: VisionTransformer, tokenEmbedding: Tensor, textPositions: Tensor, textBlocks: [TransformerBlock],
    finalLayernorm: LayerNorm, textProjection: Linear, logitScale: Float
  ) {
    self.config = config
    self.vision = vision
    self.tokenEmbedding = tokenEmbedding
    self.textPositions = textPositions
    self.textBlocks = textBlocks
    self.finalLayernorm = finalLayernorm
    self.textProjection = textProjection
    self.logitScale = logitScale
  }
}

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
  public private(set) var vision: VisionTransformer
  // Text tower.
  let tokenEmbedding: Tensor  // (V, C)
  let textPositions: Tensor  // (maxT, C)
  let textBlocks: [TransformerBlock]
  let finalLayernorm: LayerNorm
  let textProjection: Linear
  /// The learned temperature, stored as its log.
  public let logitScale: Float

  /// Loads an HF CLIPModel checkpoint. Takes exactly the names in the table below; any other
  /// tensor (except `position_ids` buffers) is an error naming it.
  public init(checkpoint: Checkpoint) throws {
    var t = TensorTable(checkpoint.weights)
    try self.init(config: try checkpoint.config(CLIPConfig.self), source: &t)
    try t.finish(ignoring: ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"])
  }

  /// The tensor-name table: every tensor an HF CLIPModel checkpoint holds, with its shape, taken
  /// from `source` (a checkpoint, or ``RandomTensors`` for fresh weights).
  public init<S: TensorSource>(config cfg: CLIPConfig, source t: inout S) throws {
    config = cfg
    let v = cfg.visionConfig, x = cfg.textConfig
    guard v.hiddenSize % v.numAttentionHeads == 0, x.hiddenSize % x.numAttentionHeads == 0, v.imageSize % v.patchSize == 0 else {
      throw ModelError.config("hidden size must divide by heads and image size by patch size")
    }
    guard v.numChannels == 3 else { throw ModelError.config("only 3-channel (RGB) image towers are supported") }
    vision = try CLIPModel.visionTower(cfg, &t)
    let TC = x.hiddenSize
    tokenEmbedding = try t.take("text_model.embeddings.token_embedding.weight", [x.vocabSize, TC])
    textPositions = try t.take("text_model.embeddings.position_embedding.weight", [x.maxPositionEmbeddings, TC])
    textBlocks = try (0..<x.numHiddenLayers).map {
      try CLIPModel.block(
        &t, "text_model.encoder.layers.\($0)", TC, x.intermediateSize, x.numAttentionHeads, x.hiddenAct, x.layerNormEps)
    }
    finalLayernorm = try LayerNorm.load(&t, "text_model.final_layer_norm", TC, eps: x.layerNormEps)
    textProjection = try Linear.load(&t, "text_projection", TC, cfg.projectionDim, bias: false)
    logitScale = try t.take("logit_scale", []).data[0]
  }

  /// The image tower's names in an HF `CLIPModel` checkpoint: patch embedding (no bias), class
  /// token, positions, pre-norm, encoder layers, post-norm on the class token, projection.
  static func visionTower<S: TensorSource>(_ cfg: CLIPConfig, _ t: inout S) throws -> VisionTransformer {
    let v = cfg.visionConfig
    let C = v.hiddenSize, P = v.patchSize, NP = (v.imageSize / P) * (v.imageSize / P)
    var vision = try VisionTransformer(
      width: C, patch: P, inputSize: v.imageSize, pooling: .projected, antialias: false,
      patch: (try t.take("vision_model.embeddings.patch_embedding.weight", [C, v.numChannels, P, P]), nil),
      classToken: try t.take("vision_model.embeddings.class_embedding", [C]), registers: nil,
      positions: try t.take("vision_model.embeddings.position_embedding.weight", [NP + 1, C]), positionedPrefix: 1,
      file: "")
    vision.preNorm = try LayerNorm.load(&t, "vision_model.pre_layrnorm", C, eps: v.layerNormEps)
    vision.blocks = try (0..<v.numHiddenLayers).map {
      try CLIPModel.block(
        &t, "vision_model.encoder.layers.\($0)", C, v.intermediateSize, v.numAttentionHeads, v.hiddenAct, v.layerNormEps)
    }
    vision.finalNorm = try LayerNorm.load(&t, "vision_model.post_layernorm", C, eps: v.layerNormEps)
    vision.projection = try Linear.load(&t, "visual_projection", C, cfg.projectionDim, bias: false)
    return vision
  }

  /// The same model with its image tower's GEMMs at `precision` (the text tower, a few small
  /// products per prompt, stays fp32).
  public func converted(to precision: Precision) -> CLIPModel {
    var m = self
    m.vision = vision.converted(to: precision)
    return m
  }

  /// HF CLIP encoder layer names -> a fused-QKV block. The one place q/k/v are concatenated.
  static func block<S: TensorSource>(_ t: inout S, _ p: String, _ C: Int, _ I: Int, _ NH: Int, _ act: String, _ eps: Float) throws
    -> TransformerBlock
  {
    let q = try Linear.load(&t, p + ".self_attn.q_proj", C, C)
    let k = try Linear.load(&t, p + ".self_attn.k_proj", C, C)
    let v = try Linear.load(&t, p + ".self_attn.v_proj", C, C)
    let qkv = Linear(
      weight: Tensor(shape: [3 * C, C], data: q.weight.data + k.weight.data + v.weight.data),
      bias: Tensor(shape: [3 * C], data: q.bias!.data + k.bias!.data + v.bias!.data))
    return TransformerBlock(
      ln1: try LayerNorm.load(&t, p + ".layer_norm1", C, eps: eps), qkv: qkv,
      proj: try Linear.load(&t, p + ".self_attn.out_proj", C, C),
      ln2: try LayerNorm.load(&t, p + ".layer_norm2", C, eps: eps), fc1: try Linear.load(&t, p + ".mlp.fc1", C, I),
      fc2: try Linear.load(&t, p + ".mlp.fc2", I, C), act: try activation(act), heads: NH)
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

  /// Projected text features (not normalised). ids (B,T), each row holding its end token;
  /// pooled at the end token (HF's rule: argmax id for legacy eos 2, else the first eos).
  /// - Throws: ``ModelError/input`` when T exceeds the context or an id is out of range.
  public func textFeatures(_ ids: [[Int32]]) throws -> [Float] {
    let x = config.textConfig
    let B = ids.count
    guard let T = ids.first?.count, ids.allSatisfy({ $0.count == T }), T > 0 else {
      throw ModelError.input("token rows must be non-empty and equal length")
    }
    guard T <= x.maxPositionEmbeddings else {
      throw ModelError.input("\(T) tokens exceed the context of \(x.maxPositionEmbeddings)")
    }
    let C = x.hiddenSize
    let flat = ids.flatMap { $0 }
    guard flat.allSatisfy({ $0 >= 0 && Int($0) < x.vocabSize }) else {
      throw ModelError.input("token id outside the vocabulary of \(x.vocabSize)")
    }
    var h = [Float](repeating: 0, count: B * T * C)
    h.withUnsafeMutableBufferPointer { o in
      flat.withUnsafeBufferPointer { i in
        tokenEmbedding.data.withUnsafeBufferPointer { w in
          textPositions.data.withUnsafeBufferPointer { p in
            embeddingForward(o.baseAddress!, i.baseAddress!, w.baseAddress!, p.baseAddress!, B, T, C)
          }
        }
      }
    }
    for blk in textBlocks { blk.forward(&h, B: B, T: T, causal: true) }
    h = finalLayernorm.forward(h, B * T)
    var pooled = [Float](repeating: 0, count: B * C)
    for b in 0..<B {
      let row = ids[b]
      let pos: Int
      if x.eosTokenId == 2 {
        pos = row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!
      } else {
        pos = row.firstIndex(of: Int32(x.eosTokenId)) ?? (T - 1)
      }
      for i in 0..<C { pooled[b * C + i] = h[(b * T + pos) * C + i] }
    }
    return textProjection.forward(pooled, B)
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
